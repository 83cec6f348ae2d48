"""The volume of a selected series: its frames checked (one size, orientation and pixel
spacing), sorted into a stack, decoded and rescaled.

Geometry (``InconsistentGeometryError`` & co. say what to send instead): slices sorted along
the normal of the image plane (row direction x column direction of
ImageOrientationPatient); no two at one position (``DuplicateSlicesError``); no gap of about
twice the spacing or more (``MissingSlicesError``), no other spacing change beyond
max(0.01 mm, 1 %); the slice positions on one line.  A stack whose positions step off the
normal (gantry tilt) is kept with a sheared affine (its third column is the exact step
between slice positions; the qform is then unset, since a quaternion cannot hold a shear)
up to ``MAX_GANTRY_TILT_DEG``; beyond, ``GantryTiltError``.  The in-plane columns of the
affine come from ``highdicom.spatial.create_affine_matrix_from_attributes``; LPS becomes
RAS+ by negating x and y.  Values: stored x RescaleSlope + RescaleIntercept (per frame for
enhanced images), float32.  pydicom and highdicom are imported on first use.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from .. import contract
from ..errors import (
    DuplicateSlicesError,
    GantryTiltError,
    InconsistentGeometryError,
    MissingSlicesError,
    UnreadableDicomError,
    UnsupportedDicomError,
    VolumeTooLargeError,
)
from ..outputs import printable
from ..volume_io import Limits, numbers_text
from .parse import Group, check_cancel, parse_dataset
from .select import same_b
from .series import DicomSeries
from .vendor import Frame, as_number, functional_group, group_frames

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

MIN_SLICES = contract.MIN_SLICES  # one rule for NIfTI and DICOM (docs/errors.md)
MAX_GANTRY_TILT_DEG = contract.MAX_SHEAR_DEG
MAX_SPACING_OVER_THICKNESS = 1.9  # slices this far apart for their thickness: some missing
SPACING_RTOL, SPACING_ATOL_MM = 0.01, 0.01  # slice spacing regularity: max(atol, rtol * s)
GEOMETRY_ATOL = 1e-4  # orientation cosines and pixel spacing (mm) equality
TILT_FREE_DEG = 0.01  # a stack within this angle of the normal is not sheared
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def series_volume(
    group: Group,
    role: str,
    b_value: float | None,
    files: Sequence[tuple[str, bytes]],
    label: str,
    limits: Limits,
    cancel: threading.Event | None = None,
) -> DicomSeries:
    """The series (for "dwi": its trace frames at ``b_value``) as a DicomSeries; the
    instances that hold its frames are parsed again, in full, from ``files``."""
    frames = group_frames(group, label)
    if role == "dwi":
        frames = [
            f
            for f in frames
            if f.b_value is not None
            and not f.directional
            and same_b(f.b_value, float(b_value or 0))
        ]
    where = f"{label}: {group.title}"
    layout = _check_frames(frames, where, limits)
    order, affine, sheared = _stack_geometry(frames, layout, where)
    _check_against_thickness(float(np.linalg.norm(affine[:3, 2])), group.first, where)
    # the instances with pixel data, parsed again in full (only those of this series)
    used = list(dict.fromkeys(frames[k].instance for k in order))
    check_cancel(cancel, label)
    full = {
        i: parse_dataset(
            files[group.instances[i].file][1],
            group.instances[i].name,
            label,
            stop_before_pixels=False,
        )
        for i in used
    }
    data = _stack_pixels(frames, order, full, group, layout, where, label, cancel)
    datasets = tuple(full[i] for i in used)
    position = {i: n for n, i in enumerate(used)}
    return DicomSeries(
        image=_nifti(data, affine, sheared),
        datasets=datasets,
        frames=tuple((position[frames[k].instance], frames[k].number) for k in order),
        role=role,
        b_value=None if role != "dwi" else float(b_value or 0.0),
        series_instance_uid=group.uid,
        frame_of_reference_uid=str(datasets[0].get("FrameOfReferenceUID", "") or ""),
    )


def _stack_pixels(
    frames: list[Frame],
    order: list[int],
    full: dict[int, Dataset],
    group: Group,
    layout: tuple[int, int],
    where: str,
    label: str,
    cancel: threading.Event | None,
) -> np.ndarray:
    """float32 [columns, rows, slices]: frame ``order[k]``'s rescaled values in slice k."""
    rows, columns = layout
    data = np.empty((columns, rows, len(order)), dtype=np.float32)
    pixels: dict[int, np.ndarray] = {}
    for k, index in enumerate(order):
        check_cancel(cancel, label)
        frame = frames[index]
        if frame.instance not in pixels:
            pixels[frame.instance] = _pixels(
                full[frame.instance], group.instances[frame.instance].name, where
            )
        array = pixels[frame.instance]
        plane = array[frame.number - 1] if array.ndim == 3 else array
        if plane.shape != (rows, columns):
            raise UnreadableDicomError(
                f"{where}: frame {frame.number} of "
                f"{printable(group.instances[frame.instance].name)} "
                f"decodes to {plane.shape}, not Rows x Columns {(rows, columns)}; re-export it"
            )
        slab = plane.T.astype(np.float32)
        if frame.slope != 1.0:
            slab *= np.float32(frame.slope)
        if frame.intercept != 0.0:
            slab += np.float32(frame.intercept)
        data[:, :, k] = slab
    return data


