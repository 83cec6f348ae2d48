"""The public API the radiology back-end calls: ``AspectsClient(url=...).segment(source)``.

    with AspectsClient(url="triton:8001", s3=S3Settings(endpoint_url=...)) as client:
        result = client.segment("s3://bucket/case/dwi.nii.gz")
        result.document          # contours JSON (dict), result.contours_json() -> str
        result.label_image       # uint8 NIfTI in the source grid
        result.overlay_png       # PNG bytes for a person
        result.regions["m1"]["r"].volume_ml, .confidence
        result.qc                # quality control: {"passed", "flags", "checks"}
        result.provenance        # model, version, thresholds, timings per stage

One client serves many volumes at once from a thread pool: the gRPC channel and the
boto3 client are shared and thread-safe; each call keeps its own buffers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from . import __version__, contract
from .assemble import assemble
from .document import dumps
from .errors import AspectsError
from .inference import InferenceSettings, TritonSegmenter
from .labelmap import label_map_bytes
from .slicing import prepare
from .storage import S3Settings, fetch_object, is_s3_url, make_s3_client
from .volume_io import Limits, load_volume

Source = str | Path | bytes | bytearray | memoryview | nib.spatialimages.SpatialImage


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
    ) -> None:
        self.url = url
        self.s3_settings = s3
        self.limits = limits
        self.overlay = overlay
        self._segmenter = TritonSegmenter(url, inference)
        self._s3: Any = None

    @property
    def model_info(self):
        return self._segmenter.info

    def _s3_client(self) -> Any:
        if self._s3 is None:
            self._s3 = make_s3_client(self.s3_settings)
        return self._s3

    def segment(
        self, source: Source, *, name: str | None = None, volume_index: int | None = None
    ) -> SegmentationResult:
        """Segment one volume: an ``s3://`` URL, a path, bytes or a nibabel image."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        label = name or (str(source) if isinstance(source, (str, Path)) else None)
        if is_s3_url(source):
            raw: Any = fetch_object(
                str(source), self._s3_client(), max_bytes=self.s3_settings.max_object_bytes
            )
            timings["download"] = time.perf_counter() - t
            t = time.perf_counter()
            volume = load_volume(raw, name=label, volume_index=volume_index, limits=self.limits)
            del raw
        else:
            volume = load_volume(source, name=label, volume_index=volume_index, limits=self.limits)
        timings["decode_validate"] = time.perf_counter() - t
        t = time.perf_counter()
        prepared = prepare(volume)
        timings["prepare"] = time.perf_counter() - t
        t = time.perf_counter()
        labels, confidence = self._segmenter.infer(prepared.slices)
        timings["inference"] = time.perf_counter() - t
        t = time.perf_counter()
        info = self._segmenter.info
        provenance = {
            "client": f"aspects_client {__version__}",
            "server": self.url,
            "model": info.name,
            "model_version": info.version,
            "steps": info.steps,
            "threshold_prob": contract.THRESHOLD_PROB,
            "min_area_pixels": contract.MIN_AREA_PIXELS,
            "window": {
                "percentiles": list(contract.WINDOW_PERCENTILES),
                "bounds": list(prepared.window),
            },
        }
        result = assemble(volume, prepared, labels, provenance=provenance, overlay=False)
        per_hemi_conf = hemisphere_confidence(labels, result.hemispheres, confidence)
        for key, by_hemi in result.document["summary"].items():
            for hemi, entry in by_hemi.items():
                entry["confidence"] = round(per_hemi_conf[key][hemi], 4)
        timings["contours_json"] = time.perf_counter() - t
        png = None
        if self.overlay:
            t = time.perf_counter()
            from .overlay import render_overlay

            checkpoint = info.steps.get(contract.UNET_MODEL, {}).get("checkpoint", "")
            png = render_overlay(
                prepared.slices,
                result.contours,
                prepared.geometry,
                title=f"{volume.source}  ({info.name} v{info.version})",
                note=f"unet: {checkpoint}" if checkpoint else "",
                qc=result.document["qc"],
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
        )

    def close(self) -> None:
        self._segmenter.close()

    def __enter__(self) -> AspectsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hemisphere_confidence(
    labels: np.ndarray, hemispheres: np.ndarray, confidence: np.ndarray
) -> dict[str, dict[str, float]]:
    """Per region and hemisphere: the slices' class confidence (CONFIDENCE [N, 11]) averaged
    with weights = that hemisphere's pixels of the class in each slice; 0 where absent."""
    n = labels.shape[0]
    codes = labels.reshape(n, -1).astype(np.int64) * 4 + hemispheres.reshape(n, -1)
    counts = np.stack([np.bincount(c, minlength=4 * contract.NUM_CLASSES) for c in codes])
    out: dict[str, dict[str, float]] = {}
    for region in contract.REGIONS:
        out[region.key] = {}
        for hemi, code in contract.HEMISPHERE_CODES.items():
            w = counts[:, region.index * 4 + code].astype(np.float64)
            total = w.sum()
            out[region.key][hemi] = (
                float((w * confidence[:, region.index]).sum() / total) if total else 0.0
            )
    return out


__all__ = [
    "AspectsClient",
    "AspectsError",
    "InferenceSettings",
    "Limits",
    "RegionStats",
    "S3Settings",
    "SegmentationResult",
]
