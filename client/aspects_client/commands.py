"""The ``aspects`` subcommands: parsed options -> requests -> results -> files.

``segment``: every source checked and planned before any work, then segmented concurrently
(``AspectsClient.segment``), each result written by ``files.write_result`` and, with
``--send``, C-STOREd; ``contours``: ``from_labels.contours_from_labels`` written the same way.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import rooms
from .errors import AspectsError, UsageError
from .files import write_result
from .inference import InferenceSettings
from .outputs import SourceOutputs, check_plan, plan_outputs, printable
from .progress import ProgressDisplay
from .request import SegmentRequest
from .sources import Source
from .storage import S3Settings
from .terminal import EXIT_FAILED, PROG, error_line, score_line, warn_qc


@dataclass(frozen=True)
class Job:
    """One source of a run: what is shown, its request and its output plan."""

    shown: str
    request: SegmentRequest
    plan: SourceOutputs


def _sources(args: argparse.Namespace) -> tuple[list[str], list[Source]]:
    """(what is shown, the classified source) per SOURCE, then one for --dicom-files."""
    values: list[Any] = list(args.sources)
    if args.dicom_files:
        values.append(list(args.dicom_files))
    if not values:
        raise UsageError("no SOURCE given; give files, s3:// URLs, DICOM folders or --dicom-files")
    sources = [Source.of(v) for v in values]
    shown = [*args.sources, *([sources[-1].name] if args.dicom_files else [])]
    return shown, sources


def _adcs(args: argparse.Namespace, sources: list[Source]) -> list[str | None]:
    """One --adc per source (or none), checked against the other options."""
    any_dicom = any(s.is_dicom for s in sources)
    if args.series is not None and not any_dicom:
        raise UsageError("--series chooses a DICOM series, but no SOURCE is DICOM")
    if args.volume_index is not None and any_dicom:
        raise UsageError("--volume-index is for 4D NIfTI; choose a DICOM series with --series")
    if args.name is not None and len(sources) > 1:
        raise UsageError(f"--name records one source's name, but {len(sources)} were given")
    if args.adc_scale is not None and not args.adc and not any_dicom:
        raise UsageError(
            "--adc-scale converts the values of an --adc map, but no --adc was given; add "
            "--adc ADC (or drop --adc-scale)"
        )
    adcs: list[str | None] = list(args.adc) if args.adc else [None] * len(sources)
    if len(adcs) != len(sources):
        raise UsageError(
            f"{len(adcs)} --adc for {len(sources)} sources; give one --adc per SOURCE, in order"
        )
    for adc in adcs:
        if adc is not None:
            Source.of(adc, what="adc")
    return adcs


def _check_dicom_outputs(args: argparse.Namespace, shown: list[str], sources: list[Source]):
    """DICOM outputs and --send need DICOM sources and a valid calling AE title."""
    if args.seg or args.report or args.capture or args.send:
        not_dicom = [n for n, s in zip(shown, sources, strict=True) if not s.is_dicom]
        if not_dicom:
            raise UsageError(
                f"--seg/--report/--capture/--send build DICOM objects that reference the source "
                f"series, but {printable(not_dicom[0])} is not DICOM; send a DICOM folder, zip, "
                "s3:// prefix or --dicom-files"
            )
    if args.send is not None:
        rooms.enter("dicom", "check_ae_title")(args.calling_ae, "--calling-ae")


def segment_jobs(args: argparse.Namespace) -> list[Job]:
    """Every source's request and output plan, all checked before any work (UsageError)."""
    shown, sources = _sources(args)
    adcs = _adcs(args, sources)
    _check_dicom_outputs(args, shown, sources)
    plans = plan_outputs(
        shown, args.output, labels=args.labels, overlay=args.overlay, lesion=args.lesion,
        viewer=args.viewer, seg=args.seg or bool(args.report), report=args.report,
        capture=args.capture,
    )
    check_plan(
        plans, [*args.sources, *(args.dicom_files or ()), *(a for a in adcs if a)],
        overwrite=args.overwrite,
    )
    scoring = bool(args.score or args.adc or args.lesion or args.report)
    requests = [
        SegmentRequest.build(
            source, name=args.name, adc=adc, score=scoring, adc_scale=args.adc_scale,
            volume_index=args.volume_index, series=args.series if source.is_dicom else None,
        )
        for source, adc in zip(sources, adcs, strict=True)
    ]
    return [Job(*job) for job in zip(shown, requests, plans, strict=True)]