def _nifti(data: np.ndarray, affine: np.ndarray, sheared: bool) -> nib.Nifti1Image:
    """The NIfTI image: sform 'scanner', qform too unless sheared; units mm and s."""
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code="scanner")
    if sheared:
        image.set_qform(None, code=0)
    else:
        image.set_qform(affine, code="scanner")
    image.header.set_xyzt_units("mm", "sec")
    return image


def _pixels(ds: Dataset, name: str, where: str) -> np.ndarray:
    """The stored pixel values [rows, columns] or [frames, rows, columns]."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise UnsupportedDicomError(
            f"{where}: {printable(name)} is a colour image; send the grey-scale DWI series"
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnreadableDicomError(f"{where}: {printable(name)} has no pixel data; re-export it")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # missing decoder, truncated data, bad attributes
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f" ({syntax.name})" if syntax is not None else ""
        raise UnreadableDicomError(
            f"{where}: the pixel data of {printable(name)}{what} cannot be decoded "
            f"({type(exc).__name__}); re-export the series uncompressed"
        ) from None


def _check_frames(frames: list[Frame], where: str, limits: Limits) -> tuple[int, int]:
    """One size, orientation and pixel spacing, enough slices, within the voxel bound;
    returns (rows, columns)."""
    if len(frames) < MIN_SLICES:
        raise MissingSlicesError(
            f"{where}: only {len(frames)} image(s) for the volume; send the whole series "
            f"(at least {MIN_SLICES} slices covering the brain)"
        )
    sizes = {(f.rows, f.columns) for f in frames}
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise InconsistentGeometryError(
            f"{where}: images of {len(sizes)} sizes ({shown}) in one series; send the series "
            "as acquired (one image size)"
        )
    rows, columns = sizes.pop()
    n_voxels = rows * columns * len(frames)
    if n_voxels > limits.max_voxels:
        raise VolumeTooLargeError(
            f"{where}: {columns} x {rows} x {len(frames)} voxels exceed the bound of "
            f"{limits.max_voxels:,}; send a smaller series"
        )
    _check_planes(frames, where)
    return rows, columns


def _check_planes(frames: list[Frame], where: str) -> None:
    """Every frame with a position, one orientation (two orthogonal unit vectors) and one
    positive pixel spacing."""
    for attribute, what in (
        ("position", "ImagePositionPatient"),
        ("orientation", "ImageOrientationPatient"),
        ("spacing", "PixelSpacing"),
    ):
        if any(getattr(f, attribute) is None for f in frames):
            raise InconsistentGeometryError(
                f"{where}: images without a valid {what}; the geometry is unknown, re-export "
                "the series from the scanner"
            )
    reference = np.array(frames[0].orientation)
    if any(np.max(np.abs(np.array(f.orientation) - reference)) > GEOMETRY_ATOL for f in frames):
        raise InconsistentGeometryError(
            f"{where}: the images have different orientations (ImageOrientationPatient); "
            "send one stack of parallel slices (a single acquisition)"
        )
    spacing = np.array(frames[0].spacing)
    if any(np.max(np.abs(np.array(f.spacing) - spacing)) > GEOMETRY_ATOL for f in frames):
        raise InconsistentGeometryError(
            f"{where}: the images have different pixel spacings; send one acquisition"
        )
    if np.min(spacing) <= 0:
        raise InconsistentGeometryError(
            f"{where}: PixelSpacing {numbers_text(spacing)} is not positive"
        )
    row_dir, col_dir = reference[:3], reference[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(row_dir @ col_dir) > 1e-3
    ):
        raise InconsistentGeometryError(
            f"{where}: ImageOrientationPatient {numbers_text(reference)} is not two orthogonal "
            "unit vectors; re-export the series"
        )


def _slice_measures(ds: Dataset) -> tuple[float | None, float | None]:
    """(SpacingBetweenSlices, SliceThickness) in mm, from the dataset or its shared
    functional groups; None where absent."""
    shared = functional_group(ds, 1, "PixelMeasuresSequence") if "NumberOfFrames" in ds \
        else None
    values = []
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = as_number(ds.get(keyword, None if shared is None else shared.get(keyword)), None)
        values.append(value if value is not None and value > 0 else None)
    return values[0], values[1]


def _check_against_thickness(step: float, ds: Dataset, where: str) -> None:
    """MissingSlicesError when evenly spaced slices lie further apart than the series says
    (every other slice file missing keeps the spacing even)."""
    spacing, thickness = _slice_measures(ds)
    if spacing is not None and step >= MAX_SPACING_OVER_THICKNESS * spacing:
        said, nominal = f"SpacingBetweenSlices {spacing:g} mm", spacing
    elif spacing is None and thickness is not None and (
        step >= MAX_SPACING_OVER_THICKNESS * thickness
    ):
        said, nominal = f"SliceThickness {thickness:g} mm", thickness
    else:
        return
    every = round(step / nominal)
    raise MissingSlicesError(
        f"{where}: the slices are {step:.2f} mm apart, but the series says {said}: about "
        f"{every - 1} of every {every} slices are missing; send the complete series"
    )


def _stack_geometry(
    frames: list[Frame], layout: tuple[int, int], where: str
) -> tuple[list[int], np.ndarray, bool]:
    """(slice order: frame indices along the normal, 4x4 voxel -> RAS+ affine, sheared)."""
    from highdicom.spatial import create_affine_matrix_from_attributes, get_normal_vector

    orientation = list(frames[0].orientation)  # type: ignore[arg-type]
    normal = get_normal_vector(orientation, index_convention="RD")
    positions = np.array([f.position for f in frames], dtype=np.float64)
    distance = positions @ normal
    order = [int(i) for i in np.argsort(distance, kind="stable")]
    step, tol = _check_spacing(distance[order], where)
    first, last = positions[order[0]], positions[order[-1]]
    column3 = (last - first) / (len(order) - 1)
    expected = first + np.outer(np.arange(len(order)), column3)
    off_line = float(np.max(np.linalg.norm(positions[order] - expected, axis=1)))
    if off_line > tol:
        raise InconsistentGeometryError(
            f"{where}: the slice positions are not on one line (off by up to {off_line:.3f} "
            "mm); send one stack of parallel slices"
        )
    tilt = math.degrees(math.acos(min(1.0, abs(column3 @ normal) / np.linalg.norm(column3))))
    if tilt > MAX_GANTRY_TILT_DEG:
        raise GantryTiltError(
            f"{where}: the slices are sheared by {tilt:.1f}° (gantry tilt; at most "
            f"{MAX_GANTRY_TILT_DEG:g}° is handled); send a series reconstructed without tilt"
        )
    affine = create_affine_matrix_from_attributes(
        first,
        orientation,
        list(frames[0].spacing),
        step,
        index_convention="RD",  # type: ignore[arg-type]
    )
    affine[:3, 2] = column3
    return order, _LPS_TO_RAS @ affine, tilt > TILT_FREE_DEG


def _check_spacing(d: np.ndarray, where: str) -> tuple[float, float]:
    """(step, tolerance) of the sorted slice distances ``d`` along the normal: no two at one
    position, no missing slice, an even spacing."""
    gaps = np.diff(d)
    if np.any(gaps < SPACING_ATOL_MM):
        k = int(np.argmax(gaps < SPACING_ATOL_MM))
        count = int(np.sum(gaps < SPACING_ATOL_MM))
        raise DuplicateSlicesError(
            f"{where}: {count + 1} or more images share a slice position (e.g. at "
            f"{d[k]:.2f} mm along the normal): repeated or mixed acquisitions; send one "
            "image per slice (one repetition of the b-value)"
        )
    step = float(np.median(gaps))
    tol = max(SPACING_ATOL_MM, SPACING_RTOL * step)
    multiples = np.round(gaps / step)
    missing = (multiples >= 2) & (np.abs(gaps - multiples * step) <= tol * multiples)
    if np.any(missing):
        n_missing = int(np.sum(multiples[missing] - 1))
        k = int(np.argmax(missing))
        raise MissingSlicesError(
            f"{where}: {n_missing} slice(s) missing (a gap of {gaps[k]:.2f} mm after "
            f"{d[k]:.2f} mm along the normal, the spacing is {step:.2f} mm); send the "
            "complete series"
        )
    if np.max(np.abs(gaps - step)) > tol:
        raise InconsistentGeometryError(
            f"{where}: the slice spacing varies from {gaps.min():.3f} to {gaps.max():.3f} mm; "
            "send a series with evenly spaced slices (one acquisition)"
        )
    return step, tol
