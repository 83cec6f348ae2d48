"""The public API the radiology back-end calls: ``AspectsClient(url=...).segment(source)``.

    with AspectsClient(url="triton:8001", s3=S3Settings(endpoint_url=...)) as client:
        result = client.segment("s3://bucket/case/dwi.nii.gz")
        result.document          # contours JSON (dict), result.contours_json() -> str
        result.label_image       # uint8 NIfTI in the source grid
        result.overlay_png       # PNG bytes for a person
        result.regions["m1"]["r"].volume_ml, .confidence
        result.qc                # quality control: {"passed", "flags", "checks"}
        result.provenance        # model, version that answered, priority, request id,
                                 # unet checkpoint, thresholds, timings per stage

One client serves many volumes at once from a thread pool: the gRPC channel and the
boto3 client are shared and thread-safe; each call keeps its own buffers.  A call can be
cancelled from another thread (``cancel=threading.Event()``); ``aspects_client.aio`` has
the asyncio API.  Every failure is an ``AspectsError`` subclass (``aspects_client.errors``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib

from . import __version__, contract
from .assemble import assemble
from .dicom_input import check_dicom_source, dicom_source_name, is_dicom_source
from .display_stack import prepare
from .document import dumps
from .errors import AspectsError, CancelledError, DicomReadTimeoutError, UsageError
from .inference import InferenceSettings, TritonSegmenter, check_priority
from .labelmap import label_map_bytes
from .lesions import ScoringRule
from .outputs import printable
from .qc import refuse_implausible_head
from .storage import S3Settings, check_source_string, fetch_object, is_s3_url, make_s3_client
from .volume_io import Limits, Volume, load_volume

if TYPE_CHECKING:
    from .dicom_input import DicomStudy

# a DICOM source (aspects_client.dicom_input): a folder, a .zip, a list of files, s3://b/prefix/
Source = str | Path | bytes | bytearray | memoryview | nib.spatialimages.SpatialImage | list | tuple
Progress = Callable[[int, int], None]  # (slices done since last call, slices added to total)

log = logging.getLogger("aspects_client")


@dataclass(frozen=True)
class RegionStats:
    """One region in one hemisphere: voxel count, volume (mL) and mean confidence (0..1)."""

    voxels: int
    volume_ml: float
    confidence: float


@dataclass
class SegmentationResult:
    """Everything one ``segment`` call returns."""

    source: str
    document: dict[str, Any]
    label_image: nib.Nifti1Image
    overlay_png: bytes | None
    regions: dict[str, dict[str, RegionStats]]
    provenance: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)
    lesion_image: nib.Nifti1Image | None = None  # uint8, 1 = lesion, source grid (when scored)
    # uint8, source grid: 1..10 = m1..ic patient right, 11..20 = m1..ic patient left (viewers,
    # DICOM SEG; contract.region_hemisphere_label)
    region_image: nib.Nifti1Image | None = None
    # the DICOM series read (DICOM sources only): DWI (and ADC) volumes with their instances,
    # so that outputs (SEG, SR) can reference them
    dicom: DicomStudy | None = None

    @property
    def score(self) -> dict[str, Any] | None:
        """The ASPECTS section (``document["aspects"]``) when scoring was asked for: the
        lesion method and rule, ``score``, ``scores`` per side, ``affected_hemisphere``,
        ``affected_regions``, ``uncertain`` and per-region ``involvement``."""
        return self.document.get("aspects")

    def lesion_map_bytes(self) -> bytes | None:
        """The lesion map as .nii.gz bytes (None when not scored)."""
        return None if self.lesion_image is None else label_map_bytes(self.lesion_image)

    @property
    def qc(self) -> dict[str, Any]:
        """Quality control (``document["qc"]``): ``passed``, human-readable ``flags`` and
        per-check ``checks`` (asymmetry, level_consistency, outside_head); see
        ``aspects_client.qc``.  Review a result whose ``qc["passed"]`` is False."""
        return self.document["qc"]

    def contours_json(self) -> str:
        return dumps(self.document)

    def label_map_bytes(self) -> bytes:
        """The label map as .nii.gz bytes."""
        return label_map_bytes(self.label_image)


class AspectsClient:
    """Segments DWI volumes through the Triton ensemble; thread-safe; a context manager."""

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        s3: S3Settings = S3Settings(),
        inference: InferenceSettings = InferenceSettings(),
        limits: Limits = Limits(),
        overlay: bool = True,
        wait_s: float = 0.0,
    ) -> None:
        """Connects and checks the served model against the contract at once; ``wait_s``:
        seconds to keep retrying while the server or model is not ready yet."""
        if not isinstance(url, str) or not url:
            raise UsageError(f"url must be a 'host:port' string, got {url!r}")
        self.url = url
        self.s3_settings = s3
        self.limits = limits
        self.overlay = overlay
        self._segmenter = TritonSegmenter(url, inference, wait_s=wait_s)
        self._s3: Any = None
        self._s3_lock = threading.Lock()

    @property
    def model_info(self):
        return self._segmenter.info

    def _s3_client(self) -> Any:
        with self._s3_lock:
            if self._s3 is None:
                self._s3 = make_s3_client(self.s3_settings)
            return self._s3

    def segment(
        self,
        source: Source,
        *,
        name: str | None = None,
        volume_index: int | None = None,
        cancel: threading.Event | None = None,
        request_id: str | None = None,
        progress: Progress | None = None,
        score: bool = False,
        adc: Source | None = None,
        adc_scale: float | None = None,
        rule: ScoringRule | None = None,
        priority: str | None = None,
        series: str | int | None = None,
    ) -> SegmentationResult:
        """Segment one volume: an ``s3://`` URL, a path, bytes or a nibabel image, or a
        DICOM series: a folder, a .zip, a list of files or an ``s3://bucket/prefix/``.

        name: what the results record as ``source.name`` and the overlay title (default:
        the file name without its directories or S3 prefix; "" records nothing) — the
        full path or key never goes into a result.  cancel: set it from another thread to
        stop (CancelledError within about 0.2 s, nothing returned).  request_id: sent
        with every gRPC request and kept in the provenance (default: a new uuid4).
        progress: called as ``progress(slices_done, slices_added)`` from worker threads.
        score / adc: also compute the lesion map, each region's involvement and the ASPECTS
        score (``result.score``, ``document["aspects"]``; docs/scoring.md); ``adc`` is an
        ADC map of the same patient (any grid, same kinds of source as ``source``; implies
        ``score``), ``adc_scale`` its unit factor to 10^-6 mm^2/s when it cannot be
        detected, ``rule`` the lesion/affected thresholds (default: the contract's).
        priority: ``"urgent"`` (served first) or ``"batch"``; default: the client's
        ``InferenceSettings.priority``; sent with every request and kept in the provenance.
        DICOM (``aspects_client.dicom_input``): the DWI series is selected from the input
        (``series``: its SeriesNumber or SeriesInstanceUID when several qualify), and with
        ``score`` the input's ADC series too (an explicit ``adc`` wins; it may be DICOM as
        well); ``result.dicom`` keeps the series read.
        """
        if priority is not None:  # priority (issue 15): refused before any work
            check_priority(priority, "priority")
        _check_source_type(source)
        dicom = is_dicom_source(source)
        if dicom and volume_index is not None:
            raise UsageError("volume_index is for 4D NIfTI; choose a DICOM series with series=")
        if series is not None and not dicom:
            raise UsageError("series= chooses a DICOM series; the source is not DICOM")
        if name is not None and not isinstance(name, str):
            raise UsageError(f"name must be a string, got {type(name).__name__}")
        request_id = request_id or uuid.uuid4().hex
        timings: dict[str, float] = {}
        t = time.perf_counter()
        label = str(source) if isinstance(source, (str, Path)) else None
        recorded = recorded_name(source) if name is None else name
        log.debug("request %s: %s", request_id, recorded)
        _check_cancel(cancel)
        study = None
        if dicom:
            label = label or recorded
            study = self._read_dicom(source, label, series, bool(score) and adc is None, cancel)
            volume = load_volume(study.dwi.image, name=label, limits=self.limits)
        else:
            volume = self._load(source, label, volume_index, cancel, timings)
        volume = dataclasses.replace(volume, source=recorded)
        timings["decode_validate"] = time.perf_counter() - t - timings.get("download", 0.0)
        adc_volume = None
        if adc is not None:
            _check_source_type(adc)
            adc_label = str(adc) if isinstance(adc, (str, Path)) else "<ADC>"
            if is_dicom_source(adc):
                adc_volume = self._load_dicom_adc(adc, adc_label, cancel)
            else:
                adc_volume = self._load(adc, adc_label, None, cancel, {})
            adc_volume = dataclasses.replace(adc_volume, source=recorded_name(adc))
        elif study is not None and study.adc is not None and score:
            adc_volume = load_volume(study.adc.image, name=f"{label} (ADC)", limits=self.limits)
            adc_volume = dataclasses.replace(adc_volume, source=f"{recorded} (ADC)")
        _check_cancel(cancel)
        t = time.perf_counter()
        prepared = prepare(volume)
        timings["prepare"] = time.perf_counter() - t
        _check_cancel(cancel)
        if progress is not None:
            progress(0, len(prepared.slices))
        t = time.perf_counter()
        answer = self._segmenter.infer(
            prepared.slices,
            request_id=request_id,
            cancel=cancel,
            progress=(lambda n: progress(n, 0)) if progress is not None else None,
            priority=priority,
        )
        labels, confidence = answer
        timings["inference"] = time.perf_counter() - t
        _check_cancel(cancel)
        t = time.perf_counter()
        info = self._segmenter.info
        # provenance (issue 15): the version that answered every request of this volume (read
        # from the responses), the priority asked for, the steps (unet checkpoint) as served
        answered_version = getattr(answer, "model_version", None) or info.version
        provenance = {
            "client": f"aspects_client {__version__}",
            "request_id": request_id,
            "server": self.url,
            "model": info.name,
            "model_version": answered_version,
            "priority": getattr(answer, "priority", None) or priority or contract.DEFAULT_PRIORITY,
            "steps": info.steps,
            "threshold_prob": contract.THRESHOLD_PROB,
            "min_area_pixels": contract.MIN_AREA_PIXELS,
            "window": {
                "percentiles": list(contract.WINDOW_PERCENTILES),
                "bounds": list(prepared.window),
            },
        }
        result = assemble(
            volume,
            prepared,
            labels,
            provenance=provenance,
            slice_confidence=confidence,
            overlay=False,
        )
        timings["contours_json"] = time.perf_counter() - t
        refuse_implausible_head(result.document["summary"], printable(volume.source))
        scored = None
        if score or adc_volume is not None:
            t = time.perf_counter()
            from .scoring import score_volume

            scored = score_volume(
                volume,
                prepared,
                labels,
                result.hemispheres,
                result.document["qc"],
                adc=adc_volume,
                adc_scale=adc_scale,
                rule=rule or ScoringRule(),
            )
            result.document["aspects"] = scored.section
            timings["score"] = time.perf_counter() - t
        png = None
        if self.overlay:
            t = time.perf_counter()
            from .overlay import render_overlay

            checkpoint = info.steps.get(contract.UNET_MODEL, {}).get("checkpoint", "")
            png = render_overlay(
                prepared.slices,
                result.contours,
                prepared.geometry,
                title=f"{printable(volume.source)}  ({info.name} v{answered_version})".lstrip(),
                note=f"unet: {checkpoint}" if checkpoint else "",
                qc=result.document["qc"],
                score=scored.section if scored is not None else None,
                lesion=scored.lesion if scored is not None else None,
                classes=labels,
                hemispheres=result.hemispheres,
            )
            timings["overlay"] = time.perf_counter() - t
        provenance["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        regions = {
            key: {
                hemi: RegionStats(e["voxels"], e["volume_ml"], e["confidence"])
                for hemi, e in by_hemi.items()
            }
            for key, by_hemi in result.document["summary"].items()
        }
        return SegmentationResult(
            source=volume.source,
            document=result.document,
            label_image=result.label_image,
            overlay_png=png,
            regions=regions,
            provenance=provenance,
            timings_s=timings,
            lesion_image=scored.lesion_image if scored is not None else None,
            region_image=result.region_image,
            dicom=study,
        )

    def _load(
        self,
        source: Source,
        label: str | None,
        volume_index: int | None,
        cancel: threading.Event | None,
        timings: dict[str, float],
    ) -> Volume:
        """Download (s3://) or read, then decode and validate one NIfTI volume."""
        if not is_s3_url(source):
            return load_volume(source, name=label, volume_index=volume_index, limits=self.limits)
        t = time.perf_counter()
        raw: Any = fetch_object(
            str(source),
            self._s3_client(),
            max_bytes=self.s3_settings.max_object_bytes,
            cancel=cancel,
        )
        timings["download"] = time.perf_counter() - t
        return load_volume(raw, name=label, volume_index=volume_index, limits=self.limits)

    def _read_dicom(
        self,
        source: Any,
        label: str,
        series: str | int | None,
        want_adc: bool,
        cancel: threading.Event | None,
    ) -> DicomStudy:
        """The DWI (and, when asked, ADC) series of a DICOM source, within the per-volume
        deadline (``InferenceSettings.deadline_s``) and the caller's ``cancel``."""
        from .dicom_input import read_dicom

        deadline_s = self._segmenter.settings.deadline_s
        stop, expired = _deadline_event(cancel, deadline_s)
        try:
            return read_dicom(
                source,
                s3_client=self._s3_client() if is_s3_url(source) else None,
                label=label,
                limits=self.limits,
                series=series,
                adc=want_adc,
                max_object_bytes=self.s3_settings.max_object_bytes,
                cancel=stop,
            )
        except CancelledError:
            if expired.is_set() and not (cancel is not None and cancel.is_set()):
                raise DicomReadTimeoutError(
                    f"{label}: reading the DICOM series took longer than the {deadline_s:g} s "
                    "per-volume deadline (--deadline); send fewer files (the DWI series) or "
                    "raise --deadline"
                ) from None
            raise
        finally:
            stop.set()  # ends the watcher

    def _load_dicom_adc(self, source: Any, label: str, cancel: threading.Event | None) -> Volume:
        from .dicom_input import read_dicom_adc

        series = read_dicom_adc(
            source,
            s3_client=self._s3_client() if is_s3_url(source) else None,
            label=label,
            limits=self.limits,
            max_object_bytes=self.s3_settings.max_object_bytes,
            cancel=cancel,
        )
        return load_volume(series.image, name=label, limits=self.limits)

    def close(self) -> None:
        self._segmenter.close()

    def __enter__(self) -> AspectsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _deadline_event(
    cancel: threading.Event | None, seconds: float
) -> tuple[threading.Event, threading.Event]:
    """(stop, expired): ``stop`` is set when ``cancel`` is set or ``seconds`` pass (then
    ``expired`` too), or by the caller when done."""
    stop, expired = threading.Event(), threading.Event()

    def watch() -> None:
        end = time.monotonic() + seconds
        while not stop.wait(min(0.1, seconds)):
            if cancel is not None and cancel.is_set():
                break
            if time.monotonic() >= end:
                expired.set()
                break
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop, expired


def recorded_name(source: Source) -> str:
    """What a result records by default: the last path segment of a path or S3 key (no
    directories, no bucket or prefix, which often hold patient identifiers); for DICOM the
    folder's, zip's or prefix's last segment (never anything from the files)."""
    if is_dicom_source(source):
        return dicom_source_name(source)  # type: ignore[arg-type]
    if isinstance(source, (str, Path)):
        return str(source).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if isinstance(source, nib.spatialimages.SpatialImage):
        return "<nibabel image>"
    return "<bytes>"


def _check_source_type(source: object) -> None:
    if is_dicom_source(source):
        check_dicom_source(source)
        return
    if isinstance(source, bool) or not isinstance(
        source, (str, Path, bytes, bytearray, memoryview, nib.spatialimages.SpatialImage)
    ):
        raise UsageError(
            "source must be an s3:// URL, a file path, NIfTI bytes, a nibabel image or a DICOM "
            "series (a folder, a .zip, a list of files or an s3://bucket/prefix/), "
            f"got {type(source).__name__}"
        )
    if isinstance(source, str):
        check_source_string(source)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("cancelled; nothing was written")


__all__ = [
    "AspectsClient",
    "AspectsError",
    "InferenceSettings",
    "Limits",
    "RegionStats",
    "S3Settings",
    "SegmentationResult",
]
