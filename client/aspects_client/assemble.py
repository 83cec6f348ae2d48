"""Display labels -> everything a caller gets back: contours JSON (with its QC), label map,
overlay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from . import contract
from .contours import SliceContours, extract_contours
from .display_stack import PreparedVolume
from .document import build_document
from .hemisphere import estimate_plane, hemisphere_map
from .labelmap import label_map_image, region_hemisphere_image
from .overlay import render_overlay
from .qc import quality_control
from .volume_io import Volume


@dataclass
class Assembled:
    """document: contours JSON (dict, with its ``qc``); label_image: uint8 NIfTI in the
    source grid; hemispheres: uint8 [N, H, W] display-stack codes; overlay_png: PNG bytes or
    None."""

    document: dict[str, Any]
    label_image: nib.Nifti1Image
    hemispheres: np.ndarray
    contours: list[SliceContours]
    overlay_png: bytes | None
    region_image: nib.Nifti1Image | None = None  # 20 region x hemisphere labels, source grid

    def render(
        self,
        prepared: PreparedVolume,
        *,
        title: str,
        note: str = "",
        scored: Any = None,
        classes: np.ndarray | None = None,
    ) -> bytes:
        """The overlay PNG of this result (the one renderer of the client, the CLI and the
        demo): contours on ``prepared``'s slices, the QC banner, and with ``scored`` (a
        ``scoring.Scored``) the score band and the lesion outline; ``classes``: the display
        labels, for the affected regions' fill."""
        return render_overlay(
            prepared.slices,
            self.contours,
            prepared.geometry,
            title=title,
            note=note,
            qc=self.document["qc"],
            score=scored.section if scored is not None else None,
            lesion=scored.lesion if scored is not None else None,
            classes=classes,
            hemispheres=self.hemispheres if classes is not None else None,
        )


def assemble(
    volume: Volume,
    prepared: PreparedVolume,
    labels: np.ndarray,
    *,
    provenance: dict[str, Any] | None = None,
    slice_confidence: np.ndarray | None = None,
    overlay: bool = True,
    overlay_note: str = "",
) -> Assembled:
    """labels: uint8 [N, H, W] class indices on ``prepared.slices``' display grid.

    slice_confidence: float32 [N, 11], the served CONFIDENCE of each slice; when given, the
    summary carries each region's confidence per hemisphere (``hemisphere_confidence``).
    Every document gets its quality-control object (``document["qc"]``, ``aspects_client.qc``)
    computed from these labels and the windowed slices they were predicted on."""
    if labels.shape != prepared.slices.shape:
        raise ValueError(f"labels {labels.shape} != slices {prepared.slices.shape}")
    geometry = prepared.geometry
    plane = estimate_plane(labels, geometry, prepared.slices)
    hemis = hemisphere_map(labels, geometry, plane)
    contours = extract_contours(labels, hemis)
    document = build_document(
        contours,
        geometry,
        plane,
        source_name=volume.source,
        provenance=provenance,
        confidence=None
        if slice_confidence is None
        else hemisphere_confidence(labels, hemis, slice_confidence),
    )
    document["qc"] = quality_control(
        document, labels, prepared.slices, pixel_spacing_mm=geometry.display_pixel_spacing_mm
    )
    result = Assembled(
        document=document,
        label_image=label_map_image(labels, geometry, volume.header),
        region_image=region_hemisphere_image(labels, hemis, geometry, volume.header),
        hemispheres=hemis,
        contours=contours,
        overlay_png=None,
    )
    if overlay:
        result.overlay_png = result.render(prepared, title=volume.source, note=overlay_note)
    return result


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
