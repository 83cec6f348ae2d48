"""The ASPECTS score of one segmented volume: lesion map (from ADC, else from DWI against
the homologous region), involvement of every region per hemisphere, the score, and the
lesion label map in the original grid (docs/scoring.md).

The pure pieces live in ``lesions.py`` (lesion maps, involvement, score) and ``adc.py``
(ADC resampling and units); this module wires them to a ``Volume`` and its display stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from .. import contract
from ..display_stack import PreparedVolume
from ..errors import AdcContentError, ScoreRefusedError
from ..geometry import from_display, to_display
from ..volume_io import Volume
from .contrast import (
    ADC_MIN_CSF_RATIO,
    DWI_MAX_CSF_RATIO,
    bilateral_hyperintense,
    csf_tissue_ratio,
)
from .lesions import (
    BRAIN_MARGIN_MM,
    ScoringRule,
    aspects_score,
    involvement,
    lesion_from_adc,
    lesion_from_dwi,
    remove_specks,
)

LESION_LABEL = 1


@dataclass
class Scored:
    """section: the document's ``aspects`` object; lesion: bool [N, H, W] display stack;
    lesion_image: uint8 NIfTI (1 = lesion) in the source grid."""

    section: dict[str, Any]
    lesion: np.ndarray
    lesion_image: nib.Nifti1Image


def score_volume(
    volume: Volume,
    prepared: PreparedVolume,
    classes: np.ndarray,
    hemispheres: np.ndarray,
    qc: dict[str, Any],
    *,
    adc: Volume | None = None,
    adc_scale: float | None = None,
    rule: ScoringRule | None = None,
) -> Scored:
    """classes, hemispheres: uint8 [N, H, W] display stacks of the segmentation."""
    rule = rule or ScoringRule()
    if not np.any(classes):
        raise ScoreRefusedError(
            f"{volume.source}: no ASPECTS region was found in the segmentation, so there is "
            "nothing to score; send an axial head DWI (the b≈1000 volume) and check the overlay"
        )
    geometry = prepared.geometry
    voxel_ml = geometry.voxel_volume_mm3 / 1000.0
    dwi = display_intensities(volume, prepared)
    notes: list[str] = []
    if adc is not None:
        raw, method = _adc_lesion(volume, adc, adc_scale, prepared, classes, hemispheres, rule)
    else:
        raw, method, notes = _dwi_lesion(dwi, classes, hemispheres, volume.source, rule)
    lesion = remove_specks(raw, voxel_ml, rule.min_lesion_ml)
    section = _score_section(lesion, classes, hemispheres, voxel_ml, qc, method, notes, rule)
    image = _lesion_image(lesion, volume, prepared, method["name"])
    return Scored(section=section, lesion=lesion, lesion_image=image)


def _adc_lesion(
    volume: Volume,
    adc: Volume,
    adc_scale: float | None,
    prepared: PreparedVolume,
    classes: np.ndarray,
    hemispheres: np.ndarray,
    rule: ScoringRule,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(raw lesion bool [N, H, W], method section) of the ADC rule, the ADC map checked."""
    from .adc import adc_on_grid

    geometry = prepared.geometry
    refuse_dwi_as_adc(adc, volume)
    regions = np.asarray(from_display(classes > 0, geometry), bool)
    on_grid = adc_on_grid(adc, volume, scale=adc_scale, regions=regions)
    adc_display = np.asarray(to_display(on_grid.values, geometry), np.float32)
    covered_display = np.asarray(to_display(on_grid.covered, geometry), bool)
    adc_ratio = check_adc_contrast(adc_display, classes, hemispheres, adc.source)
    raw = lesion_from_adc(
        adc_display,
        covered_display,
        classes,
        rule,
        pixel_spacing_mm=geometry.display_pixel_spacing_mm,
    )
    method = {
        "name": "adc",
        "description": f"ADC < {rule.adc_threshold:g} x 10^-6 mm^2/s within the regions "
        f"(+{BRAIN_MARGIN_MM:g} mm in-plane)",
        "adc_source": adc.source,
        **on_grid.summary(),
        "csf_tissue_ratio": _rounded(adc_ratio),
    }
    return raw, method


def _dwi_lesion(
    dwi: np.ndarray,
    classes: np.ndarray,
    hemispheres: np.ndarray,
    source: str,
    rule: ScoringRule,
) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """(raw lesion bool [N, H, W], method section, notes) of the DWI-only rule."""
    ratio = check_dwi_contrast(dwi, classes, hemispheres, source)
    both = bilateral_hyperintense(dwi, classes, hemispheres, rule.dwi_ratio)
    notes = _dwi_notes(ratio, both, rule)
    found = lesion_from_dwi(dwi, classes, hemispheres, rule)
    method = {
        "name": "dwi",
        "description": f"DWI > {rule.dwi_ratio:g} x the median of the homologous region "
        "on the other side",
        "csf_tissue_ratio": _rounded(ratio),
    }
    if found.notes:
        method["notes"] = list(found.notes)
    return found.mask, method, notes


def _dwi_notes(ratio: float | None, both: list[str], rule: ScoringRule) -> list[str]:
    """The DWI-only score's caveats: contrast not checked, regions bright on both sides."""
    notes: list[str] = []
    if ratio is None:
        notes.append(
            "the DWI's contrast could not be checked (no slice shows both caudate heads "
            "with the ventricles between them): make sure this is the b≈1000 volume"
        )
    if both:
        notes.append(
            f"{', '.join(both)}: hyperintense on both sides (DWI > {rule.dwi_ratio:g} x the "
            "unlabelled brain tissue); the DWI-only rule compares each side with the other "
            "and cannot see a lesion present on both: send an ADC map (--adc)"
        )
    return notes


