"""Contours, QC and maps from a label map someone else made (``aspects contours``): the same
assembly as a served result, without a server.

    result = contours_from_labels("dwi.nii.gz", "labels.nii.gz")
    write_result(plan, result)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from . import contract
from .assemble import assemble
from .client import SegmentationResult
from .display_stack import prepare
from .errors import InvalidVolumeError
from .geometry import to_display
from .sources import recorded_name
from .volume_io import Volume, load_volume


def check_same_grid(volume: Volume, labels: Volume, label_path: str) -> None:
    """The label map must share the volume's shape and affine (to 1e-3 mm)."""
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


def check_class_values(values: np.ndarray, label_path: str) -> None:
    """Whole numbers among the contract's class indices."""
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise InvalidVolumeError(f"{label_path}: label values must be whole numbers")
    if values.size and (values.min() < 0 or values.max() >= contract.NUM_CLASSES):
        raise InvalidVolumeError(
            f"{label_path}: label values must be class indices "
            f"0..{contract.NUM_CLASSES - 1} ({', '.join(contract.CLASS_KEYS)})"
        )


def contours_from_labels(
    volume_path: str | Path,
    label_path: str | Path,
    *,
    name: str | None = None,
    volume_index: int | None = None,
    overlay: bool = True,
) -> SegmentationResult:
    """A result from a volume and a label map of classes 0..10 in its grid (any voxel
    order): contours JSON with QC, label and region maps, overlay PNG (``overlay``)."""
    volume = load_volume(volume_path, volume_index=volume_index)
    labels_vol = load_volume(label_path)
    check_same_grid(volume, labels_vol, str(label_path))
    check_class_values(labels_vol.data, str(label_path))
    recorded = recorded_name(str(volume_path)) if name is None else name
    volume = dataclasses.replace(volume, source=recorded)
    prepared = prepare(volume)
    labels = np.ascontiguousarray(to_display(labels_vol.data, prepared.geometry)).astype(np.uint8)
    provenance: dict[str, Any] = {
        "labels_source": recorded_name(str(label_path)),
        "tool": "aspects contours",
    }
    assembled = assemble(volume, prepared, labels, overlay=overlay, provenance=provenance)
    return SegmentationResult(
        source=volume.source,
        document=assembled.document,
        label_image=assembled.label_image,
        overlay_png=assembled.overlay_png,
        regions={},
        provenance=provenance,
        region_image=assembled.region_image,
    )
