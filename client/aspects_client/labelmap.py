"""Label map NIfTI in the ORIGINAL grid and affine, so a viewer overlays it on the source."""

from __future__ import annotations

import contextlib

import nibabel as nib
import numpy as np

from . import contract
from .geometry import Geometry, from_display


def label_map_image(
    labels: np.ndarray, geometry: Geometry, source_header: nib.Nifti1Header | None = None
) -> nib.Nifti1Image:
    """labels: uint8 [N, H, W] display stack of class indices -> uint8 NIfTI, source grid.

    Values are contract class indices (0 background, 1..10 = m1..ic); hemispheres are in
    the contours JSON.  sform/qform are copied from the source so the grids match exactly.
    """
    data = np.asfortranarray(from_display(labels, geometry).astype(np.uint8, copy=False))
    header = nib.Nifti1Header()
    if source_header is not None:
        sform, scode = source_header.get_sform(coded=True)
        qform, qcode = source_header.get_qform(coded=True)
        img = nib.Nifti1Image(data, geometry.affine, header)
        if sform is not None and scode:
            img.set_sform(sform, int(scode))
        if qform is not None and qcode:
            img.set_qform(qform, int(qcode))
        with contextlib.suppress(Exception):  # units are cosmetic; never fail over them
            img.header.set_xyzt_units(*source_header.get_xyzt_units())
    else:
        img = nib.Nifti1Image(data, geometry.affine, header)
    img.header.set_data_dtype(np.uint8)
    img.header.set_intent("label", name="ASPECTS")
    img.header["descrip"] = b"ASPECTS classes: " + " ".join(contract.REGION_KEYS).encode()[:60]
    img.header["cal_min"], img.header["cal_max"] = 0, contract.NUM_CLASSES - 1
    return img


def region_hemisphere_image(
    labels: np.ndarray,
    hemispheres: np.ndarray,
    geometry: Geometry,
    source_header: nib.Nifti1Header | None = None,
) -> nib.Nifti1Image:
    """labels, hemispheres: uint8 [N, H, W] display stacks (class indices; hemisphere codes
    ``contract.HEMISPHERE_CODES``) -> uint8 NIfTI in the source grid with the 20 region x
    hemisphere labels (``contract.region_hemisphere_label``: 1..10 right, 11..20 left).
    A labelled pixel without a hemisphere code keeps no label (never a guessed side)."""
    left = hemispheres == contract.HEMISPHERE_CODES[contract.HEMISPHERE_LEFT]
    right = hemispheres == contract.HEMISPHERE_CODES[contract.HEMISPHERE_RIGHT]
    offset = contract.REGION_HEMISPHERE_OFFSET[contract.HEMISPHERE_LEFT]
    values = np.where(left, labels.astype(np.int16) + offset, labels.astype(np.int16))
    values = np.where((labels > 0) & (left | right), values, 0).astype(np.uint8)
    img = label_map_image(values, geometry, source_header)
    img.header["descrip"] = b"ASPECTS regions x hemisphere: 1-10 right, 11-20 left"
    img.header["cal_min"], img.header["cal_max"] = 0, contract.NUM_REGION_HEMISPHERE_LABELS
    return img


def label_map_bytes(img: nib.Nifti1Image) -> bytes:
    """The gzip-compressed .nii.gz bytes of a label map (written in memory)."""
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=6)
