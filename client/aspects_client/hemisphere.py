"""Patient right/left from the affine: the mid-sagittal plane in world space.

The plane is estimated per volume from the labelled pixels: every ASPECTS class is
bilateral, so splitting each class's world points at its own x-centroid gives a left and
a right centroid; their midpoints lie on the mid-sagittal plane and their differences
point to the patient's right.  This follows head tilt (yaw/roll) and never depends on
array order.

When that fails (no labels, one class, a few pixels, regions on one side only) or, given
the display image, when the plane would leave less than ``MIN_HEAD_SIDE_FRACTION`` of
the head on one side, a stated fallback is used: the world-x centroid of the head in the
image (``head-centroid``), else the centre of the field of view (``fov-centre``), both
with the world x axis as the normal.  Every plane has finite numbers; a fallback is
flagged by ``qc.check_midsagittal_plane``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import contract
from .geometry import Geometry, apply_affine_points

MIN_PAIR_SEPARATION_MM = 20.0  # left and right centroids of one class at least this apart
MIN_SIDE_FRACTION = 0.2  # each side holds at least this share of the class's pixels
MIN_SIDE_PIXELS = 8  # ... and at least this many pixels (a few stray pixels are no pair)
GAP_MM = 3.0  # a bilateral class has (almost) no pixels within this distance of its split
MAX_GAP_FRACTION = 0.02  # ... at most this share; a one-sided class fails this test
MAX_OFFSET_SPREAD_MM = 5.0  # classes whose midpoints disagree with the median are dropped
HEAD_LEVEL = contract.QC_HEAD_LEVEL  # display pixels (uint8) >= this are head
MIN_HEAD_PIXELS = 100  # fewer head pixels than this: no head centroid
MIN_HEAD_SIDE_FRACTION = 0.25  # a labels' plane must leave this share of the head each side

METHOD_BILATERAL = "bilateral-centroids"
METHOD_HEAD = "head-centroid"
METHOD_FOV = "fov-centre"
METHODS: tuple[str, ...] = (METHOD_BILATERAL, METHOD_HEAD, METHOD_FOV)


@dataclass(frozen=True)
class MidsagittalPlane:
    """Points p (world mm) with normal . p > offset_mm are in the patient's right hemisphere.

    method: ``METHOD_BILATERAL`` (from the labels), or a fallback: ``METHOD_HEAD`` (the
    plane x = world-x centroid of the head) or ``METHOD_FOV`` (x = centre of the field of
    view).  normal is a unit vector; every number is finite.
    """

    normal: tuple[float, float, float]
    offset_mm: float
    method: str

    @property
    def is_fallback(self) -> bool:
        return self.method != METHOD_BILATERAL


def estimate_plane(
    labels: np.ndarray, geometry: Geometry, image: np.ndarray | None = None
) -> MidsagittalPlane:
    """Mid-sagittal plane from a display label stack [N, H, W] (class indices).

    image: optional uint8 [N, H, W] windowed display slices of the same volume; with it, a
    labels' plane that leaves less than MIN_HEAD_SIDE_FRACTION of the head pixels on one
    side is rejected and the fallback is the head's own centroid.
    """
    if image is not None and image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ")
    plane = bilateral_plane(labels, geometry)
    if plane is not None and (image is None or _splits_head(plane, image, geometry)):
        return plane
    return fallback_plane(geometry, image)


def fallback_plane(geometry: Geometry, image: np.ndarray | None = None) -> MidsagittalPlane:
    """x = world-x centroid of the head in image (uint8 [N, H, W]), else x = the centre of
    the field of view; normal (1, 0, 0)."""
    if image is not None:
        x = head_centroid_x(image, geometry)
        if x is not None:
            return MidsagittalPlane((1.0, 0.0, 0.0), x, METHOD_HEAD)
    n, h, w = geometry.display_shape
    centre = apply_affine_points(
        geometry.display_to_world, [[(n - 1) / 2, (h - 1) / 2, (w - 1) / 2]]
    )[0]
    return MidsagittalPlane((1.0, 0.0, 0.0), float(centre[0]), METHOD_FOV)


def head_centroid_x(image: np.ndarray, geometry: Geometry) -> float | None:
    """World x (mm) of the centroid of the pixels >= HEAD_LEVEL of uint8 display slices
    [N, H, W]; None with fewer than MIN_HEAD_PIXELS.  One slice at a time (no volume mask).
    """
    n_slices, h, w = image.shape
    count = 0
    sums = np.zeros(3)  # sum of (n, row, col) over head pixels
    for n in range(n_slices):
        mask = image[n] >= HEAD_LEVEL
        per_row = np.count_nonzero(mask, axis=1)
        k = int(per_row.sum())
        if k:
            count += k
            sums += (n * k, per_row @ np.arange(h), np.count_nonzero(mask, axis=0) @ np.arange(w))
    if count < MIN_HEAD_PIXELS:
        return None
    x = float(apply_affine_points(geometry.display_to_world, (sums / count)[None])[0, 0])
    return x if np.isfinite(x) else None


def _splits_head(plane: MidsagittalPlane, image: np.ndarray, geometry: Geometry) -> bool:
    """True when each side of the plane holds >= MIN_HEAD_SIDE_FRACTION of the head pixels
    of image (uint8 [N, H, W]), or when the image shows too little head to judge."""
    n_slices, h, w = image.shape
    m = geometry.display_to_world
    coef = np.asarray(plane.normal) @ m[:3, :3]  # signed distance per (n, row, col) step
    base = coef[1] * np.arange(h, dtype=np.float64)[:, None] + coef[2] * np.arange(w)
    start = float(np.asarray(plane.normal) @ m[:3, 3]) - plane.offset_mm
    head = right = 0
    for n in range(n_slices):
        mask = image[n] >= HEAD_LEVEL
        head += int(np.count_nonzero(mask))
        right += int(np.count_nonzero(mask & (base > -(start + coef[0] * n))))
    if head < MIN_HEAD_PIXELS:
        return True
    return min(right, head - right) >= MIN_HEAD_SIDE_FRACTION * head


def bilateral_plane(labels: np.ndarray, geometry: Geometry) -> MidsagittalPlane | None:
    """The plane from regions labelled on both sides, or None when no class qualifies.

    Vectorised: one pass over the labelled pixels, per-class sums with np.bincount;
    only the per-class centroids are mapped to world space.
    """
    to_world = geometry.display_to_world
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    if not idx.size:
        return None
    cls = flat[idx].astype(np.intp)
    nrc = np.unravel_index(idx, labels.shape)
    x = to_world[0, 3] + sum(to_world[0, a] * nrc[a] for a in range(3))
    n_classes = max(contract.NUM_CLASSES, int(cls.max()) + 1)
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
    normals, midpoints, weights = [], [], []
    for region in contract.REGIONS:
        c = region.index
        n_left, n_right = g_count[2 * c], g_count[2 * c + 1]
        if min(n_left, n_right) < max(MIN_SIDE_FRACTION * count[c], MIN_SIDE_PIXELS):
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
    if not normals:
        return None
    return _combine(np.asarray(normals), np.asarray(midpoints), np.asarray(weights))


def _combine(
    normals: np.ndarray, midpoints: np.ndarray, weights: np.ndarray
) -> MidsagittalPlane | None:
    """Weighted plane of per-class unit normals [K, 3] and midpoints [K, 3] (mm); classes
    whose offset is more than MAX_OFFSET_SPREAD_MM from the weighted median are dropped
    (the median class itself is always kept).  None if a number is not finite."""
    normal = (normals * weights[:, None]).sum(axis=0)
    length = float(np.linalg.norm(normal))
    if not (np.isfinite(length) and length > 0):
        return None
    normal /= length
    offsets = midpoints @ normal
    order = np.argsort(offsets)
    cumulative = np.cumsum(weights[order])
    median = offsets[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)]
    keep = np.abs(offsets - median) <= MAX_OFFSET_SPREAD_MM
    offset = float((offsets[keep] * weights[keep]).sum() / weights[keep].sum())
    if not (np.all(np.isfinite(normal)) and np.isfinite(offset)):
        return None
    return MidsagittalPlane(_tuple3(normal), offset, METHOD_BILATERAL)


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
