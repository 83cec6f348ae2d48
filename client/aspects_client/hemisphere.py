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
GAP_MM = 3.0  # a bilateral class has (almost) no pixels within this distance of its split
MAX_GAP_FRACTION = 0.02  # ... at most this share; a one-sided class fails this test
MAX_OFFSET_SPREAD_MM = 5.0  # classes whose midpoints disagree with the median are dropped


@dataclass(frozen=True)
class MidsagittalPlane:
    """Points p with normal . p > offset_mm are in the patient's right hemisphere."""

    normal: tuple[float, float, float]
    offset_mm: float
    method: str  # "bilateral-centroids" or "fov-centre"


def estimate_plane(labels: np.ndarray, geometry: Geometry) -> MidsagittalPlane:
    """Mid-sagittal plane from a display label stack [N, H, W] (class indices).

    Vectorised: one pass over the labelled pixels, per-class sums with np.bincount;
    only the per-class centroids are mapped to world space.
    """
    to_world = geometry.display_to_world
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    normals, midpoints, weights = [], [], []
    if idx.size:
        cls = flat[idx].astype(np.intp)
        nrc = np.unravel_index(idx, labels.shape)
        x = to_world[0, 3] + sum(to_world[0, a] * nrc[a] for a in range(3))
        n_classes = contract.NUM_CLASSES
        count = np.bincount(cls, minlength=n_classes).astype(np.float64)
        mean_x = np.bincount(cls, weights=x, minlength=n_classes) / np.maximum(count, 1)
        near_split = np.abs(x - mean_x[cls]) < GAP_MM
        n_near = np.bincount(cls, weights=near_split, minlength=n_classes)
        right = x > mean_x[cls]
        group = cls * 2 + right  # 2c = left part of class c, 2c+1 = right part
        g_count = np.bincount(group, minlength=2 * n_classes).astype(np.float64)
        g_sum = np.stack(
            [np.bincount(group, weights=nrc[a], minlength=2 * n_classes) for a in range(3)],
            axis=1,
        )
        for region in contract.REGIONS:
            c = region.index
            n_left, n_right = g_count[2 * c], g_count[2 * c + 1]
            if count[c] < 2 or min(n_left, n_right) < MIN_SIDE_FRACTION * count[c]:
                continue
            if n_near[c] > MAX_GAP_FRACTION * count[c]:  # one region, not a left/right pair
                continue
            c_l = apply_affine_points(to_world, g_sum[2 * c][None] / n_left)[0]
            c_r = apply_affine_points(to_world, g_sum[2 * c + 1][None] / n_right)[0]
            if c_r[0] - c_l[0] < MIN_PAIR_SEPARATION_MM:
                continue
            normals.append((c_r - c_l) / np.linalg.norm(c_r - c_l))
            midpoints.append((c_r + c_l) / 2.0)
            weights.append(float(count[c]))
    if normals:
        w = np.asarray(weights)
        normal = (np.asarray(normals) * w[:, None]).sum(axis=0)
        normal /= np.linalg.norm(normal)
        offsets = np.asarray(midpoints) @ normal
        keep = np.abs(offsets - np.median(offsets)) <= MAX_OFFSET_SPREAD_MM
        offset = float((offsets[keep] * w[keep]).sum() / w[keep].sum())
        return MidsagittalPlane(_tuple3(normal), offset, "bilateral-centroids")
    n, h, w_ = geometry.display_shape
    centre = apply_affine_points(to_world, [[(n - 1) / 2, (h - 1) / 2, (w_ - 1) / 2]])[0]
    return MidsagittalPlane((1.0, 0.0, 0.0), float(centre[0]), "fov-centre")


def hemisphere_map(labels: np.ndarray, geometry: Geometry, plane: MidsagittalPlane) -> np.ndarray:
    """uint8 [N, H, W]: hemisphere code of every labelled pixel, 0 elsewhere.

    The signed distance to the plane is linear in (n, row, col), so it is evaluated
    directly on the indices of the labelled pixels.
    """
    out = np.zeros(labels.shape, dtype=np.uint8)
    idx = np.flatnonzero(labels.ravel())
    if idx.size:
        m = geometry.display_to_world
        normal = np.asarray(plane.normal)
        coef = normal @ m[:3, :3]
        signed = float(normal @ m[:3, 3]) - plane.offset_mm
        nrc = np.unravel_index(idx, labels.shape)
        signed = signed + sum(coef[a] * nrc[a] for a in range(3))
        right = np.uint8(contract.HEMISPHERE_CODES[contract.HEMISPHERE_RIGHT])
        left = np.uint8(contract.HEMISPHERE_CODES[contract.HEMISPHERE_LEFT])
        out.ravel()[idx] = np.where(signed > 0, right, left)
    return out


def _tuple3(v: np.ndarray) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])
