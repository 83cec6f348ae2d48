"""The ADC map: resampled onto the DWI's voxel grid, its unit checked or detected.

An ADC map may come on its own grid (another voxel size, field of view or orientation than
the DWI it goes with).  ``adc_on_grid`` resamples it by the two voxel -> world affines onto
the DWI's **original** voxel grid (trilinear, scipy.ndimage.map_coordinates) and converts
it to ``contract.ADC_UNIT`` (1e-6 mm^2/s), with the scale given or detected
(``detect_adc_scale``).  The caller then takes it to display space with
``geometry.to_display`` like any other array of that grid.

Zero and negative stored values are "no ADC here" (vendors zero the background; a failed
fit can be negative): they are never averaged into a value.  Interpolation is normalised
over the valid (positive) voxels, so the brain's edge does not fade towards 0 (which would
read as infarct core); a DWI voxel is ``covered`` when it lies inside the ADC's field of
view and at least ``MIN_VALID_WEIGHT`` of its interpolation weight falls on valid voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .. import contract
from ..errors import (
    AdcCoverageError,
    AdcUnitsError,
    DimensionalityError,
    NonFiniteDataError,
    UsageError,
)
from ..volume_io import Volume

# Stored unit -> factor to ADC_UNIT (1e-6 mm^2/s).  The tissue medians of these units are
# decades apart, so at most one factor puts a median inside ADC_TISSUE_MEDIAN_RANGE.
KNOWN_SCALES: dict[str, float] = {
    "mm^2/s": 1e6,  # tissue median ~0.0008
    "1e-3 mm^2/s": 1e3,  # ~0.8 (um^2/ms)
    "1e-5 mm^2/s": 10.0,  # ~80 (some vendors)
    "1e-6 mm^2/s": 1.0,  # ~800 (most DICOM ADC maps)
}
MIN_COVERAGE = 0.9  # at least this share of the labelled regions' voxels must get a valid
# ADC value (> 0): a region without one cannot be judged
MIN_FOV_COVERAGE = 0.5  # without regions: the share of the DWI's grid inside the ADC's view
MIN_VALID_WEIGHT = 0.5  # a resampled voxel needs this share of its trilinear weight on
# valid (positive) ADC voxels to carry a value
MAX_NEGATIVE_FRACTION = 0.5  # more of the non-zero voxels negative than this: not an ADC map

SEND_ADC = (
    "send the ADC map computed from this DWI series (same study, same position), "
    "as a NIfTI with the scanner's orientation"
)


@dataclass(frozen=True)
class AdcOnGrid:
    """An ADC map on a DWI's original voxel grid.

    values: float32 [X, Y, Z] (the DWI's shape) in contract.ADC_UNIT; 0 where not covered.
    covered: bool [X, Y, Z]: inside the ADC's field of view with a valid value.
    scale: the factor applied to the stored values; scale_detected: False when given.
    coverage: share (0..1) of the labelled regions' voxels with a valid ADC value
    (``covered``); without regions, of the DWI's voxels inside the ADC's field of view.
    median: median of the converted values used for the unit check.
    """

    values: np.ndarray
    covered: np.ndarray
    scale: float
    scale_detected: bool
    coverage: float
    median: float

    def summary(self) -> dict[str, Any]:
        """JSON-ready provenance: unit, scale (and whether detected), coverage, median."""
        return {
            "unit": contract.ADC_UNIT,
            "scale": float(self.scale),
            "scale_source": "detected" if self.scale_detected else "given",
            "coverage": round(float(self.coverage), 4),
            "median": round(float(self.median), 1),
        }


def adc_on_grid(
    adc: Volume,
    dwi: Volume,
    *,
    scale: float | None = None,
    regions: np.ndarray | None = None,
) -> AdcOnGrid:
    """Resample ``adc`` onto ``dwi``'s original voxel grid and convert it to ADC_UNIT.

    adc, dwi: loaded volumes (``volume_io.load_volume``: finite, 3D, valid affines).
    scale: factor from the stored values to ADC_UNIT (e.g. 1e6 for mm^2/s); None detects it
    (``detect_adc_scale``).  Either way the converted median must lie in
    contract.ADC_TISSUE_MEDIAN_RANGE.
    regions: optional bool [X, Y, Z] on the DWI grid, the labelled ASPECTS regions
    (``geometry.from_display(classes > 0, geometry)``): the coverage and the unit check are
    then judged on those voxels only (recommended); without it (or when it is empty), on
    the whole DWI grid.

    Raises NonFiniteDataError / DimensionalityError (bad arrays), AdcCoverageError (field
    of view), AdcUnitsError (unit or content), UsageError (a bad ``scale`` or ``regions``).
    """
    label = adc.source
    data = np.asarray(adc.data)
    _check_adc_array(data, label)
    if scale is not None:
        scale = _checked_scale(scale)
    shape = dwi.shape
    regions = _checked_regions(regions, shape)
    _check_negative(data, label)

    values, covered, in_fov = resample_trilinear(data, adc.affine, shape, dwi.affine)
    judged = regions if regions is not None and regions.any() else None
    coverage = _checked_coverage(covered, in_fov, judged, shape, label)
    sample = values[covered & judged] if judged is not None else values[covered]
    if scale is None:
        scale = detect_adc_scale(sample, label=label)
        detected = True
    else:
        check_adc_scale(sample, scale, label=label)
        detected = False
    values *= np.float32(scale)
    median = float(np.median(sample)) * scale
    return AdcOnGrid(values, covered, float(scale), detected, coverage, median)


def _check_adc_array(data: np.ndarray, label: str) -> None:
    """DimensionalityError unless the ADC map is 3D; NonFiniteDataError on NaN or inf."""
    if data.ndim != 3:
        raise DimensionalityError(f"{label}: the ADC map is {data.ndim}D; send one 3D ADC map")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
        raise NonFiniteDataError(
            f"{label}: {n_bad:,} ADC voxels are NaN or infinite; replace them with 0 "
            "(no value) before sending"
        )


def _checked_regions(regions: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """``regions`` as bool (None stays None); UsageError unless it has the DWI's shape."""
    if regions is None:
        return None
    regions = np.asarray(regions, dtype=bool)
    if regions.shape != shape:
        raise UsageError(f"regions {regions.shape} must have the DWI's shape {shape}")
    return regions


def _checked_coverage(
    covered: np.ndarray,
    in_fov: np.ndarray,
    judged: np.ndarray | None,
    shape: tuple[int, ...],
    label: str,
) -> float:
    """The ADC's coverage of the judged voxels (all when None); AdcCoverageError if short."""
    n_judged = int(judged.sum()) if judged is not None else int(np.prod(shape))
    n_in = int(np.count_nonzero(in_fov & judged if judged is not None else in_fov))
    where = "the labelled regions of the DWI" if judged is not None else "the DWI's voxels"
    if n_in == 0:
        raise AdcCoverageError(
            f"{label}: the ADC map's field of view does not overlap {where}; {SEND_ADC}"
        )
    if judged is None:  # the whole grid: the background is legitimately zero
        coverage = n_in / n_judged
        if coverage < MIN_FOV_COVERAGE:
            raise AdcCoverageError(
                f"{label}: the ADC map's field of view covers only {100 * coverage:.0f} % of "
                f"{where} (at least {100 * MIN_FOV_COVERAGE:.0f} % needed); {SEND_ADC}"
            )
    else:  # the regions: every voxel needs a VALID value (zeroed slices carry none)
        coverage = int(np.count_nonzero(covered & judged)) / n_judged
        if coverage < MIN_COVERAGE:
            raise AdcCoverageError(
                f"{label}: the ADC map has a valid value (> 0) in only {100 * coverage:.0f} % "
                f"of {where} (at least {100 * MIN_COVERAGE:.0f} % needed; "
                f"{100 * n_in / n_judged:.0f} % lie inside its field of view); {SEND_ADC}"
            )
    return coverage


def resample_trilinear(
    data: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int], target_affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trilinear resampling of ``data`` [x, y, z] (voxel -> world ``affine``) onto the grid
    of ``shape`` with ``target_affine``, one target slice (last axis) at a time.

    Only positive voxels carry values: the result is the interpolation of data * valid
    divided by the interpolation of valid (normalised convolution).  Returns
    (values float32 [shape], covered bool [shape], in_fov bool [shape]): in_fov = the
    target voxel centre lies within the source voxels' extent (half a voxel beyond the
    outer centres, where the edge value is used); covered = in_fov and at least
    MIN_VALID_WEIGHT of the trilinear weight on valid voxels; values = 0 where not covered.
    """
    src = np.asarray(data)
    valid = src > 0
    weighted = np.where(valid, src, 0).astype(np.float32)
    weight = valid.astype(np.float32)
    target_to_source = np.linalg.inv(np.asarray(affine, np.float64)) @ np.asarray(
        target_affine, np.float64
    )
    values = np.zeros(shape, dtype=np.float32)
    covered = np.zeros(shape, dtype=bool)
    in_fov = np.zeros(shape, dtype=bool)
    if np.allclose(target_to_source, np.eye(4), atol=1e-6) and tuple(src.shape) == shape:
        covered[...] = valid
        in_fov[...] = True
        values[valid] = src[valid]
        return values, covered, in_fov
    nx, ny, nz = shape
    m, t = target_to_source[:3, :3], target_to_source[:3, 3]
    ij = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"), axis=0)
    plane = np.tensordot(m[:, :2], ij.astype(np.float64), axes=1)  # [3, nx, ny]
    upper = np.asarray(src.shape, dtype=np.float64)[:, None, None] - 0.5
    for k in range(nz):
        coords = plane + (m[:, 2] * k + t)[:, None, None]
        inside = np.all((coords >= -0.5) & (coords <= upper), axis=0)
        if not inside.any():
            continue
        pts = coords[:, inside]
        num = ndimage.map_coordinates(weighted, pts, order=1, mode="nearest", prefilter=False)
        den = ndimage.map_coordinates(weight, pts, order=1, mode="nearest", prefilter=False)
        ok = den >= MIN_VALID_WEIGHT
        out = np.zeros(pts.shape[1], dtype=np.float32)
        out[ok] = num[ok] / den[ok]
        values[:, :, k][inside] = out
        covered[:, :, k][inside] = ok
        in_fov[:, :, k] = inside
    return values, covered, in_fov


def detect_adc_scale(values: np.ndarray, *, label: str = "ADC map") -> float:
    """The factor converting stored ADC values to contract.ADC_UNIT (1e-6 mm^2/s).

    values: stored ADC values inside the brain regions (any shape; only positive ones
    count).  The median of the positive values, times each of KNOWN_SCALES, is compared
    with contract.ADC_TISSUE_MEDIAN_RANGE: mm^2/s (median ~0.0008) -> 1e6, 1e-3 mm^2/s
    (~0.8) -> 1e3, 1e-5 mm^2/s (~80) -> 10, 1e-6 mm^2/s (~800) -> 1.  The ranges of
    these units do not overlap, so at most one fits; none fitting raises AdcUnitsError.
    """
    median = _positive_median(values, label)
    lo, hi = contract.ADC_TISSUE_MEDIAN_RANGE
    for factor in KNOWN_SCALES.values():
        if lo <= median * factor <= hi:
            return factor
    known = ", ".join(f"{unit} (x{factor:g})" for unit, factor in KNOWN_SCALES.items())
    raise AdcUnitsError(
        f"{label}: the median ADC inside the brain regions is {median:.4g}, which is not an "
        f"ADC map in a known unit ({known}; tissue median {lo:g}..{hi:g} x {contract.ADC_UNIT} "
        "expected); pass --adc-scale (API: scale=) with the factor to "
        f"{contract.ADC_UNIT}, or check that this is the ADC map"
    )


def check_adc_scale(values: np.ndarray, scale: float, *, label: str = "ADC map") -> None:
    """Refuse an explicit ``scale`` whose converted median of the positive ``values``
    (stored ADC inside the brain regions) lies outside contract.ADC_TISSUE_MEDIAN_RANGE."""
    scale = _checked_scale(scale)
    median = _positive_median(values, label)
    lo, hi = contract.ADC_TISSUE_MEDIAN_RANGE
    converted = median * scale
    if not lo <= converted <= hi:
        raise AdcUnitsError(
            f"{label}: with the given scale {scale:g} the median ADC inside the brain regions "
            f"is {converted:.4g} x {contract.ADC_UNIT}, outside the {lo:g}..{hi:g} expected "
            "for brain tissue; check --adc-scale (API: scale=), or omit it to detect the unit"
        )


def _checked_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise UsageError(f"the ADC scale must be a number > 0, not {scale!r}")
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"the ADC scale must be a finite number > 0, not {scale!r}")
    return value


def _positive_median(values: np.ndarray, label: str) -> float:
    values = np.asarray(values)
    positive = values[values > 0]
    if positive.size == 0:
        raise AdcUnitsError(
            f"{label}: no positive ADC values inside the brain regions; check that this is the "
            f"ADC map of this DWI; {SEND_ADC}"
        )
    return float(np.median(positive))


def _check_negative(data: np.ndarray, label: str) -> None:
    if data.dtype.kind == "u":
        return
    n_negative = int(np.count_nonzero(data < 0))
    n_nonzero = int(np.count_nonzero(data))
    if n_nonzero and n_negative > MAX_NEGATIVE_FRACTION * n_nonzero:
        raise AdcUnitsError(
            f"{label}: {100 * n_negative / n_nonzero:.0f} % of the non-zero voxels are "
            "negative: not an ADC map (an exponential ADC, a difference or a phase map?); "
            f"{SEND_ADC}"
        )
