"""Synthetic DWI-like phantoms with exact ASPECTS labels.

A head (the MNI152 FAST tissue map and the ASPECTS atlas) is placed in the world with a
seeded rigid pose, ``world = R · mni + t``, and sampled on an acquisition grid of any size
whose voxels are stored RAS (optionally tilted).  Labels are the atlas at each voxel centre
(nearest neighbour), so they are the truth by construction; intensities look like a b1000
trace image (GM brighter than WM, dark CSF, bright lesions), with partial volume across the
slice, a smooth bias field and Rician noise.  Same seed and arguments → identical bytes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine

from aspects_client import contract

from .atlas import TISSUE_CSF, TISSUE_GM, TISSUE_WM, load_atlas

# Relative b1000 signal per FAST tissue code (GM = 1); lesions are LESION_FACTOR × GM.
TISSUE_SIGNAL: dict[int, float] = {TISSUE_CSF: 0.2, TISSUE_GM: 1.0, TISSUE_WM: 0.7}
LESION_FACTOR = 2.5
SIGNAL_SCALE = 1000.0  # stored value of unbiased, noise-free GM
MNI_CENTRE_XY: tuple[float, float] = (0.0, -18.0)  # grid centre (x, y) in MNI mm
SUBSAMPLE_MM = 1.0  # partial-volume sub-sample spacing (the tissue map's resolution)
MAX_SUBSAMPLES = 5  # per axis


@dataclass(frozen=True)
class Phantom:
    """A synthetic volume and its exact truth, all arrays in the image's voxel order.

    ``image``: float32 3D Nifti1Image (affine voxel → world RAS mm).
    ``classes``: uint8, image shape, contract class 0..10.
    ``hemispheres``: uint8, image shape, 0 none or ``contract.HEMISPHERE_CODES`` (patient side).
    ``seed``: the seed it was made from.
    ``tissue``: uint8, image shape, FAST code at the voxel centre (0 bg, 1 CSF, 2 GM, 3 WM).
    ``world_from_mni``: 4×4 rigid pose of the head (world = R · mni + t).
    """

    image: nib.Nifti1Image
    classes: np.ndarray
    hemispheres: np.ndarray
    seed: int
    tissue: np.ndarray
    world_from_mni: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        """4×4 voxel → world (RAS mm) affine of the image."""
        return self.image.affine

    def label_image(self) -> nib.Nifti1Image:
        """The classes as a uint8 Nifti1Image with the image's affine."""
        img = nib.Nifti1Image(self.classes, self.image.affine)
        img.set_data_dtype(np.uint8)
        return img


# --- small pure geometry helpers ----------------------------------------------------------


def rotation_matrix(axis: Sequence[float], angle_deg: float) -> np.ndarray:
    """3×3 rotation by ``angle_deg`` degrees about ``axis`` (right hand rule)."""
    u = np.asarray(axis, float)
    u = u / np.linalg.norm(u)
    a = math.radians(angle_deg)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def euler_rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """3×3 rotation Rz · Ry · Rx from angles (about x, y, z) in degrees."""
    rx, ry, rz = (rotation_matrix(ax, a) for ax, a in zip(np.eye(3), angles_deg, strict=True))
    return rz @ ry @ rx


def random_pose(
    rng: np.random.Generator, max_rotation_deg: float, max_translation_mm: float
) -> np.ndarray:
    """4×4 world-from-MNI rigid pose: rotation ≤ max about a random axis, shift ≤ max mm."""
    axis = rng.standard_normal(3)
    angle = rng.uniform(-max_rotation_deg, max_rotation_deg)
    direction = rng.standard_normal(3)
    shift = rng.uniform(0.0, max_translation_mm)
    pose = np.eye(4)
    pose[:3, :3] = rotation_matrix(axis, angle)
    pose[:3, 3] = direction / np.linalg.norm(direction) * shift
    return pose


