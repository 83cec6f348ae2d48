"""Contours JSON -> label and hemisphere maps in the ORIGINAL file's grid.

The inverse of contours extraction, used by tests and by consumers who want masks back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import contract
from .contours import Polygon, fill_polygons


def rasterize_document(document: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """-> (classes uint8 [X, Y, Z], hemisphere codes uint8 [X, Y, Z]) in the source grid."""
    shape = tuple(document["source"]["shape"])
    axis = int(document["source"]["slice_axis"])
    plane_axes = [a for a in range(3) if a != axis]
    plane_shape = (shape[plane_axes[1]], shape[plane_axes[0]])  # rows = 2nd, cols = 1st
    classes = np.zeros(shape, dtype=np.uint8)
    hemis = np.zeros(shape, dtype=np.uint8)
    for entry in document["slices"]:
        k = int(entry["slice_index"])
        index: list[Any] = [slice(None)] * 3
        index[axis] = k
        cls_plane = classes[tuple(index)]  # view [shape[a0], shape[a1]]
        hem_plane = hemis[tuple(index)]
        for key, per_hemi in entry["regions"].items():
            cls = contract.REGION_BY_KEY[key].index
            for hemi, rings in per_hemi.items():
                if not rings:
                    continue
                polys = [
                    Polygon(
                        _xy(ring["voxels"], plane_axes),
                        tuple(_xy(h["voxels"], plane_axes) for h in ring.get("holes", [])),
                    )
                    for ring in rings
                ]
                mask = fill_polygons(plane_shape, polys).T.astype(bool)
                cls_plane[mask] = cls
                hem_plane[mask] = contract.HEMISPHERE_CODES[hemi]
    return classes, hemis


def _xy(voxels: list[list[int]], plane_axes: list[int]) -> np.ndarray:
    """[P, 3] voxel indices -> [P, 2] (x = first in-plane axis, y = second) int32."""
    v = np.asarray(voxels, dtype=np.int32)
    return np.column_stack([v[:, plane_axes[0]], v[:, plane_axes[1]]])
