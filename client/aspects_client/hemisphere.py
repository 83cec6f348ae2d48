"""Patient right/left from the affine: the mid-sagittal plane in world space.

The plane is estimated per volume from the labelled pixels: every ASPECTS class is
bilateral, so splitting each class's world points at its own x-centroid gives a left and
a right centroid; their midpoints lie on the mid-sagittal plane and their differences
point to the patient's right.  This follows head tilt (yaw/roll) and never depends on
array order.  Without a usable pair, the plane x = (centre of the field of view) is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import contract
from .geometry import Geometry, apply_affine_points

MIN_PAIR_SEPARATION_MM = 20.0  # left and right centroids of one class at least this apart
MIN_SIDE_FRACTION = 0.2  # each side holds at least this share of the class's pixels


@dataclass(frozen=True)
class MidsagittalPlane:
    """Points p with normal . p > offset_mm are in the patient's right hemisphere."""

    normal: tuple[float, float, float]
    offset_mm: float
    method: str  # "bilateral-centroids" or "fov-centre"

    def side(self, world: np.ndarray) -> np.ndarray:
        """world [P, 3] mm -> uint8 [P] hemisphere codes (contract.HEMISPHERE_CODES)."""
        signed = world @ np.asarray(self.normal) - self.offset_mm
        right = np.uint8(contract.HEMISPHERE_CODES[contract.HEMISPHERE_RIGHT])
        left = np.uint8(contract.HEMISPHERE_CODES[contract.HEMISPHERE_LEFT])
        return np.where(signed > 0, right, left).astype(np.uint8)


def estimate_plane(labels: np.ndarray, geometry: Geometry) -> MidsagittalPlane:
    """Mid-sagittal plane from a display label stack [N, H, W] (class indices)."""
    to_world = geometry.display_to_world
    normals, midpoints, weights = [], [], []
    for region in contract.REGIONS:
        idx = np.argwhere(labels == region.index)
        if len(idx) < 2:
            continue
        world = apply_affine_points(to_world, idx)
        x = world[:, 0]
        right, left = world[x > x.mean()], world[x <= x.mean()]
        if min(len(right), len(left)) < MIN_SIDE_FRACTION * len(world):
            continue
        c_r, c_l = right.mean(axis=0), left.mean(axis=0)
        if c_r[0] - c_l[0] < MIN_PAIR_SEPARATION_MM:
            continue
        normals.append((c_r - c_l) / np.linalg.norm(c_r - c_l))
        midpoints.append((c_r + c_l) / 2.0)
        weights.append(float(len(world)))
    if normals:
        w = np.asarray(weights)[:, None]
        normal = (np.asarray(normals) * w).sum(axis=0)
        normal /= np.linalg.norm(normal)
        point = (np.asarray(midpoints) * w).sum(axis=0) / w.sum()
        return MidsagittalPlane(_tuple3(normal), float(normal @ point), "bilateral-centroids")
    n, h, w_ = geometry.display_shape
    centre = apply_affine_points(to_world, [[(n - 1) / 2, (h - 1) / 2, (w_ - 1) / 2]])[0]
    return MidsagittalPlane((1.0, 0.0, 0.0), float(centre[0]), "fov-centre")


def hemisphere_map(labels: np.ndarray, geometry: Geometry, plane: MidsagittalPlane) -> np.ndarray:
    """uint8 [N, H, W]: hemisphere code of every labelled pixel, 0 elsewhere."""
    out = np.zeros(labels.shape, dtype=np.uint8)
    idx = np.nonzero(labels)
    if idx[0].size:
        world = apply_affine_points(geometry.display_to_world, np.stack(idx, axis=1))
        out[idx] = plane.side(world)
    return out


def _tuple3(v: np.ndarray) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])
