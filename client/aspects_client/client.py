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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib

from . import __version__, contract, rooms
from .assemble import Assembled, assemble
from .display_stack import PreparedVolume, prepare
from .document import dumps
from .errors import (
    AspectsError,
    CancelledError,
    DicomReadTimeoutError,
    StorageUnreachableError,
    UsageError,
)
from .inference import InferenceSettings, TritonSegmenter, VolumeAnswer
from .labelmap import label_map_bytes
from .outputs import printable
from .qc import refuse_implausible_head
from .request import SegmentRequest
from .sources import Source, recorded_name
from .storage import S3Settings, fetch_object, make_s3_client
from .volume_io import Limits, Volume, load_volume

# what segment() takes: an s3:// URL, a path, bytes, a nibabel image, or a DICOM series (a
# folder, a .zip, a list of files, s3://bucket/prefix/); see aspects_client.sources
SourceLike = str | Path | bytes | bytearray | memoryview | nib.spatialimages.SpatialImage | list
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
    dicom: Any = None  # aspects_client.dicom.DicomStudy

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


@dataclass
class _Call:
    """One ``segment()`` call: its request, cancel event, clock and stage timings (s)."""

    request: SegmentRequest
    cancel: threading.Event | None
    deadline_s: float  # the whole volume's deadline (seconds) ...
    deadline: float  # ... as a time.monotonic() value, counted from the segment() call
    timings: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        """CancelledError once the caller's cancel event is set."""
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("cancelled; nothing was written")

    def timed(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, its wall time recorded as ``timings[stage]``."""
        began = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings[stage] = time.perf_counter() - began
        return out

    def watch(self) -> tuple[threading.Event, threading.Event]:
        """(stop, expired) for a read: ``stop`` is set by the caller's cancel or at the
        deadline (then ``expired`` too), or by the reader when done."""
        return _deadline_event(self.cancel, max(0.0, self.deadline - time.monotonic()))


@dataclass(frozen=True)
class _Inputs:
    """What was read: the DWI volume, the ADC volume (when scoring has one), the DICOM
    study (DICOM sources)."""

    volume: Volume
    adc: Volume | None
    study: Any


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
        source: SourceLike | None = None,
        *,
        request: SegmentRequest | None = None,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> SegmentationResult:
        """Segment one volume: an ``s3://`` URL, a path, bytes or a nibabel image, or a
        DICOM series: a folder, a .zip, a list of files or an ``s3://bucket/prefix/``.

        Give either ``source`` and the request's options as keywords (``name``, ``score``,
        ``adc``, ``adc_scale``, ``rule``, ``priority``, ``series``, ``volume_index``,
        ``request_id``, ``deadline_s``; see :class:`SegmentRequest`) or a ready
        ``request``.  name: what the result records as ``source.name`` and the overlay
        title (default: the file name without directories or S3 prefix; "" records
        nothing) — the full path or key never goes into a result.  cancel: set it from
        another thread to stop (CancelledError within about 0.2 s, nothing returned).
        progress: called as ``progress(slices_done, slices_added)`` from worker threads.
        The per-volume deadline (``deadline_s``, default ``InferenceSettings.deadline_s``)
        counts from this call: download, DICOM reading, inference and what follows.
        DICOM: the DWI series is selected from the input (``series`` when several
        qualify), with scoring the input's ADC series too (an explicit ``adc`` wins);
        ``result.dicom`` keeps the series read.
        """
        call = self._start(source, request, cancel, options)
        inputs = self._read(call)  # read
        prepared = call.timed("prepare", prepare, inputs.volume)  # prepare
        call.check()
        answer = self._infer(call, prepared, progress)  # infer
        call.check()
        began = time.perf_counter()
        assembled, provenance = self._assemble(call, inputs.volume, prepared, answer)
        call.timings["contours_json"] = time.perf_counter() - began
        refuse_implausible_head(assembled.document["summary"], printable(inputs.volume.source))
        scored = None
        if call.request.wants_score:  # score
            scored = call.timed("score", self._score, call, inputs, prepared, answer, assembled)
        png = None
        if self.overlay:  # render
            png = call.timed("overlay", self._render, inputs.volume, prepared, answer,
                             assembled, scored)
        provenance["timings_s"] = {k: round(v, 4) for k, v in call.timings.items()}
        return _result(inputs, assembled, provenance, call.timings, png, scored)

    def _start(
        self, source: Any, request: SegmentRequest | None, cancel: threading.Event | None,
        options: dict[str, Any],
    ) -> _Call:
        """The call's validated request and clock (UsageError before any work)."""
        if request is None:
            request = SegmentRequest.build(source, **options)
        elif source is not None or options:
            raise UsageError("give either a request or a source with options, not both")
        deadline_s = request.deadline_s or self._segmenter.settings.deadline_s
        call = _Call(request, cancel, deadline_s, time.monotonic() + deadline_s)
        log.debug("request %s: %s", request.request_id, request.source.name)
        call.check()
        return call

    def _read(self, call: _Call) -> _Inputs:
        """Download / read, decode and validate the DWI (and ADC) volumes."""
        req = call.request
        began = time.perf_counter()
        study = None
        if req.source.is_dicom:
            label = req.source.label or req.source.name
            study = self._read_dicom(call, label, req.wants_score and req.adc is None)
            volume = load_volume(study.dwi.image, name=label, limits=self.limits)
        else:
            volume = self._load(call, req.source, req.source.label, req.volume_index)
        volume = dataclasses.replace(volume, source=req.source.name)
        spent = time.perf_counter() - began
        call.timings["decode_validate"] = spent - call.timings.get("download", 0.0)
        adc = self._read_adc(call, study)
        call.check()
        return _Inputs(volume, adc, study)

    def _read_adc(self, call: _Call, study: Any) -> Volume | None:
        """The ADC volume: the one given, else the DICOM study's when scoring."""
        req = call.request
        if req.adc is not None:
            label = req.adc.label or "<ADC>"
            if req.adc.is_dicom:
                volume = self._load_dicom_adc(call, req.adc, label)
            else:
                volume = self._load(call, req.adc, label, None, record=False)
            return dataclasses.replace(volume, source=req.adc.name)
        if study is not None and study.adc is not None and req.wants_score:
            label = req.source.label or req.source.name
            volume = load_volume(study.adc.image, name=f"{label} (ADC)", limits=self.limits)
            return dataclasses.replace(volume, source=f"{req.source.name} (ADC)")
        return None

    def _load(
        self, call: _Call, source: Source, label: str | None, volume_index: int | None,
        record: bool = True,
    ) -> Volume:
        """Download (s3://, within the deadline) or read, then decode and validate one
        NIfTI volume; ``record``: time the download as ``timings["download"]``."""
        if not source.is_s3:
            return load_volume(source.value, name=label, volume_index=volume_index,
                               limits=self.limits)
        began = time.perf_counter()
        stop, expired = call.watch()
        try:
            raw = fetch_object(str(source.value), self._s3_client(),
                               max_bytes=self.s3_settings.max_object_bytes, cancel=stop)
        except CancelledError:
            call.check()
            if expired.is_set():
                raise StorageUnreachableError(
                    f"{label}: the download took longer than the {call.deadline_s:g} s "
                    "per-volume deadline (--deadline); raise --deadline or check the S3 "
                    "endpoint's speed"
                ) from None
            raise
        finally:
            stop.set()  # ends the watcher
        if record:
            call.timings["download"] = time.perf_counter() - began
        return load_volume(raw, name=label, volume_index=volume_index, limits=self.limits)

    def _read_dicom(self, call: _Call, label: str, want_adc: bool) -> Any:
        """The DWI (and, when asked, ADC) series of a DICOM source, within the deadline."""
        read_dicom = rooms.enter("dicom", "read_dicom")
        source = call.request.source
        return self._within_deadline(call, label, lambda stop: read_dicom(
            source.value,
            s3_client=self._s3_client() if source.is_s3 else None,
            label=label,
            limits=self.limits,
            series=call.request.series,
            adc=want_adc,
            max_object_bytes=self.s3_settings.max_object_bytes,
            cancel=stop,
        ))

    def _load_dicom_adc(self, call: _Call, source: Source, label: str) -> Volume:
        """The ADC series of a DICOM ``adc`` source, within the deadline."""
        read_dicom_adc = rooms.enter("dicom", "read_dicom_adc")
        series = self._within_deadline(call, label, lambda stop: read_dicom_adc(
            source.value,
            s3_client=self._s3_client() if source.is_s3 else None,
            label=label,
            limits=self.limits,
            max_object_bytes=self.s3_settings.max_object_bytes,
            cancel=stop,
        ))
        return load_volume(series.image, name=label, limits=self.limits)

    @staticmethod
    def _within_deadline(call: _Call, label: str, read: Callable[[threading.Event], Any]) -> Any:
        """``read(stop)`` of a DICOM source; DicomReadTimeoutError past the deadline."""
        stop, expired = call.watch()
        try:
            return read(stop)
        except CancelledError:
            call.check()
            if expired.is_set():
                raise DicomReadTimeoutError(
                    f"{label}: reading the DICOM series took longer than the "
                    f"{call.deadline_s:g} s per-volume deadline (--deadline); send fewer "
                    "files (the DWI series) or raise --deadline"
                ) from None
            raise
        finally:
            stop.set()  # ends the watcher

    def _infer(self, call: _Call, prepared: PreparedVolume, progress: Progress | None) -> Any:
        """The served labels and confidence of the prepared slices (a ``VolumeAnswer``)."""
        if progress is not None:
            progress(0, len(prepared.slices))
        return call.timed(
            "inference",
            self._segmenter.infer,
            prepared.slices,
            request_id=call.request.request_id,
            cancel=call.cancel,
            progress=(lambda n: progress(n, 0)) if progress is not None else None,
            priority=call.request.priority,
            deadline=call.deadline,
            deadline_s=call.deadline_s,
        )

    def _assemble(
        self, call: _Call, volume: Volume, prepared: PreparedVolume, answer: VolumeAnswer
    ) -> tuple[Assembled, dict[str, Any]]:
        """Contours JSON, label and region maps, QC, and the provenance they record."""
        labels, confidence = answer
        provenance = self._provenance(call, prepared, answer)
        assembled = assemble(volume, prepared, labels, provenance=provenance,
                             slice_confidence=confidence, overlay=False)
        return assembled, provenance

    def _provenance(
        self, call: _Call, prepared: PreparedVolume, answer: VolumeAnswer
    ) -> dict[str, Any]:
        """The version that answered every request of this volume (read from the
        responses), the priority asked for, the steps (unet checkpoint) as served."""
        info = self._segmenter.info
        priority = getattr(answer, "priority", None) or call.request.priority
        return {
            "client": f"aspects_client {__version__}",
            "request_id": call.request.request_id,
            "server": self.url,
            "model": info.name,
            "model_version": getattr(answer, "model_version", None) or info.version,
            "priority": priority or contract.DEFAULT_PRIORITY,
            "steps": info.steps,
            "threshold_prob": contract.THRESHOLD_PROB,
            "min_area_pixels": contract.MIN_AREA_PIXELS,
            "window": {
                "percentiles": list(contract.WINDOW_PERCENTILES),
                "bounds": list(prepared.window),
            },
        }

    def _score(
        self, call: _Call, inputs: _Inputs, prepared: PreparedVolume, answer: VolumeAnswer,
        assembled: Assembled,
    ) -> Any:
        """Lesion map, involvement and the ASPECTS score (the ``score`` room)."""
        score_volume = rooms.enter("score", "score_volume")
        rule = call.request.rule or rooms.enter("score", "ScoringRule")()
        scored = score_volume(
            inputs.volume, prepared, answer[0], assembled.hemispheres, assembled.document["qc"],
            adc=inputs.adc, adc_scale=call.request.adc_scale, rule=rule,
        )
        assembled.document["aspects"] = scored.section
        return scored

    def _render(
        self, volume: Volume, prepared: PreparedVolume, answer: VolumeAnswer,
        assembled: Assembled, scored: Any,
    ) -> bytes:
        """The overlay PNG (title: source, model and the version that answered)."""
        info = self._segmenter.info
        version = getattr(answer, "model_version", None) or info.version
        checkpoint = info.steps.get(contract.UNET_MODEL, {}).get("checkpoint", "")
        return assembled.render(
            prepared,
            title=f"{printable(volume.source)}  ({info.name} v{version})".lstrip(),
            note=f"unet: {checkpoint}" if checkpoint else "",
            scored=scored,
            classes=answer[0],
        )

    def close(self) -> None:
        self._segmenter.close()

    def __enter__(self) -> AspectsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(
    inputs: _Inputs, assembled: Assembled, provenance: dict[str, Any],
    timings: dict[str, float], png: bytes | None, scored: Any,
) -> SegmentationResult:
    """The ``SegmentationResult`` of one call."""
    regions = {
        key: {
            hemi: RegionStats(e["voxels"], e["volume_ml"], e["confidence"])
            for hemi, e in by_hemi.items()
        }
        for key, by_hemi in assembled.document["summary"].items()
    }
    return SegmentationResult(
        source=inputs.volume.source,
        document=assembled.document,
        label_image=assembled.label_image,
        overlay_png=png,
        regions=regions,
        provenance=provenance,
        timings_s=timings,
        lesion_image=scored.lesion_image if scored is not None else None,
        region_image=assembled.region_image,
        dicom=inputs.study,
    )


def _deadline_event(
    cancel: threading.Event | None, seconds: float
) -> tuple[threading.Event, threading.Event]:
    """(stop, expired): ``stop`` is set when ``cancel`` is set or ``seconds`` pass (then
    ``expired`` too), or by the caller when done."""
    stop, expired = threading.Event(), threading.Event()

    def watch() -> None:
        end = time.monotonic() + seconds
        while not stop.wait(max(0.0, min(0.1, end - time.monotonic()))):
            if cancel is not None and cancel.is_set():
                break
            if time.monotonic() >= end:
                expired.set()
                break
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop, expired


__all__ = [
    "AspectsClient",
    "AspectsError",
    "InferenceSettings",
    "Limits",
    "RegionStats",
    "S3Settings",
    "SegmentRequest",
    "SegmentationResult",
    "Source",
    "recorded_name",
]
