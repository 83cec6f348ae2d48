"""``aspects`` command line.

Subcommands:
  segment     segment volumes (s3:// URLs or files) through Triton -> contours JSON (+ more)
  contours    contours JSON (+ label map, overlay) from a volume and a label map in its grid

(The local CPU Triton and the demo are the dev kit's: ``aspects-dev serve-local | demo``.)

Exit codes (docs/errors.md): 0 ok; 1 a source failed (one readable line each); 2 bad usage,
refused before any work (invalid option, an output that is an input or exists); 130 Ctrl-C,
143 SIGTERM: in-flight requests are cancelled and nothing partial is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, contract
from .errors import AspectsError, UsageError
from .outputs import SourceOutputs, check_plan, commit, discard_all_temps, plan_outputs, printable
from .storage import DEFAULT_MAX_OBJECT_BYTES

PROG = "aspects"
EXIT_FAILED, EXIT_USAGE = 1, 2
MAX_RETRIES = 10
MAX_CONCURRENCY = 64
_signalled: list[int] = []  # the signal that stopped the run (SIGINT or SIGTERM)


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on ONE stderr line and exits 2."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see {self.prog} --help)"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}{hint}\n")


# --- option types: validated at the edge, exit 2 ----------------------------------------


def positive_seconds(text: str) -> float:
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def positive_number(text: str) -> float:
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    value = _float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def triton_url(text: str) -> str:
    """``host:port`` (IPv6 as ``[addr]:port``), port 1..65535."""
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"must be host:port without a scheme (gRPC, not a URL), got {text!r}; e.g. "
            "triton:8001 (add --tls for TLS)"
        )
    host, sep, port = text.rpartition(":")
    if not sep or not host or host in ("[]",):
        raise argparse.ArgumentTypeError(f"must be host:port, got {text!r}")
    int_in(1, 65535)(port)
    return text


# --- the parser ---------------------------------------------------------------------------


def _destination(text: str) -> Any:
    """``AE@host:port`` -> DicomNode (argparse type: a bad value is a usage error)."""
    from .dicom_send import parse_destination

    try:
        return parse_destination(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__} (aspects_client)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    g = sub.add_parser("segment", help="segment volumes through the Triton ensemble")
    g.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="s3://bucket/key or a NIfTI file; or DICOM: a folder, a .zip or s3://bucket/prefix/",
    )
    g.add_argument(  # DICOM input (issue 16)
        "--dicom-files",
        nargs="+",
        default=None,
        metavar="FILE",
        help="one more source: these DICOM files together (the DWI and ADC series)",
    )
    g.add_argument(
        "--series",
        default=None,
        metavar="NUMBER_OR_UID",
        help="the DWI series of a DICOM source when several qualify (SeriesNumber or UID)",
    )
    _add_output_arguments(g, "contours JSON file (one source) or directory/ (several sources)")
    g.add_argument(
        "--url",
        type=triton_url,
        default=os.environ.get("ASPECTS_TRITON_URL", "127.0.0.1:8001"),
        help="Triton gRPC host:port (env ASPECTS_TRITON_URL; default %(default)s)",
    )
    g.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3"))
    g.add_argument("--region", default=None, help="S3 region (default: boto3's chain)")
    g.add_argument("--profile", default=None, help="AWS profile (default: boto3's chain)")
    g.add_argument(
        "--max-object-bytes", type=int_in(1), default=DEFAULT_MAX_OBJECT_BYTES, metavar="N"
    )
    g.add_argument("--timeout", type=positive_seconds, default=30.0, help="seconds per request")
    g.add_argument(
        "--deadline", type=positive_seconds, default=60.0, help="seconds per volume, all in"
    )
    g.add_argument(
        "--retries", type=int_in(0, MAX_RETRIES), default=4, help="retries on UNAVAILABLE/overload"
    )
    g.add_argument(
        "--wait", type=non_negative_seconds, default=0.0, help="seconds to wait for a ready server"
    )
    g.add_argument(  # priority (issue 15): contract.TRITON_PRIORITY
        "--priority",
        choices=tuple(contract.TRITON_PRIORITY),
        default=contract.DEFAULT_PRIORITY,
        help="urgent: served before batch requests in every queue (default %(default)s)",
    )
    g.add_argument("--tls", action="store_true", help="gRPC over TLS")
    g.add_argument("--root-certificates", help="PEM CA bundle for --tls")
    g.add_argument(
        "--concurrency", type=int_in(1, MAX_CONCURRENCY), default=4, help="volumes in flight"
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    g.add_argument(
        "--score",
        action="store_true",
        help="also the lesion map, region involvement and the ASPECTS score (docs/scoring.md)",
    )
    g.add_argument(
        "--adc",
        action="append",
        default=None,
        metavar="ADC",
        help="ADC map of the same patient (s3://, a file, or a DICOM folder/zip/prefix; implies "
        "--score); repeat once per SOURCE, in the same order (a DICOM SOURCE's own ADC series "
        "is used without it)",
    )
    g.add_argument(
        "--adc-scale",
        type=positive_number,
        default=None,
        metavar="F",
        help="factor from the ADC's stored values to 10^-6 mm^2/s (default: detected)",
    )
    g.add_argument(
        "--lesion",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="also write the lesion map .nii.gz (1 = lesion; implies --score; --lesion=PATH)",
    )
    d = g.add_argument_group("DICOM outputs (a DICOM SOURCE only; docs/dicom.md)")
    for flag, what in (
        ("--seg", "a DICOM SEG of the 20 region x hemisphere segments (<name>_seg.dcm)"),
        ("--report", "the ASPECTS result as a DICOM structured report (<name>_report.dcm; "
         "implies --score and --seg)"),
        ("--capture", "the overlay as a DICOM secondary capture (<name>_overlay.dcm)"),
    ):
        d.add_argument(flag, nargs="?", const=True, default=False, metavar="PATH", help=what)
    d.add_argument(
        "--send",
        type=_destination,
        default=None,
        metavar="AE@HOST:PORT",
        help="C-STORE the DICOM outputs (the SEG, plus the report when scoring and the capture "
        "when asked) to this DICOM node after writing the files",
    )
    d.add_argument(
        "--calling-ae", default="ASPECTS", metavar="AE", help="our AE title (default %(default)s)"
    )
    g.set_defaults(func=_cmd_segment)

    c = sub.add_parser("contours", help="contours JSON from a volume + a label map in its grid")
    c.add_argument("volume", help="DWI volume (.nii/.nii.gz)")
    c.add_argument("label_input", metavar="LABELS", help="label map (.nii/.nii.gz), same grid")
    _add_output_arguments(c, "contours JSON file to write")
    c.set_defaults(func=_cmd_contours)

    return parser


def _add_output_arguments(p: argparse.ArgumentParser, output_help: str) -> None:
    """The one output vocabulary of ``segment`` and ``contours``."""
    p.add_argument("-o", "--output", required=True, help=output_help)
    p.add_argument(
        "--labels",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="also write the label map .nii.gz (default name: beside -o; --labels=PATH)",
    )
    p.add_argument(
        "--overlay",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="also write an overlay PNG (default name: beside -o; --overlay=PATH)",
    )
    p.add_argument(
        "--viewer",
        action="store_true",
        help="also write the region x hemisphere label map (20 labels) with a 3D Slicer colour "
        "table, an ITK-SNAP label file and a TSV, beside -o (<name>_regions.*)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--name",
        default=None,
        help="what the results record as the source's name (one source; default: the file "
        "name without directories or S3 prefix)",
    )
    p.add_argument(
        "--volume-index", type=int_in(0), default=None, help="volume of a 4D series (0-based)"
    )


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no gRPC C-core lines on our stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    _signalled.clear()
    previous = _install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        signum = _signalled[0] if _signalled else signal.SIGINT
        discard_all_temps()
        name = "interrupted" if signum == signal.SIGINT else "terminated"
        print(f"{PROG}: {name}; nothing partial was written", file=sys.stderr)
        return 128 + int(signum)
    except UsageError as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except AspectsError as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # disk full, permission denied, ... outside a source's outputs
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _restore_signal_handlers(previous)


# Third-party loggers that print request headers (botocore's DEBUG carries the SigV4
# Authorization header: an access key id and a replayable signature): never below WARNING.
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "pynetdicom", "grpc")
SECRET_PATTERNS = (
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*b?['\"]?)[^'\"}\n]+"),
    re.compile(r"(?i)((?:signature|credential)=)[^,&\s'\"]+"),
    re.compile(r"(?i)(signature:\s*)\S+"),  # botocore.auth's "Signature:\n<hex>"
    re.compile(r"(?i)((?:access|secret)_key['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+"),
    re.compile(r"()\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids anywhere
    re.compile(r"(?i)(x-amz-(?:signature|credential|security-token)['\"]?\s*[:=]\s*['\"]?)"
               r"[^'\"&,}\s]+"),
    re.compile(r"(?i)(aws_(?:secret_access_key|access_key_id|session_token)['\"]?\s*[:=]\s*"
               r"['\"]?)[^'\",}\s]+"),
)


class RedactSecrets(logging.Filter):
    """Masks credentials in every log record that reaches the CLI's handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = redact(record.getMessage()), None
            if record.exc_info:  # a traceback's text goes through the same masks
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        except Exception:  # a record that cannot be formatted is dropped, never printed raw
            return False
        return True