def _score_section(
    lesion: np.ndarray,
    classes: np.ndarray,
    hemispheres: np.ndarray,
    voxel_ml: float,
    qc: dict[str, Any],
    method: dict[str, Any],
    notes: list[str],
    rule: ScoringRule,
) -> dict[str, Any]:
    """The document's ``aspects`` section: method, rule, score, lesion total, involvement."""
    inv = involvement(lesion, classes, hemispheres, voxel_ml, rule)
    score = aspects_score(inv, qc_flagged_regions(qc))
    if notes:
        score["notes"] = [*notes, *score["notes"]]
        score["uncertain"] = True
    return {
        "method": method,
        "rule": rule_json(rule),
        **score,
        "lesion_ml_total": round(float(lesion.sum()) * voxel_ml, 4),
        "involvement": inv,
    }


def _lesion_image(
    lesion: np.ndarray, volume: Volume, prepared: PreparedVolume, method_name: str
) -> nib.Nifti1Image:
    """The uint8 lesion label map (1 = lesion) in the source grid, with the source's codes."""
    geometry = prepared.geometry
    data = np.asfortranarray(from_display(lesion.astype(np.uint8), geometry))
    image = nib.Nifti1Image(data, geometry.affine, _lesion_header(volume))
    image.header.set_data_dtype(np.uint8)
    image.header.set_intent("label", name="lesion")
    image.header["descrip"] = f"ASPECTS lesion map ({method_name}): 1 = lesion".encode()[:79]
    image.header["cal_min"], image.header["cal_max"] = 0, LESION_LABEL
    return image


def display_intensities(volume: Volume, prepared: PreparedVolume) -> np.ndarray:
    """float32 [N, H, W]: the volume's intensities in display order, divided by the window's
    upper bound (ratios are unchanged; a float64 volume scaled near 1e300 does not overflow
    float32).  The division is done in the input's own precision."""
    hi = float(prepared.window[1])
    data = to_display(volume.data, prepared.geometry)
    if not (np.isfinite(hi) and hi > 0):
        return np.asarray(data, np.float32)
    wide = np.float64 if np.asarray(data).dtype.itemsize > 4 else np.float32
    return np.asarray(np.true_divide(data, hi, dtype=wide), np.float32)


def refuse_dwi_as_adc(adc: Volume, dwi: Volume) -> None:
    """AdcContentError when the "ADC map" holds the DWI's own voxel values."""
    a, d = np.asarray(adc.data), np.asarray(dwi.data)
    if a.shape == d.shape and np.array_equal(a, d):
        raise AdcContentError(
            f"{adc.source}: the ADC map holds the same values as the DWI {dwi.source}; "
            "send the ADC map computed from this DWI series, not the DWI itself"
        )


def check_dwi_contrast(
    dwi: np.ndarray, classes: np.ndarray, hemispheres: np.ndarray, source: str
) -> float | None:
    """The CSF/caudate ratio of the DWI; ScoreRefusedError when CSF is bright (b0/T2)."""
    ratio = csf_tissue_ratio(dwi, classes, hemispheres)
    if ratio is not None and ratio > DWI_MAX_CSF_RATIO:
        raise ScoreRefusedError(
            f"{source}: the ventricles are brighter than the caudate (ratio {ratio:.2f}), as on "
            "a b0 or T2 image; the DWI-only score needs b≈1000 contrast (dark CSF): send the "
            "b≈1000 volume (--volume-index of a 4D series) or an ADC map (--adc)"
        )
    return ratio


def check_adc_contrast(
    adc: np.ndarray, classes: np.ndarray, hemispheres: np.ndarray, source: str
) -> float | None:
    """The CSF/caudate ratio of the ADC map; AdcContentError when CSF is dark (a DWI)."""
    ratio = csf_tissue_ratio(adc, classes, hemispheres)
    if ratio is not None and ratio < ADC_MIN_CSF_RATIO:
        raise AdcContentError(
            f"{source}: the ventricles are darker than the caudate (ratio {ratio:.2f}), as on a "
            "DWI; on an ADC map CSF is bright (about 3000 x 10^-6 mm^2/s): send the ADC map "
            "computed from this DWI series"
        )
    return ratio


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def _lesion_header(volume: Volume) -> nib.Nifti1Header:
    """A header with the source's sform/qform codes, so the grids match exactly."""
    header = nib.Nifti1Header()
    sform, scode = volume.header.get_sform(coded=True)
    qform, qcode = volume.header.get_qform(coded=True)
    if sform is not None and scode:
        header.set_sform(sform, int(scode))
    if qform is not None and qcode:
        header.set_qform(qform, int(qcode))
    return header


def qc_flagged_regions(qc: dict[str, Any]) -> set[str]:
    """Region keys whose hemisphere assignment or volume QC calls into question."""
    checks = qc.get("checks", {})
    if not checks.get("midsagittal_plane", {}).get("passed", True):
        return set(contract.REGION_KEYS)  # left/right itself is uncertain
    return set(checks.get("asymmetry", {}).get("regions", []))


def rule_json(rule: ScoringRule) -> dict[str, Any]:
    return {
        **rule.as_dict(),
        "adc_unit": contract.ADC_UNIT,
        "affected_when": f"lesion fraction >= {rule.min_fraction:g} and lesion volume >= "
        f"{rule.min_volume_ml:g} mL",
    }
