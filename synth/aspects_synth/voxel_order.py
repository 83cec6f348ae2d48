"""Write the same phantom in any voxel order, keeping every voxel's world position.

Reordering is a permutation and flips of the array axes only (no resampling); the affine
is updated with nibabel's orientation tools so that ``affine @ ijk`` of every voxel is
unchanged.
"""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from .phantom import Phantom

# A representative table: RAS+, the DICOM/ITK LPS, FSL's radiological LAS, slice flips,
# and permuted axes (sagittal-, coronal-first storage).
VOXEL_ORDERS: tuple[str, ...] = (
    "RAS",
    "LPS",
    "LAS",
    "RPI",
    "LPI",
    "RAI",
    "PIR",
    "ASL",
    "SLA",
    "ILP",
)

_AXIS_PAIRS = ({"L", "R"}, {"A", "P"}, {"S", "I"})


def parse_axcodes(axcodes: str) -> tuple[str, str, str]:
    """Validate an orientation like ``'LPS'`` (one of L/R, A/P, S/I each) and split it."""
    codes = tuple(axcodes.upper())
    if len(codes) != 3 or any(sum(c in pair for c in codes) != 1 for pair in _AXIS_PAIRS):
        raise ValueError(
            f"voxel order {axcodes!r} must name each of L/R, A/P and S/I once, e.g. 'LPS'"
        )
    return codes  # type: ignore[return-value]


def reorder(phantom: Phantom, axcodes: str) -> Phantom:
    """The same phantom stored in voxel order ``axcodes`` (e.g. ``'LPS'``, ``'PIR'``).

    Image, classes, hemispheres and tissue are permuted/flipped together; the new affine
    maps every voxel to the same world (RAS mm) point as before.  For an oblique grid the
    closest orientation is used, so ``nib.aff2axcodes(result.affine) == tuple(axcodes)``.
    """
    codes = parse_axcodes(axcodes)
    transform = ornt_transform(nib.io_orientation(phantom.affine), axcodes2ornt(codes))
    shape = phantom.image.shape

    def arrange(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(apply_orientation(array, transform))

    affine = phantom.affine @ inv_ornt_aff(transform, shape)
    image = nib.Nifti1Image(arrange(np.asanyarray(phantom.image.dataobj)), affine)
    image.set_data_dtype(phantom.image.get_data_dtype())
    image.header.set_xyzt_units("mm", "sec")
    return dataclasses.replace(
        phantom,
        image=image,
        classes=arrange(phantom.classes),
        hemispheres=arrange(phantom.hemispheres),
        tissue=arrange(phantom.tissue),
    )