def redact(text: str) -> str:
    """``text`` with authorization headers, SigV4 signatures and AWS keys masked."""
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(r"\1<redacted>", text)
    return text


def _configure_logging(verbose: bool) -> None:
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(name)s: %(message)s"))
        handler.addFilter(RedactSecrets())
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        return
    warnings.simplefilter("ignore")  # numpy/nibabel warnings would break "one line"
    for name in ("", "nibabel", "aspects_client", "botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _on_signal(signum: int, _frame: object) -> None:
    if not _signalled:
        _signalled.append(signum)
    raise KeyboardInterrupt


def _install_signal_handlers() -> dict[int, Any]:
    """SIGINT and SIGTERM stop the run the same way (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def one_line(text: str) -> str:
    """One terminal line: whitespace runs collapsed, control characters escaped."""
    return printable(" ".join(text.split()))


def warn_qc(source: str, qc: dict) -> None:
    """One stderr line per result whose quality control failed (the exit code stays 0:
    the outputs are written; the line says what to review)."""
    if not qc.get("passed", True):
        flags = "; ".join(qc.get("flags", []))
        print(
            f"{PROG}: warning: {printable(source)}: QC failed, review: {one_line(flags)}",
            file=sys.stderr,
        )


# --- segment ------------------------------------------------------------------------------


def _cmd_segment(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from .client import AspectsClient
    from .dicom_input import check_dicom_source, dicom_source_name, is_dicom_source
    from .inference import InferenceSettings
    from .storage import S3Settings, check_source_string

    def check(source: str) -> None:
        if is_dicom_source(source):
            check_dicom_source(source)
        else:
            check_source_string(source)

    sources: list[str] = list(args.sources)
    inputs: list[Any] = list(sources)  # what segment() reads: a source, or a list of files
    if args.dicom_files:
        sources.append(dicom_source_name(args.dicom_files))
        inputs.append(list(args.dicom_files))
    if not sources:
        raise UsageError("no SOURCE given; give files, s3:// URLs, DICOM folders or --dicom-files")
    for source in args.sources:
        check(source)
    any_dicom = any(is_dicom_source(source) for source in inputs)
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
            check(adc)
    wants_dicom = bool(args.seg or args.report or args.capture or args.send)
    if wants_dicom:
        not_dicom = [s for s, i in zip(sources, inputs, strict=True) if not is_dicom_source(i)]
        if not_dicom:
            raise UsageError(
                f"--seg/--report/--capture/--send build DICOM objects that reference the source "
                f"series, but {printable(not_dicom[0])} is not DICOM; send a DICOM folder, zip, "
                "s3:// prefix or --dicom-files"
            )
    if args.send is not None:
        from .dicom_send import check_ae_title

        check_ae_title(args.calling_ae, "--calling-ae")
    seg = args.seg or bool(args.report)  # the report references the SEG's segments
    scoring = bool(args.score or args.adc or args.lesion or args.report)
    plans = plan_outputs(
        sources,
        args.output,
        labels=args.labels,
        overlay=args.overlay,
        lesion=args.lesion,
        viewer=args.viewer,
        seg=seg,
        report=args.report,
        capture=args.capture,
    )
    check_plan(
        plans,
        [*args.sources, *(args.dicom_files or ()), *(a for a in adcs if a)],
        overwrite=args.overwrite,
    )
    settings = InferenceSettings(
        timeout_s=args.timeout,
        deadline_s=args.deadline,
        retries=args.retries,
        ssl=args.tls,
        root_certificates=args.root_certificates,
        priority=args.priority,
    )
    s3 = S3Settings(
        endpoint_url=args.endpoint_url,
        region_name=args.region,
        profile_name=args.profile,
        max_object_bytes=args.max_object_bytes,
    )
    t0 = time.perf_counter()
    stop = threading.Event()
    total = len(sources)
    failures = 0
    want_overlay = any(p.overlay is not None or p.capture is not None for p in plans)
    with (
        AspectsClient(
            args.url, s3=s3, inference=settings, overlay=want_overlay, wait_s=args.wait
        ) as client,
        ProgressDisplay(total, quiet=args.quiet) as display,
    ):

        def one(index: int) -> tuple[float, Path]:
            t = time.perf_counter()
            plan = plans[index]
            source = inputs[index]
            result = client.segment(
                source,
                name=args.name,
                volume_index=args.volume_index,
                series=args.series if is_dicom_source(source) else None,
                cancel=stop,
                progress=display.slices,
                score=scoring,
                adc=adcs[index],
                adc_scale=args.adc_scale,
            )
            datasets = _dicom_datasets(plan, result, send=args.send is not None)
            commit(_files_of(plan, result, datasets), overwrite=args.overwrite, cancel=stop)
            # the result is written: its QC warning and score are said before any send, so a
            # failed send (exit 1) never hides them
            warn_qc(plan.source, result.qc)
            if result.score is not None:
                print(f"{printable(plan.source)}: {score_line(result.score)}", flush=True)
            if args.send is not None:  # after the files: a failed send keeps them (exit 1)
                from .dicom_send import send_datasets

                node = args.send
                send_datasets(
                    list(datasets.values()),
                    host=node.host,
                    port=node.port,
                    called_ae=node.ae_title,
                    calling_ae=args.calling_ae,
                    timeout_s=args.timeout,
                    cancel=stop,
                )
            return time.perf_counter() - t, plan.json

        pool = ThreadPoolExecutor(max_workers=min(args.concurrency, total))
        try:
            futures = {pool.submit(one, i): i for i in range(total)}
            for future in as_completed(futures):
                source = sources[futures[future]]
                try:
                    seconds, json_path = future.result()
                    display.volume_done(
                        source, f"ok {seconds:.1f} s -> {printable(str(json_path))}"
                    )
                except AspectsError as exc:
                    failures += 1
                    display.volume_done(source, "FAILED", error=_error_line(source, exc))
                except Exception as exc:  # a bug, not bad input: still one line, go on
                    failures += 1
                    text = f"unexpected {type(exc).__name__}: {exc}"
                    display.volume_done(source, "FAILED", error=_error_line(source, text))
        except KeyboardInterrupt:
            stop.set()  # workers cancel their requests/downloads and commit nothing
            pool.shutdown(wait=False, cancel_futures=True)
            _join(pool, seconds=2.0)
            raise
        finally:
            pool.shutdown(wait=True)
    if not args.quiet:
        ok = total - failures
        print(f"{ok}/{total} segmented in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return EXIT_FAILED if failures else 0


def _dicom_datasets(plan: SourceOutputs, result: Any, *, send: bool) -> dict[str, Any]:
    """The DICOM objects this source's plan writes (and ``--send`` sends): the SEG when
    written or sent, the report when written or when sending a scored result, the capture
    when written."""
    seg = plan.seg is not None or send
    report = plan.report is not None or (send and result.score is not None)
    capture = plan.capture is not None
    if not (seg or report or capture):
        return {}
    from .dicom_output import dicom_outputs

    return dicom_outputs(result, seg=seg, report=report, capture=capture)


def _files_of(
    plan: SourceOutputs, result: Any, datasets: dict[str, Any] | None = None
) -> dict[Path, bytes]:
    files = {plan.json: result.contours_json().encode()}
    if plan.labels is not None:
        files[plan.labels] = result.label_map_bytes()
    if plan.overlay is not None and result.overlay_png is not None:
        files[plan.overlay] = result.overlay_png
    if plan.lesion is not None:
        files[plan.lesion] = result.lesion_map_bytes()
    files.update(_viewer_files(plan, result.region_image))
    if datasets:
        from .dicom_output import dataset_bytes

        for key, path in (("seg", plan.seg), ("sr", plan.report), ("sc", plan.capture)):
            if path is not None:
                files[path] = dataset_bytes(datasets[key])
    return files


def _viewer_files(plan: SourceOutputs, region_image: Any) -> dict[Path, bytes]:
    """``plan.viewer``'s four files (``outputs.VIEWER_SUFFIXES`` order) from the 20-label map."""
    if not plan.viewer:
        return {}
    from .outputs import VIEWER_SUFFIXES
    from .viewer_files import viewer_files

    produced = viewer_files(region_image, "x")
    pairs = zip(plan.viewer, VIEWER_SUFFIXES, strict=True)
    return {path: produced["x" + suffix] for path, suffix in pairs}


def score_line(score: dict) -> str:
    """'ASPECTS 7 (left; affected: M2, L, IC; right 10)' — one stdout line per source."""
    names = {"r": "right", "l": "left"}
    side = score.get("affected_hemisphere")
    if side is None:
        text = f"ASPECTS {score['score']} (no lesion)"
    else:
        other = "l" if side == "r" else "r"
        keys = ", ".join(k.upper() for k in score["affected_regions"][side]) or "none"
        text = (
            f"ASPECTS {score['score']} ({names[side]}; affected: {keys}; "
            f"{names[other]} {score['scores'][other]})"
        )
    return text + (" UNCERTAIN: review" if score.get("uncertain") else "")


def _error_line(source: str, exc: object) -> str:
    text = str(exc)
    if source not in text:
        text = f"{source}: {text}"
    return f"{PROG}: error: {one_line(text)}"


def _join(pool: Any, seconds: float) -> None:
    """Give cancelled workers up to ``seconds`` to return (they poll their cancel event)."""
    deadline = time.monotonic() + seconds
    for thread in list(getattr(pool, "_threads", ())):
        thread.join(max(0.0, deadline - time.monotonic()))


class ProgressDisplay:
    """Progress on stderr: tqdm bars (volumes and slices) on a terminal, else one line per
    finished volume; nothing with ``quiet`` (errors are always printed)."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.done = 0
        self._lock = threading.Lock()
        self._bars: tuple[Any, Any] | None = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            volumes = tqdm(total=total, desc="volumes", unit="vol", position=0, leave=True)
            slices = tqdm(total=0, desc="slices ", unit="slice", position=1, leave=False)
            self._bars = (volumes, slices)

    def slices(self, done: int, added: int) -> None:
        if self._bars is None:
            return
        with self._lock:
            bar = self._bars[1]
            if added:
                bar.total += added
            if done:
                bar.update(done)
            bar.refresh()  # once per request of up to 16 slices: cheap

    def volume_done(self, source: str, status: str, error: str | None = None) -> None:
        with self._lock:
            self.done += 1
            line = f"[{self.done}/{self.total}] {printable(source)}: {status}"
            if self._bars is not None:
                if error:
                    self._bars[0].write(error, file=sys.stderr)
                self._bars[0].update(1)
                self._bars[0].set_postfix_str(printable(source)[-40:], refresh=True)
                return
            if error:
                print(error, file=sys.stderr)
            if not self.quiet:
                print(line, file=sys.stderr)

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            for bar in reversed(self._bars):
                bar.close()


# --- contours -----------------------------------------------------------------------------


def _cmd_contours(args: argparse.Namespace) -> int:
    import numpy as np

    from . import contract
    from .assemble import assemble
    from .display_stack import prepare
    from .document import dumps
    from .errors import InvalidVolumeError
    from .geometry import to_display
    from .labelmap import label_map_bytes
    from .volume_io import load_volume

    plans = plan_outputs(
        [args.volume], args.output, labels=args.labels, overlay=args.overlay, viewer=args.viewer
    )
    check_plan(plans, [args.volume, args.label_input], overwrite=args.overwrite)
    plan = plans[0]
    t0 = time.perf_counter()
    volume = load_volume(args.volume, volume_index=args.volume_index)
    labels_vol = load_volume(args.label_input)
    _check_same_grid(volume, labels_vol, args.label_input)
    values = labels_vol.data
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise InvalidVolumeError(f"{args.label_input}: label values must be whole numbers")
    if values.size and (values.min() < 0 or values.max() >= contract.NUM_CLASSES):
        raise InvalidVolumeError(
            f"{args.label_input}: label values must be class indices "
            f"0..{contract.NUM_CLASSES - 1} ({', '.join(contract.CLASS_KEYS)})"
        )
    from .client import recorded_name

    volume = dataclasses.replace(
        volume, source=recorded_name(args.volume) if args.name is None else args.name
    )
    prepared = prepare(volume)
    labels = np.ascontiguousarray(to_display(values, prepared.geometry)).astype(np.uint8)
    result = assemble(
        volume,
        prepared,
        labels,
        overlay=plan.overlay is not None,
        provenance={"labels_source": recorded_name(args.label_input), "tool": "aspects contours"},
    )
    files = {plan.json: dumps(result.document).encode()}
    if plan.labels is not None:
        files[plan.labels] = label_map_bytes(result.label_image)
    if plan.overlay is not None and result.overlay_png is not None:
        files[plan.overlay] = result.overlay_png
    files.update(_viewer_files(plan, result.region_image))
    commit(files, overwrite=args.overwrite)
    warn_qc(args.volume, result.document["qc"])
    print(f"wrote {printable(str(plan.json))} in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


def _check_same_grid(volume: Any, labels: Any, label_path: str) -> None:
    """The label map must share the volume's shape and affine (to 1e-3 mm)."""
    import numpy as np

    from .errors import InvalidVolumeError

    if labels.shape != volume.shape:
        raise InvalidVolumeError(
            f"{label_path}: shape {labels.shape} differs from the volume's {volume.shape}; "
            "the label map must be in the volume's grid"
        )
    diff = float(np.max(np.abs(labels.affine - volume.affine)))
    if diff > 1e-3:
        raise InvalidVolumeError(
            f"{label_path}: same shape {labels.shape}, but its affine differs from the "
            f"volume's by up to {diff:.4g} mm; the label map must be in the volume's grid "
            "(same sform/qform)"
        )


if __name__ == "__main__":
    sys.exit(main())