def client_of(args: argparse.Namespace, overlay: bool) -> Any:
    """The ``AspectsClient`` the options describe (connects and checks the model)."""
    from .client import AspectsClient

    settings = InferenceSettings(
        timeout_s=args.timeout, deadline_s=args.deadline, retries=args.retries, ssl=args.tls,
        root_certificates=args.root_certificates, priority=args.priority,
    )
    s3 = S3Settings(
        endpoint_url=args.endpoint_url, region_name=args.region, profile_name=args.profile,
        max_object_bytes=args.max_object_bytes,
    )
    return AspectsClient(args.url, s3=s3, inference=settings, overlay=overlay, wait_s=args.wait)


def run_job(
    client: Any, job: Job, args: argparse.Namespace, stop: threading.Event,
    display: ProgressDisplay,
) -> tuple[float, Path]:
    """Segment, write, say the QC warning and score, then send; (seconds, JSON path)."""
    began = time.perf_counter()
    result = client.segment(request=job.request, cancel=stop, progress=display.slices)
    sending = args.send is not None
    datasets = write_result(job.plan, result, overwrite=args.overwrite, cancel=stop,
                            send=sending)
    # written: the QC warning and score are said before any send, so a failed send (exit 1)
    # never hides them
    warn_qc(job.plan.source, result.qc)
    if result.score is not None:
        print(f"{printable(job.plan.source)}: {score_line(result.score)}", flush=True)
    if sending:  # after the files: a failed send keeps them (exit 1)
        node = args.send
        rooms.enter("dicom", "send_datasets")(
            list(datasets.values()), host=node.host, port=node.port, called_ae=node.ae_title,
            calling_ae=args.calling_ae, timeout_s=args.timeout, cancel=stop,
        )
    return time.perf_counter() - began, job.plan.json


def _collect(futures: dict, jobs: list[Job], display: ProgressDisplay) -> int:
    """Say each finished job on one line; the number that failed."""
    failures = 0
    for future in as_completed(futures):
        shown = jobs[futures[future]].shown
        try:
            seconds, json_path = future.result()
            display.volume_done(shown, f"ok {seconds:.1f} s -> {printable(str(json_path))}")
        except AspectsError as exc:
            failures += 1
            display.volume_done(shown, "FAILED", error=error_line(shown, exc))
        except Exception as exc:  # a bug, not bad input: still one line, go on
            failures += 1
            text = f"unexpected {type(exc).__name__}: {exc}"
            display.volume_done(shown, "FAILED", error=error_line(shown, text))
    return failures


def cmd_segment(args: argparse.Namespace) -> int:
    jobs = segment_jobs(args)
    began = time.perf_counter()
    stop = threading.Event()
    overlay = any(j.plan.overlay is not None or j.plan.capture is not None for j in jobs)
    with client_of(args, overlay) as client, ProgressDisplay(len(jobs), quiet=args.quiet) as d:
        pool = ThreadPoolExecutor(max_workers=min(args.concurrency, len(jobs)))
        try:
            futures = {pool.submit(run_job, client, j, args, stop, d): i
                       for i, j in enumerate(jobs)}
            failures = _collect(futures, jobs, d)
        except KeyboardInterrupt:
            stop.set()  # workers cancel their requests/downloads and commit nothing
            pool.shutdown(wait=False, cancel_futures=True)
            _join(pool, seconds=2.0)
            raise
        finally:
            pool.shutdown(wait=True)
    if not args.quiet:
        done = f"{len(jobs) - failures}/{len(jobs)} segmented"
        print(f"{done} in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return EXIT_FAILED if failures else 0


def _join(pool: Any, seconds: float) -> None:
    """Give cancelled workers up to ``seconds`` to return (they poll their cancel event)."""
    deadline = time.monotonic() + seconds
    for thread in list(getattr(pool, "_threads", ())):
        thread.join(max(0.0, deadline - time.monotonic()))


def cmd_contours(args: argparse.Namespace) -> int:
    from .from_labels import contours_from_labels

    plans = plan_outputs(
        [args.volume], args.output, labels=args.labels, overlay=args.overlay, viewer=args.viewer
    )
    check_plan(plans, [args.volume, args.label_input], overwrite=args.overwrite)
    began = time.perf_counter()
    result = contours_from_labels(
        args.volume, args.label_input, name=args.name, volume_index=args.volume_index,
        overlay=plans[0].overlay is not None,
    )
    write_result(plans[0], result, overwrite=args.overwrite)
    warn_qc(args.volume, result.document["qc"])
    wrote = printable(str(plans[0].json))
    print(f"wrote {wrote} in {time.perf_counter() - began:.2f} s", file=sys.stderr)
    return 0


__all__ = ["PROG", "cmd_contours", "cmd_segment", "segment_jobs"]
