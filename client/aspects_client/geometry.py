"""Canonical orientation, the display stack the model sees, and the exact way back.

Pure functions on affines and arrays, after nibabel's ``orientations.py``.  The chain is

    original voxel (i, j, k) --ornt--> canonical RAS+ voxel (x, y, z)
        --display--> (n, row, col) with n = z, row = Y-1-y, col = x

so that each display slice is ``np.rot90`` of the RAS slice: row 0 = most anterior,
column 0 = patient left.  Reorientation is permutations and flips only (no resampling),
so every display pixel maps back to exactly one voxel of the original file.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np

from . import contract


@dataclass(frozen=True)
class Geometry:
    """How one volume's voxels relate to its display stack and to the world.

    original_shape: (X, Y, Z) of the file; affine: 4x4 voxel -> world mm (RAS+);
    ornt: nibabel orientation (original axes -> canonical RAS+ axes).
    """

    original_shape: tuple[int, int, int]
    affine: np.ndarray
    ornt: np.ndarray

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the RAS+ array."""
        shape = [0, 0, 0]
        for axis, (target, _flip) in enumerate(self.ornt):
            shape[int(target)] = self.original_shape[axis]
        return tuple(shape)  # type: ignore[return-value]

    @property
    def display_shape(self) -> tuple[int, int, int]:
        """(N, H, W) of the display stack: N slices of H rows (A->P) by W columns (L->R)."""
        x, y, z = self.canonical_shape
        return z, y, x

    @property
    def slice_axis(self) -> int:
        """The original array axis that runs along the patient's S-I direction."""
        return int(np.flatnonzero(self.ornt[:, 0] == contract.SLICE_AXIS)[0])

    def original_slice_index(self, n: int) -> int:
        """Index along ``slice_axis`` of the original file for display slice n."""
        axis = self.slice_axis
        return n if self.ornt[axis, 1] > 0 else self.original_shape[axis] - 1 - n

    @property
    def display_to_original(self) -> np.ndarray:
        """4x4 integer affine: (n, row, col, 1) -> original voxel (i, j, k, 1)."""
        _, y_size, _ = self.canonical_shape
        display_to_canonical = np.array(
            [
                [0, 0, 1, 0],  # x = col
                [0, -1, 0, y_size - 1],  # y = Y-1-row
                [1, 0, 0, 0],  # z = n
                [0, 0, 0, 1],
            ],
            dtype=np.float64,
        )
        canonical_to_original = nio.inv_ornt_aff(self.ornt, self.original_shape)
        return canonical_to_original @ display_to_canonical

    @property
    def display_to_world(self) -> np.ndarray:
        """4x4 affine: (n, row, col, 1) -> world RAS+ mm (x, y, z, 1)."""
        return self.affine @ self.display_to_original

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def display_pixel_area_mm2(self) -> float:
        """In-plane area of one display pixel (mm^2): |row step x column step| in world."""
        m = self.display_to_world[:3, :3]
        return float(np.linalg.norm(np.cross(m[:, 1], m[:, 2])))

    @property
    def display_pixel_spacing_mm(self) -> tuple[float, float]:
        """(row spacing, column spacing) in mm."""
        m = self.display_to_world[:3, :3]
        return float(np.linalg.norm(m[:, 1])), float(np.linalg.norm(m[:, 2]))


def geometry_of(affine: np.ndarray, shape: tuple[int, ...]) -> Geometry:
    """The Geometry of a 3D array of ``shape`` with voxel->world ``affine``."""
    affine = np.asarray(affine, dtype=np.float64)
    ornt = nio.ornt_transform(
        nio.io_orientation(affine), nio.axcodes2ornt(contract.CANONICAL_AXCODES)
    )
    return Geometry(tuple(int(s) for s in shape[:3]), affine, ornt)  # type: ignore[arg-type]


def to_display(volume: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Original-order [X, Y, Z] array -> display stack [N, H, W] (a view when possible)."""
    canonical = nio.apply_orientation(volume, geometry.ornt)
    return np.transpose(canonical, (2, 1, 0))[:, ::-1, :]


def from_display(stack: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Display stack [N, H, W] -> array in the original file's voxel order [X, Y, Z]."""
    canonical = np.transpose(stack[:, ::-1, :], (2, 1, 0))
    inverse = nio.ornt_transform(
        nio.axcodes2ornt(contract.CANONICAL_AXCODES), nio.io_orientation(geometry.affine)
    )
    return nio.apply_orientation(canonical, inverse)


def apply_affine_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to points [P, 3] -> [P, 3] (float64)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]
