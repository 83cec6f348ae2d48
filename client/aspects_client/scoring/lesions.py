"""Lesion map, per-region involvement and the ASPECTS score: pure functions.

Every array is a display stack [N, H, W] of one volume (``geometry.to_display``):

- ``classes``: uint8 class indices (0 background, 1..10 = contract.REGIONS);
- ``hemis``: uint8 hemisphere codes (contract.HEMISPHERE_CODES; 0 = unlabelled);
- ``dwi``: float32 raw DWI intensities (any unit: only ratios are used);
- ``adc``: float32 ADC in contract.ADC_UNIT (1e-6 mm^2/s) with ``covered`` (bool), from
  ``aspects_client.scoring.adc.adc_on_grid`` taken to display space;
- ``voxel_ml``: the volume of one voxel in mL (``geometry.voxel_volume_mm3 / 1000``).

The chain: ``lesion_from_adc`` (or ``lesion_from_dwi`` without ADC) -> ``remove_specks``
-> ``involvement`` -> ``aspects_score``; ``lesion_label_map`` + ``geometry.from_display``
give the label map in the original grid.  Thresholds are the contract's (``ScoringRule``).
Outputs are JSON-ready: Python numbers, floats rounded, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from .. import contract
from ..errors import UsageError

# Candidates for contract.py (stated here until they are measured):
BRAIN_MARGIN_MM = 3.0  # ADC lesions count within the labelled regions dilated in-plane by this
MIN_REFERENCE_VOXELS = 20  # a homologous region with fewer voxels is no DWI reference
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)  # lesion components: 26-connected in 3D
ML_DECIMALS = 4  # volumes in the output (mL): 0.1 mm^3 resolution
FRACTION_DECIMALS = 4
_REL_TOL = 1e-9  # a quantity equal to its threshold up to float rounding reaches it
EXTENSIVE_REGIONS = 6  # this many affected regions on one side is not scored as ordinary

_N_CODES = 4  # hemisphere codes 0..2 fit in 2 bits: joint code = class * 4 + hemisphere
_SIDE_OF_CODE = {code: hemi for hemi, code in contract.HEMISPHERE_CODES.items()}


@dataclass(frozen=True)
class ScoringRule:
    """The thresholds of the lesion map, the affected rule and the uncertain band.

    adc_threshold: ADC below this (contract.ADC_UNIT) is infarct core;
    dwi_ratio: without ADC, DWI above this x the homologous region's median is lesion;
    min_lesion_ml: lesion components smaller than this (mL) are specks, removed;
    min_fraction, min_volume_ml: a region (one hemisphere) is affected when its lesion
    fraction >= min_fraction AND its lesion volume >= min_volume_ml;
    uncertain_factor: a decision is uncertain when a quantity q lies in the band
    t / f <= q < t * f around its threshold t and moving it across t would flip it.
    Every field is a finite number > 0; min_fraction <= 1; uncertain_factor >= 1.
    """

    adc_threshold: float = contract.ADC_CORE_THRESHOLD
    dwi_ratio: float = contract.DWI_LESION_RATIO
    min_lesion_ml: float = contract.MIN_LESION_ML
    min_fraction: float = contract.AFFECTED_MIN_FRACTION
    min_volume_ml: float = contract.AFFECTED_MIN_ML
    uncertain_factor: float = contract.UNCERTAIN_FACTOR

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise UsageError(f"scoring rule: {f.name} must be a number > 0, not {value!r}")
            if not (math.isfinite(float(value)) and float(value) > 0):
                raise UsageError(
                    f"scoring rule: {f.name} must be a finite number > 0, not {value!r}"
                )
            object.__setattr__(self, f.name, float(value))
        if self.min_fraction > 1:
            raise UsageError(
                f"scoring rule: min_fraction must be at most 1 (a share of the region), "
                f"not {self.min_fraction!r}"
            )
        if self.uncertain_factor < 1:
            raise UsageError(
                f"scoring rule: uncertain_factor must be >= 1 (1 = no uncertain band), "
                f"not {self.uncertain_factor!r}"
            )

    def as_dict(self) -> dict[str, float]:
        """JSON-ready: every field by name."""
        return asdict(self)


DEFAULT_RULE = ScoringRule()  # the contract's thresholds


class DwiLesions(NamedTuple):
    """``lesion_from_dwi``'s result.

    mask: bool [N, H, W]; notes: one line per region side whose reference fell back;
    references: {region_key: {hemi: {"reference": "homologous" | "all-labelled" | "none",
    "median": float}}} (JSON-ready) for the region sides that are present.
    """

    mask: np.ndarray
    notes: list[str]
    references: dict[str, dict[str, dict[str, Any]]]


# --- lesion maps -----------------------------------------------------------------------


def brain_mask(
    classes: np.ndarray,
    pixel_spacing_mm: tuple[float, float] | None = None,
    margin_mm: float = BRAIN_MARGIN_MM,
) -> np.ndarray:
    """bool [N, H, W]: the labelled ASPECTS regions (classes > 0), dilated within each slice
    by ``margin_mm`` (Euclidean, in mm: scipy.ndimage.distance_transform_edt with the
    pixel spacing) when ``pixel_spacing_mm`` (row, column spacing) is given.

    In-plane only: slices are thick (often 5 mm), so a margin across slices would reach
    far beyond the regions."""
    regions = np.asarray(classes) > 0
    if pixel_spacing_mm is None or margin_mm <= 0:
        return regions
    row_mm, col_mm = (float(s) for s in pixel_spacing_mm)
    if not (math.isfinite(row_mm) and math.isfinite(col_mm) and row_mm > 0 and col_mm > 0):
        raise UsageError(f"pixel_spacing_mm must be two finite numbers > 0, not {pixel_spacing_mm}")
    out = regions.copy()
    for n in range(regions.shape[0]):
        if regions[n].any():
            distance = ndimage.distance_transform_edt(~regions[n], sampling=(row_mm, col_mm))
            out[n] = distance <= margin_mm
    return out


def lesion_from_adc(
    adc: np.ndarray,
    covered: np.ndarray,
    classes: np.ndarray,
    rule: ScoringRule = DEFAULT_RULE,
    *,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> np.ndarray:
    """bool [N, H, W]: infarct core = 0 < ADC < rule.adc_threshold (contract.ADC_UNIT)
    inside the brain mask, where the ADC is covered.

    adc: float32 [N, H, W] in ADC_UNIT; covered: bool [N, H, W] (``AdcOnGrid.covered``).
    The brain mask is ``brain_mask(classes, pixel_spacing_mm)``: the labelled regions,
    dilated in-plane by BRAIN_MARGIN_MM when the pixel spacing is given (a lesion
    running past a region's edge stays one lesion), never the whole image: outside the
    brain, noise and air interfaces have low ADC.  CSF has a high ADC (~3000), so it never
    counts; zero or negative values (no fit) and uncovered voxels never count.
    """
    adc = np.asarray(adc)
    _same_shape(classes, adc=adc, covered=covered)
    brain = brain_mask(classes, pixel_spacing_mm)
    return brain & np.asarray(covered, dtype=bool) & (adc > 0) & (adc < rule.adc_threshold)


def lesion_from_dwi(
    dwi: np.ndarray,
    classes: np.ndarray,
    hemis: np.ndarray,
    rule: ScoringRule = DEFAULT_RULE,
) -> DwiLesions:
    """DWI hyperintensity against the homologous region of the other hemisphere.

    A voxel of region R on side s is lesion when dwi > rule.dwi_ratio x the median DWI of
    region R on the other side (the median of the other side, so a lesion filling part of
    side s does not raise its own reference).  Where the other side has fewer than
    MIN_REFERENCE_VOXELS voxels or a median <= 0, the reference is the median of all
    labelled voxels (both sides, every region), and a note says so.  Only labelled voxels
    can be lesion; voxels with dwi <= 0 never are.  A lesion present on both sides of a
    region is not seen (each side is compared with the other).
    """
    dwi = np.asarray(dwi)
    _same_shape(classes, dwi=dwi, hemis=hemis)
    codes = _joint_codes(classes, hemis)
    flat_codes = codes.ravel()
    idx = np.flatnonzero(flat_codes >= _N_CODES)  # labelled voxels
    mask = np.zeros(codes.shape, dtype=bool)
    if idx.size == 0:
        return DwiLesions(mask, ["no labelled voxels: no DWI lesion map"], {})
    group = flat_codes[idx]
    values = dwi.ravel()[idx].astype(np.float64)
    threshold, notes, references = _dwi_thresholds(group, values, rule)
    lesion = (values > threshold[group]) & (values > 0)
    mask.ravel()[idx[lesion]] = True
    return DwiLesions(mask, notes, references)


def _dwi_thresholds(
    group: np.ndarray, values: np.ndarray, rule: ScoringRule
) -> tuple[np.ndarray, list[str], dict[str, dict[str, dict[str, Any]]]]:
    """(DWI threshold per joint code, inf without a reference; notes; references)."""
    order = np.argsort(group, kind="stable")
    sorted_group, sorted_values = group[order], values[order]
    bounds = np.searchsorted(sorted_group, np.arange(_N_CODES * contract.NUM_CLASSES + 1))
    overall = float(np.median(values))
    threshold = np.full(_N_CODES * contract.NUM_CLASSES, np.inf)
    notes: list[str] = []
    references: dict[str, dict[str, dict[str, Any]]] = {}
    right, left = (contract.HEMISPHERE_CODES[h] for h in contract.HEMISPHERES)
    for region in contract.REGIONS:
        for side, other in ((right, left), (left, right)):
            code = region.index * _N_CODES + side
            if bounds[code + 1] == bounds[code]:
                continue  # region absent on this side
            hemi, other_hemi = _SIDE_OF_CODE[side], _SIDE_OF_CODE[other]
            other_code = region.index * _N_CODES + other
            ref = sorted_values[bounds[other_code] : bounds[other_code + 1]]
            source, median, fallback = _dwi_reference(ref, overall)
            if fallback is not None:
                notes.append(
                    f"{region.key} {hemi}: the homologous region ({other_hemi}) {fallback}"
                )
            if median > 0:
                threshold[code] = rule.dwi_ratio * median
            references.setdefault(region.key, {})[hemi] = {
                "reference": source,
                "median": _round_sig(median),
            }
    return threshold, notes, references


def _dwi_reference(ref: np.ndarray, overall: float) -> tuple[str, float, str | None]:
    """(reference source, median, why the homologous ``ref`` was not used, or None)."""
    median = float(np.median(ref)) if ref.size else 0.0
    if not (ref.size < MIN_REFERENCE_VOXELS or not median > 0):
        return "homologous", median, None
    source, median = ("all-labelled", overall) if overall > 0 else ("none", 0.0)
    why = (
        f"has {ref.size} voxels (< {MIN_REFERENCE_VOXELS})"
        if ref.size < MIN_REFERENCE_VOXELS
        else f"has median DWI {float(np.median(ref)):g} (<= 0)"
    )
    then = (
        "reference = the median DWI of all labelled voxels"
        if source == "all-labelled"
        else "no reference (all labelled voxels <= 0): no lesion here"
    )
    return source, median, f"{why}; {then}"


def remove_specks(
    mask: np.ndarray, voxel_ml: float, min_ml: float = contract.MIN_LESION_ML
) -> np.ndarray:
    """bool [N, H, W]: ``mask`` without its connected components smaller than ``min_ml``.

    Components are 3D and 26-connected (faces, edges and corners; scipy.ndimage.label):
    a lesion whose outline shifts between thick slices stays one lesion.  A component of
    exactly ``min_ml`` (up to float rounding) is kept.  min_ml = 0 keeps everything.
    """
    voxel_ml = _positive("voxel_ml", voxel_ml)
    if not (math.isfinite(float(min_ml)) and float(min_ml) >= 0):
        raise UsageError(f"min_ml must be a finite number >= 0, not {min_ml!r}")
    mask = np.asarray(mask, dtype=bool)
    if float(min_ml) == 0 or not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=CONNECTIVITY_26)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = _reaches(sizes * voxel_ml, float(min_ml))
    keep[0] = False
    return keep[labels]


def lesion_label_map(mask: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W]: 1 = lesion, 0 elsewhere (``geometry.from_display`` takes it to the
    original grid, ``labelmap``-style writing to a NIfTI in the source header)."""
    return np.asarray(mask, dtype=bool).astype(np.uint8)


# --- involvement and score --------------------------------------------------------------


def involvement(
    mask: np.ndarray,
    classes: np.ndarray,
    hemis: np.ndarray,
    voxel_ml: float,
    rule: ScoringRule = DEFAULT_RULE,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per region and hemisphere: how much of it is lesion, and whether it is affected.

    Returns {region_key: {hemi: {"lesion_ml", "region_ml", "fraction", "affected",
    "uncertain", "lesion_voxels", "region_voxels"}}} for every region key and both
    hemispheres (JSON-ready; mL rounded to ML_DECIMALS, fraction to FRACTION_DECIMALS).
    Lesion voxels outside the regions do not count.

    affected = fraction >= rule.min_fraction AND lesion_ml >= rule.min_volume_ml (judged
    on the unrounded values, a threshold reached up to float rounding counts).
    uncertain = the decision could flip if a quantity q moved within the band
    t / f <= q < t * f (f = rule.uncertain_factor) around its threshold t: an affected
    region is uncertain when either quantity is below t * f; an unaffected one when every
    quantity that fails its threshold is at least t / f (a region far below on one
    quantity stays unaffected whatever the other does).  An absent region (0 voxels) is
    unaffected and certain.
    """
    voxel_ml = _positive("voxel_ml", voxel_ml)
    mask = np.asarray(mask, dtype=bool)
    _same_shape(classes, mask=mask, hemis=hemis)
    codes = _joint_codes(classes, hemis)
    n_codes = _N_CODES * contract.NUM_CLASSES
    region_counts = np.bincount(codes.ravel(), minlength=n_codes)
    lesion_counts = np.bincount(codes[mask], minlength=n_codes)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for region in contract.REGIONS:
        out[region.key] = {}
        for hemi, side in contract.HEMISPHERE_CODES.items():
            code = region.index * _N_CODES + side
            n_region, n_lesion = int(region_counts[code]), int(lesion_counts[code])
            lesion_ml = n_lesion * voxel_ml
            fraction = n_lesion / n_region if n_region else 0.0
            quantities = ((fraction, rule.min_fraction), (lesion_ml, rule.min_volume_ml))
            affected = all(_reaches(q, t) for q, t in quantities)
            out[region.key][hemi] = {
                "lesion_ml": round(lesion_ml, ML_DECIMALS),
                "region_ml": round(n_region * voxel_ml, ML_DECIMALS),
                "fraction": round(fraction, FRACTION_DECIMALS),
                "affected": bool(affected),
                "uncertain": _uncertain(quantities, affected, rule.uncertain_factor),
                "lesion_voxels": n_lesion,
                "region_voxels": n_region,
            }
    return out


def aspects_score(
    inv: dict[str, dict[str, dict[str, Any]]],
    qc_flagged_regions: Iterable[str] = frozenset(),
) -> dict[str, Any]:
    """The ASPECTS score from ``involvement``'s result.

    affected_hemisphere: None when no region holds any lesion; else the side with more
    lesion volume in the ASPECTS regions (a tie goes to the side with more affected
    regions, then to "r", and is uncertain).  score = 10 - affected regions on that side
    (10 when none); scores = both sides' 10 - n; affected_regions / uncertain_regions =
    region keys per side (contract order); lesion_ml = lesion volume per side.
    uncertain: an uncertain region on the affected side, a tie, or any region in
    ``qc_flagged_regions`` (region keys flagged by quality control: their extent, hence
    their fraction, is in doubt).  Returns a JSON-ready dict.
    """
    flagged = sorted(set(qc_flagged_regions))
    unknown = [k for k in flagged if k not in contract.REGION_BY_KEY]
    if unknown:
        raise UsageError(
            f"qc_flagged_regions: unknown region keys {unknown}; use {list(contract.REGION_KEYS)}"
        )
    affected, uncertain_regions, voxels, lesion_ml = _side_tallies(inv)
    side, notes = _affected_side(voxels, affected)
    notes += implausible_notes(affected)
    scores = {h: 10 - len(affected[h]) for h in contract.HEMISPHERES}
    uncertain = bool((side is not None and uncertain_regions[side]) or flagged or notes)
    return {
        "affected_hemisphere": side,
        "score": scores[side] if side is not None else 10,
        "scores": scores,
        "affected_regions": affected,
        "uncertain": uncertain,
        "uncertain_regions": uncertain_regions,
        "lesion_ml": lesion_ml,
        "qc_flagged_regions": flagged,
        "notes": notes,
    }


def _side_tallies(
    inv: dict[str, dict[str, dict[str, Any]]],
) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, int], dict[str, float]]:
    """Per side: (affected region keys, uncertain region keys, lesion voxels, lesion mL)."""
    sides = contract.HEMISPHERES
    keys = contract.REGION_KEYS
    try:
        cells = {h: {k: inv[k][h] for k in keys} for h in sides}
        affected = {h: [k for k in keys if cells[h][k]["affected"]] for h in sides}
        uncertain_regions = {h: [k for k in keys if cells[h][k]["uncertain"]] for h in sides}
        voxels = {h: sum(int(cells[h][k]["lesion_voxels"]) for k in keys) for h in sides}
        lesion_ml = {
            h: round(sum(float(cells[h][k]["lesion_ml"]) for k in keys), ML_DECIMALS) for h in sides
        }
    except (KeyError, TypeError) as exc:
        raise UsageError(
            f"involvement lacks the entry {exc}; pass involvement()'s result"
        ) from None
    return affected, uncertain_regions, voxels, lesion_ml


def _affected_side(
    voxels: dict[str, int], affected: dict[str, list[str]]
) -> tuple[str | None, list[str]]:
    """(the affected hemisphere or None without lesion, the note of a tie if any)."""
    right, left = contract.HEMISPHERES
    if voxels[right] == voxels[left] == 0:
        return None, []
    if voxels[right] != voxels[left]:
        return (right if voxels[right] > voxels[left] else left), []
    side = left if len(affected[left]) > len(affected[right]) else right
    return side, [
        "equal lesion volume in both hemispheres: the affected hemisphere is the one with "
        "more affected regions (else r)"
    ]


def implausible_notes(affected: dict[str, list[str]]) -> list[str]:
    """Why a lesion map is not an ordinary (unilateral, limited) MCA stroke: affected
    regions in both hemispheres, or EXTENSIVE_REGIONS or more on one side (a reason to
    review the images; the score is then uncertain)."""
    right, left = (affected[h] for h in contract.HEMISPHERES)
    notes = []
    if right and left:
        notes.append(
            f"affected regions in both hemispheres (r: {', '.join(right)}; l: {', '.join(left)}):"
            " not an ordinary unilateral MCA stroke; the score counts one side only: review "
            "the images"
        )
    for hemi, keys in affected.items():
        if len(keys) >= EXTENSIVE_REGIONS:
            notes.append(
                f"{len(keys)} of {len(contract.REGIONS)} regions affected on side {hemi}: an "
                "extensive lesion map (or a contrast the rule misreads): review the images"
            )
    return notes


# --- helpers ----------------------------------------------------------------------------


def _reaches(q: Any, t: float) -> Any:
    """q >= t, where q equal to t up to float rounding (relative 1e-9) counts."""
    return q >= t * (1.0 - _REL_TOL)


def _uncertain(quantities: tuple[tuple[float, float], ...], affected: bool, f: float) -> bool:
    if affected:
        return any(q < t * f for q, t in quantities)
    failing = [(q, t) for q, t in quantities if not _reaches(q, t)]
    return all(q >= t / f for q, t in failing)


def _joint_codes(classes: np.ndarray, hemis: np.ndarray) -> np.ndarray:
    """uint8 class * 4 + hemisphere code; refuses values outside the contract."""
    classes, hemis = np.asarray(classes), np.asarray(hemis)
    if classes.size and (classes.min() < 0 or classes.max() >= contract.NUM_CLASSES):
        raise UsageError(f"classes must be 0..{contract.NUM_CLASSES - 1} (contract class indices)")
    codes = set(contract.HEMISPHERE_CODES.values())
    if hemis.size and (hemis.min() < 0 or hemis.max() > max(codes)):
        raise UsageError(f"hemisphere codes must be 0 or {sorted(codes)}")
    return classes.astype(np.uint8) * np.uint8(_N_CODES) + hemis.astype(np.uint8)


def _same_shape(classes: np.ndarray, **arrays: np.ndarray) -> None:
    shape = np.shape(classes)
    if len(shape) != 3:
        raise UsageError(f"classes must be a display stack [N, H, W], not shape {shape}")
    for name, array in arrays.items():
        if np.shape(array) != shape:
            raise UsageError(f"{name} {np.shape(array)} and classes {shape} must have one shape")


def _positive(name: str, value: float) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise UsageError(f"{name} must be a number > 0, not {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise UsageError(f"{name} must be a finite number > 0, not {value!r}")
    return float(value)


def _round_sig(x: float, digits: int = 6) -> float:
    """x rounded to ``digits`` significant digits (a DWI median in any unit)."""
    return float(f"{x:.{digits}g}") if x else 0.0
