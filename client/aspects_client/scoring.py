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

from . import contract
from .display_stack import PreparedVolume
from .geometry import from_display, to_display
from .lesions import (
    BRAIN_MARGIN_MM,
    ScoringRule,
    aspects_score,
    involvement,
    lesion_from_adc,
    lesion_from_dwi,
    remove_specks,
)
from .volume_io import Volume

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
    from .adc import adc_on_grid

    geometry = prepared.geometry
    voxel_ml = geometry.voxel_volume_mm3 / 1000.0
    dwi = np.asarray(to_display(np.asarray(volume.data, np.float32), geometry), np.float32)
    method: dict[str, Any]
    if adc is not None:
        regions = np.asarray(from_display(classes > 0, geometry), bool)
        on_grid = adc_on_grid(adc, volume, scale=adc_scale, regions=regions)
        adc_display = np.asarray(to_display(on_grid.values, geometry), np.float32)
        covered_display = np.asarray(to_display(on_grid.covered, geometry), bool)
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
        }
    else:
        found = lesion_from_dwi(dwi, classes, hemispheres, rule)
        raw = found.mask
        method = {
            "name": "dwi",
            "description": f"DWI > {rule.dwi_ratio:g} x the median of the homologous region "
            "on the other side",
        }
        if found.notes:
            method["notes"] = list(found.notes)
    lesion = remove_specks(raw, voxel_ml, rule.min_lesion_ml)
    inv = involvement(lesion, classes, hemispheres, voxel_ml, rule)
    score = aspects_score(inv, qc_flagged_regions(qc))
    section = {
        "method": method,
        "rule": rule_json(rule),
        **score,
        "lesion_ml_total": round(float(lesion.sum()) * voxel_ml, 4),
        "involvement": inv,
    }
    data = np.asfortranarray(from_display(lesion.astype(np.uint8), geometry))
    image = nib.Nifti1Image(data, geometry.affine, _lesion_header(volume))
    image.header.set_data_dtype(np.uint8)
    image.header.set_intent("label", name="lesion")
    image.header["descrip"] = f"ASPECTS lesion map ({method['name']}): 1 = lesion".encode()[:79]
    image.header["cal_min"], image.header["cal_max"] = 0, LESION_LABEL
    return Scored(section=section, lesion=lesion, lesion_image=image)


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