def grid_affine(
    shape: tuple[int, int, int],
    voxel_mm: tuple[float, float, float],
    centre_mm: Sequence[float],
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """4×4 voxel → world affine of an RAS grid centred on ``centre_mm``.

    ``rotation_deg`` (about x, y, z) tilts the grid about its own centre:
    affine = T(c) · R_grid · T(−c) · axis-aligned affine.
    """
    aligned = np.diag([*voxel_mm, 1.0])
    centre_vox = (np.asarray(shape, float) - 1) / 2
    aligned[:3, 3] = np.asarray(centre_mm, float) - np.asarray(voxel_mm) * centre_vox
    tilt = np.eye(4)
    tilt[:3, :3] = euler_rotation(rotation_deg)
    tilt[:3, 3] = np.asarray(centre_mm, float) - tilt[:3, :3] @ np.asarray(centre_mm, float)
    return tilt @ aligned


def sample_nearest(
    volume: np.ndarray, vox_from_points: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Nearest-neighbour values of ``volume`` at ``points`` [..., 3]; 0 outside the volume.

    ``vox_from_points`` maps the points' space to the volume's voxel indices (e.g. the
    inverse of the volume's affine for world/MNI mm points).
    """
    return nearest_at(volume, np.moveaxis(apply_affine(vox_from_points, points), -1, 0))


def sample_linear(
    volume: np.ndarray, vox_from_points: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Trilinear float32 values of ``volume`` at ``points`` [..., 3]; 0 outside the volume."""
    return linear_at(volume, np.moveaxis(apply_affine(vox_from_points, points), -1, 0))


def slice_coords(vox_from_grid: np.ndarray, shape: Sequence[int], k: float) -> np.ndarray:
    """Target voxel coordinates [3, nx, ny] of grid slice ``k`` under a 4×4 affine.

    The same numbers as ``apply_affine(vox_from_grid, ijk)`` for the slice's (i, j, k),
    computed by broadcasting (no BLAS call, no [nx·ny, 3] temporaries).
    """
    i = np.arange(shape[0], dtype=np.float64)[:, None]
    j = np.arange(shape[1], dtype=np.float64)[None, :]
    m = vox_from_grid
    return np.stack([m[a, 0] * i + (m[a, 1] * j + (m[a, 2] * k + m[a, 3])) for a in range(3)])


def nearest_index(shape: Sequence[int], coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat C-order index of the nearest voxel and an inside mask, for coords [3, ...].

    Outside points get index 0 and ``inside`` False.
    """
    flat = np.zeros(coords.shape[1:], np.intp)
    inside = np.ones(coords.shape[1:], bool)
    stride = 1
    for axis in (2, 1, 0):
        idx = np.rint(coords[axis]).astype(np.intp)
        inside &= (idx >= 0) & (idx < shape[axis])
        flat += idx * stride
        stride *= shape[axis]
    flat[~inside] = 0
    return flat, inside


def nearest_at(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Nearest-neighbour values of ``volume`` at voxel coordinates [3, ...]; 0 outside."""
    flat, inside = nearest_index(volume.shape, coords)
    return take_inside(volume, flat, inside)


def take_inside(volume: np.ndarray, flat: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``volume`` at flat indices, 0 where not ``inside`` (same dtype as ``volume``)."""
    values = volume.reshape(-1)[flat]
    values[~inside] = 0
    return values


def linear_at(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear float32 values of a 3D ``volume`` at voxel coordinates [3, ...]; 0 outside.

    Every axis of ``volume`` must have at least 2 voxels.
    """
    flat = volume.reshape(-1)
    strides = (volume.shape[1] * volume.shape[2], volume.shape[2], 1)
    inside = np.ones(coords.shape[1:], bool)
    origin = np.zeros(coords.shape[1:], np.intp)
    fracs = []
    for axis, (n, stride) in enumerate(zip(volume.shape, strides, strict=True)):
        c = coords[axis]
        inside &= (c >= 0) & (c <= n - 1)
        c = np.clip(c, 0, n - 1)
        base = np.minimum(c.astype(np.intp), n - 2)  # floor, as c >= 0
        fracs.append((c - base).astype(np.float32))
        origin += base * stride
    fx, fy, fz = fracs
    sx, sy, sz = strides

    def along_z(offset: int) -> np.ndarray:
        lo = flat[origin + offset]
        return lo + (flat[origin + offset + sz] - lo) * fz

    def along_y(offset: int) -> np.ndarray:
        lo = along_z(offset)
        return lo + (along_z(offset + sy) - lo) * fy

    lo = along_y(0)
    out = lo + (along_y(sx) - lo) * fx
    out *= inside
    return out


def subsample_offsets(voxel_mm: Sequence[float]) -> np.ndarray:
    """Voxel-unit offsets [M, 3] that tile a voxel at about SUBSAMPLE_MM spacing."""
    per_axis = []
    for size in voxel_mm:
        n = int(min(MAX_SUBSAMPLES, max(1, round(size / SUBSAMPLE_MM))))
        per_axis.append((np.arange(n) + 0.5) / n - 0.5)
    grids = np.meshgrid(*per_axis, indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=-1)


def _smooth121(volume: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 smoothing along every axis (edges replicated)."""
    out = volume.astype(np.float32)
    for axis in range(out.ndim):
        padded = np.concatenate([np.take(out, [0], axis), out, np.take(out, [-1], axis)], axis=axis)
        n = out.shape[axis]
        lo, mid, hi = (np.take(padded, range(s, s + n), axis) for s in (0, 1, 2))
        out = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return out


def _check_lesions(lesions: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    out = []
    for key, hemi in lesions:
        if key not in contract.REGION_BY_KEY or hemi not in contract.HEMISPHERES:
            raise ValueError(
                f"lesion ({key!r}, {hemi!r}): region must be one of {contract.REGION_KEYS} "
                f"and hemisphere one of {contract.HEMISPHERES}"
            )
        out.append((key, hemi))
    return tuple(sorted(set(out)))


def atlas_grid_to_tissue_grid(volume: np.ndarray) -> np.ndarray:
    """A volume on the 2 mm atlas grid resampled (nearest) onto the 1 mm tissue grid: uint8.

    Axis-aligned affines (the shipped files) are resampled per axis; any other pair falls
    back to point-wise sampling.
    """
    atlas = load_atlas()
    vox = np.linalg.inv(atlas.atlas_affine) @ atlas.tissue_affine
    shape = atlas.tissue.shape
    if np.allclose(vox[:3, :3], np.diag(np.diag(vox[:3, :3]))):
        idx = [
            np.rint(vox[a, a] * np.arange(n) + vox[a, 3]).astype(np.intp)
            for a, n in enumerate(shape)
        ]
        inside = [(ix >= 0) & (ix < m) for ix, m in zip(idx, volume.shape, strict=True)]
        clipped = [np.clip(ix, 0, m - 1) for ix, m in zip(idx, volume.shape, strict=True)]
        grid = volume[np.ix_(*clipped)] * functools.reduce(np.logical_and, np.ix_(*inside))
    else:
        ijk = np.indices(shape, np.float32).reshape(3, -1).T
        grid = sample_nearest(volume, vox, ijk).reshape(shape)
    return grid.astype(np.uint8)


@functools.lru_cache(maxsize=1)
def atlas_on_tissue_grid() -> tuple[np.ndarray, np.ndarray]:
    """Atlas classes and hemispheres on the 1 mm tissue grid: uint8 [182, 218, 182] each."""
    atlas = load_atlas()
    return atlas_grid_to_tissue_grid(atlas.classes), atlas_grid_to_tissue_grid(atlas.hemispheres)


@functools.lru_cache(maxsize=4)
def mni_signal(lesions: tuple[tuple[str, str], ...] = ()) -> np.ndarray:
    """Noise-free relative b1000 signal on the 1 mm MNI tissue grid, float32 [182, 218, 182].

    GM 1, WM 0.7, CSF 0.2, background 0; GM/WM inside lesion regions = LESION_FACTOR;
    lightly smoothed.  Read-only; uses the atlas's ``tissue_affine``.
    """
    atlas = load_atlas()
    lut = np.zeros(256, np.float32)
    for code, value in TISSUE_SIGNAL.items():
        lut[code] = value
    signal = lut[atlas.tissue]
    if lesions:
        classes, hemis = atlas_on_tissue_grid()
        brain = (atlas.tissue == TISSUE_GM) | (atlas.tissue == TISSUE_WM)
        for key, hemi in lesions:
            region = (classes == contract.REGION_BY_KEY[key].index) & (
                hemis == contract.HEMISPHERE_CODES[hemi]
            )
            signal[region & brain] = LESION_FACTOR
    signal = np.ascontiguousarray(_smooth121(signal))
    signal.setflags(write=False)
    return signal


def bias_field(rng: np.random.Generator, strength: float = 0.12) -> np.ndarray:
    """Coefficients [9] of a smooth multiplicative bias: 1 + c · (x, y, z, x², y², z², xy, yz, zx).

    Evaluated by :func:`apply_bias` on world mm scaled by 1/100 about the grid centre.
    """
    return rng.normal(0.0, strength / 2, 9)


def apply_bias(coeffs: np.ndarray, world: np.ndarray, centre_mm: Sequence[float]) -> np.ndarray:
    """Bias factor (float32, clipped to [0.7, 1.3]) at world points [3, ...] in mm."""
    x, y, z = ((world[a] - centre_mm[a]) / 100.0 for a in range(3))
    terms = (x, y, z, x * x, y * y, z * z, x * y, y * z, z * x)
    field = 1.0 + sum(c * t for c, t in zip(coeffs, terms, strict=True))
    return np.clip(field, 0.7, 1.3).astype(np.float32)


# --- the phantom -------------------------------------------------------------------------


def make_phantom(
    seed: int = 0,
    in_plane: tuple[int, int] = (512, 512),
    n_slices: int = 20,
    *,
    fov_mm: float = 230.0,
    slice_mm: float = 5.0,
    lesions: Sequence[tuple[str, str]] = (),
    max_rotation_deg: float = 8.0,
    max_translation_mm: float = 8.0,
    grid_rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    noise: float = 0.03,
    centre_z_mm: float = 15.0,
) -> Phantom:
    """A seeded synthetic DWI volume of shape (nx, ny, n_slices), stored RAS.

    Voxel size (fov_mm/nx, fov_mm/ny, slice_mm) mm; grid centred on MNI
    (0, −18, centre_z_mm) and tilted by ``grid_rotation_deg``.  ``lesions``: (region key,
    hemisphere key) pairs made bright.  ``noise``: Rician σ relative to GM signal.
    """
    nx, ny = (int(v) for v in in_plane)
    if nx < 1 or ny < 1 or n_slices < 1:
        raise ValueError(f"grid size must be positive, got {in_plane} × {n_slices}")
    lesion_keys = _check_lesions(lesions)
    rng = np.random.default_rng(seed)
    world_from_mni = random_pose(rng, max_rotation_deg, max_translation_mm)
    bias = bias_field(rng)

    shape = (nx, ny, int(n_slices))
    voxel_mm = (fov_mm / nx, fov_mm / ny, float(slice_mm))
    centre = (*MNI_CENTRE_XY, centre_z_mm)
    affine = grid_affine(shape, voxel_mm, centre, grid_rotation_deg)

    atlas = load_atlas()
    signal_map = mni_signal(lesion_keys)
    mni_from_vox = np.linalg.inv(world_from_mni) @ affine
    atlas_from_vox = np.linalg.inv(atlas.atlas_affine) @ mni_from_vox
    tissue_from_vox = np.linalg.inv(atlas.tissue_affine) @ mni_from_vox
    offsets = subsample_offsets(voxel_mm)

    # Sub-sample offsets in tissue-voxel units (the map is affine in the grid indices).
    tissue_steps = (offsets @ tissue_from_vox[:3, :3].T).astype(np.float32)
    image = np.empty(shape, np.float32)
    classes = np.empty(shape, np.uint8)
    hemispheres = np.empty(shape, np.uint8)
    tissue = np.empty(shape, np.uint8)
    for k in range(shape[2]):
        flat, inside = nearest_index(atlas.classes.shape, slice_coords(atlas_from_vox, shape, k))
        classes[..., k] = take_inside(atlas.classes, flat, inside)
        hemispheres[..., k] = take_inside(atlas.hemispheres, flat, inside)
        tissue_vox = slice_coords(tissue_from_vox, shape, k)
        tissue[..., k] = nearest_at(atlas.tissue, tissue_vox)
        tissue_vox = tissue_vox.astype(np.float32)
        acc = np.zeros((nx, ny), np.float32)
        for step in tissue_steps:
            acc += linear_at(signal_map, tissue_vox + step[:, None, None])
        acc *= apply_bias(bias, slice_coords(affine, shape, k), centre) / len(tissue_steps)
        image[..., k] = acc

    sigma = np.float32(noise)
    real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(shape, dtype=np.float32)
    image = np.sqrt(real * real + imag * imag) * np.float32(SIGNAL_SCALE)

    img = nib.Nifti1Image(image, affine)
    img.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm", "sec")
    return Phantom(img, classes, hemispheres, int(seed), tissue, world_from_mni)
