"""Display label stack -> polygons per slice, region and hemisphere (OpenCV).

Polygons are rings of boundary-pixel centres as ``cv2.findContours`` returns them with
``RETR_CCOMP`` (outer rings and their holes) and ``CHAIN_APPROX_SIMPLE`` (every edge is
horizontal, vertical or diagonal, so filling the ring reproduces the pixels exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from . import contract


@dataclass(frozen=True)
class Polygon:
    """outer: int32 [P, 2] display (col, row) points; holes: list of the same."""

    outer: np.ndarray
    holes: tuple[np.ndarray, ...] = ()


@dataclass
class SliceContours:
    """Polygons and pixel counts of one display slice, keyed by (region key, hemisphere)."""

    index: int
    polygons: dict[tuple[str, str], list[Polygon]] = field(default_factory=dict)
    pixels: dict[tuple[str, str], int] = field(default_factory=dict)


_HEMI_BY_CODE = {code: key for key, code in contract.HEMISPHERE_CODES.items()}


def extract_contours(labels: np.ndarray, hemispheres: np.ndarray) -> list[SliceContours]:
    """labels: uint8 [N, H, W] classes; hemispheres: uint8 [N, H, W] codes -> N slices."""
    if labels.shape != hemispheres.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and hemispheres {hemispheres.shape} differ")
    out = []
    for n in range(labels.shape[0]):
        combined = labels[n].astype(np.int32) * 4 + hemispheres[n]
        counts = np.bincount(combined.ravel(), minlength=4 * contract.NUM_CLASSES)
        entry = SliceContours(index=n)
        for code in np.flatnonzero(counts):
            cls, hemi = divmod(int(code), 4)
            if cls == contract.BACKGROUND_INDEX or hemi not in _HEMI_BY_CODE:
                continue
            key = (contract.REGION_BY_INDEX[cls].key, _HEMI_BY_CODE[hemi])
            mask = (combined == code).astype(np.uint8)
            entry.polygons[key] = polygons_of_mask(mask)
            entry.pixels[key] = int(counts[code])
        out.append(entry)
    return out


def polygons_of_mask(mask: np.ndarray) -> list[Polygon]:
    """uint8 [H, W] binary mask -> outer rings with their holes."""
    rings, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    holes: dict[int, list[np.ndarray]] = {}
    for i, (_next, _prev, _child, parent) in enumerate(hierarchy):
        if parent >= 0:
            holes.setdefault(int(parent), []).append(rings[i].reshape(-1, 2))
    return [
        Polygon(rings[i].reshape(-1, 2), tuple(holes.get(i, ())))
        for i, (_n, _p, _c, parent) in enumerate(hierarchy)
        if parent < 0
    ]


def fill_polygons(shape: tuple[int, int], polygons: list[Polygon], value: int = 1) -> np.ndarray:
    """Rasterise polygons (display (col, row) points) into a uint8 [H, W] mask.

    Each polygon is drawn on its own: outer ring filled (edges included), holes carved,
    then the hole rings (which run through boundary pixels) drawn back.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    for poly in polygons:
        one = np.zeros(shape, dtype=np.uint8)
        outer = [poly.outer.astype(np.int32).reshape(-1, 1, 2)]
        cv2.fillPoly(one, outer, 1)
        cv2.polylines(one, outer, True, 1)
        for hole in poly.holes:
            ring = [hole.astype(np.int32).reshape(-1, 1, 2)]
            cv2.fillPoly(one, ring, 0)
            cv2.polylines(one, ring, True, 1)
        mask[one > 0] = value
    return mask
