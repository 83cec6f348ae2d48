"""No confident nonsense (issue 24): inputs that used to be scored or reported as if normal
(exit 0) are refused, or carry the uncertain flag with the reason.  Each case is built here
from a seeded phantom with exact labels (``make_phantom``: b≈1000-like contrast, FAST tissue
codes), so the segmentation is the truth and only the rule under test can fail.  The cases
through the real Triton ensemble and the CLI are in tests/integration/test_refusals.py."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract
from aspects_client.assemble import assemble
from aspects_client.display_stack import prepare
from aspects_client.errors import (
    AdcContentError,
    AdcCoverageError,
    CorruptVolumeError,
    NotAHeadImageError,
    ScoreRefusedError,
)
from aspects_client.geometry import to_display
from aspects_client.intensity import window_to_uint8
from aspects_client.qc import refuse_implausible_head
from aspects_client.scoring.score import score_volume
from aspects_client.volume_io import load_volume
from aspects_synth import make_phantom
from aspects_synth.atlas import TISSUE_CSF

CSF_ADC, TISSUE_ADC = 3000.0, 800.0


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=5, in_plane=(192, 192), n_slices=14)


def _image(phantom, data: np.ndarray) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data, np.float32), phantom.image.affine)


def b1000(phantom) -> nib.Nifti1Image:
    return phantom.image


def b0(phantom) -> nib.Nifti1Image:
    """CSF bright (2.5 x grey matter), as on a b0 / T2 image."""
    data = np.asarray(phantom.image.dataobj, np.float32).copy()
    tissue = np.median(data[phantom.classes > 0])
    data[phantom.tissue == TISSUE_CSF] = 2.5 * tissue
    return _image(phantom, data)


def hyperintense_everywhere(phantom) -> nib.Nifti1Image:
    """Every region, on both sides, 3 x brighter: a bilateral lesion."""
    data = np.asarray(phantom.image.dataobj, np.float32).copy()
    data[phantom.classes > 0] *= 3.0
    return _image(phantom, data)


def adc_of(phantom, zero_fraction: float = 0.0) -> nib.Nifti1Image:
    """A lesion-free ADC map on the DWI's grid (CSF 3000, tissue 800, background 0), with the
    lowest ``zero_fraction`` of its slices zeroed (no value)."""
    data = np.where(phantom.tissue == TISSUE_CSF, CSF_ADC, TISSUE_ADC).astype(np.float32)
    data[phantom.tissue == 0] = 0.0
    data[..., : round(zero_fraction * data.shape[2])] = 0.0
    return _image(phantom, data)


def score_of(phantom, dwi: nib.Nifti1Image, *, adc: nib.Nifti1Image | None = None,
             classes: np.ndarray | None = None) -> dict:
    """The score of ``dwi`` with the phantom's exact labels as the segmentation."""
    volume = load_volume(dwi, name="dwi")
    prepared = prepare(volume)
    labels = to_display(phantom.classes if classes is None else classes, prepared.geometry)
    labels = np.ascontiguousarray(labels, np.uint8)
    result = assemble(volume, prepared, labels, overlay=False)
    adc_volume = load_volume(adc, name="adc") if adc is not None else None
    return score_volume(volume, prepared, labels, result.hemispheres, result.document["qc"],
                        adc=adc_volume).section


@dataclass(frozen=True)
class Case:
    name: str
    dwi: Callable
    adc: Callable | None = None
    empty: bool = False
    error: type[Exception] | None = None
    match: str = ""


REFUSED = [
    Case("b0 contrast, DWI-only: CSF bright", b0, error=ScoreRefusedError,
         match=r"brighter than the caudate.*b≈1000 volume.*--adc"),
    Case("empty segmentation (noise, blank image)", b1000, empty=True, error=ScoreRefusedError,
         match="no ASPECTS region was found"),
    Case("the DWI itself given as the ADC map", b1000, adc=b1000, error=AdcContentError,
         match="same values as the DWI"),
    Case("a DWI-contrast map (CSF dark) given as the ADC map", b1000,
         adc=lambda ph: _image(ph, np.asarray(ph.image.dataobj) * 1.1),
         error=AdcContentError, match="darker than the caudate"),
    Case("two thirds of the ADC's slices zeroed", b1000, adc=lambda ph: adc_of(ph, 2 / 3),
         error=AdcCoverageError, match=r"valid value \(> 0\) in only \d+ %"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_what_cannot_be_judged_is_refused(phantom, case: Case) -> None:
    classes = np.zeros_like(phantom.classes) if case.empty else None
    adc = case.adc(phantom) if case.adc is not None else None
    with pytest.raises(case.error, match=case.match):
        score_of(phantom, case.dwi(phantom), adc=adc, classes=classes)


def test_what_can_be_judged_is_still_scored(phantom) -> None:
    """The controls: the b≈1000 phantom alone, and with a lesion-free ADC map."""
    dwi_only = score_of(phantom, b1000(phantom))
    assert dwi_only["score"] == 10 and dwi_only["notes"] == []  # (QC may flag a region)
    assert dwi_only["method"]["csf_tissue_ratio"] < 1.0
    with_adc = score_of(phantom, b1000(phantom), adc=adc_of(phantom))
    assert with_adc["score"] == 10 and with_adc["method"]["csf_tissue_ratio"] > 2.0


def test_a_bilateral_lesion_is_never_an_ordinary_score(phantom) -> None:
    """DWI-only compares each side with the other: a lesion on both sides was scored 10,
    certain.  Now it is uncertain and says why."""
    section = score_of(phantom, hyperintense_everywhere(phantom))
    assert section["uncertain"] is True
    assert any("hyperintense on both sides" in n and "--adc" in n for n in section["notes"])


@pytest.mark.parametrize("scale", [1e297, 1e-300], ids=["1e297", "1e-300"])
def test_the_window_is_computed_in_the_inputs_precision(phantom, scale: float) -> None:
    """A float64 volume near the ends of float64's range windows like the volume itself
    (it overflowed float32, or vanished in it: a blank image was sent)."""
    data = np.asarray(phantom.image.dataobj, np.float64)
    reference = window_to_uint8(data)
    scaled = window_to_uint8(data * scale)
    assert np.abs(scaled.astype(int) - reference.astype(int)).max() <= 1
    assert scaled.max() == 255


def test_a_float32_window_spanning_its_whole_range_is_not_blank() -> None:
    """±3e38 in float32: hi - lo overflows float32 (a blank image was sent)."""
    x = np.linspace(-3e38, 3e38, 64 * 64 * 4, dtype=np.float32).reshape(64, 64, 4)
    out = window_to_uint8(x)
    assert len(np.unique(out)) > 200 and out.max() == 255


def test_contrast_lost_in_a_float32_cast_is_kept() -> None:
    """1 + 1e-12 x: every value is 1.0 in float32; in float64 the contrast is there."""
    x = np.linspace(0.0, 1.0, 64 * 64 * 4).reshape(64, 64, 4)
    out = window_to_uint8(1.0 + 1e-12 * x)
    assert len(np.unique(out)) > 200


def _nii_bytes(phantom, vox_offset: float) -> bytes:
    raw = bytearray(phantom.image.to_bytes())
    header = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])))
    header["vox_offset"] = vox_offset
    raw[:348] = header.binaryblock
    return bytes(raw)


@pytest.mark.parametrize("offset", [0.0, float("nan"), 100.0, 352.5])
def test_a_vox_offset_inside_the_header_is_refused(phantom, offset: float) -> None:
    raw = _nii_bytes(phantom, offset)
    for data in (raw, gzip.compress(raw)):
        with pytest.raises(CorruptVolumeError, match="vox_offset"):
            load_volume(data, name="dwi.nii")


def test_a_head_of_impossible_size_is_refused(phantom) -> None:
    """19 mm pixels in the header (the voxels are a 0.45 mm-pixel head's): M1 was reported as
    20 litres."""
    affine = phantom.image.affine.copy()
    affine[:3, :2] *= 19.0 / np.linalg.norm(affine[:3, 0])
    liar = nib.Nifti1Image(np.asarray(phantom.image.dataobj), affine)
    volume = load_volume(liar, name="dwi")
    prepared = prepare(volume)
    labels = np.ascontiguousarray(to_display(phantom.classes, prepared.geometry), np.uint8)
    result = assemble(volume, prepared, labels, overlay=False)
    with pytest.raises(NotAHeadImageError, match=r"total [\d,]+ mL.*pixdim"):
        refuse_implausible_head(result.document["summary"], "dwi")
    sane = assemble(load_volume(phantom.image, name="dwi"), prepare(load_volume(
        phantom.image, name="dwi")), labels, overlay=False)
    refuse_implausible_head(sane.document["summary"], "dwi")  # the real head passes


def test_no_region_found_fails_qc(phantom) -> None:
    volume = load_volume(phantom.image, name="dwi")
    prepared = prepare(volume)
    empty = np.zeros(prepared.slices.shape, np.uint8)
    qc = assemble(volume, prepared, empty, overlay=False).document["qc"]
    assert qc["passed"] is False and qc["checks"]["regions_found"]["voxels"] == 0
    assert "no ASPECTS region found" in qc["flags"]
    labels = np.ascontiguousarray(to_display(phantom.classes, prepared.geometry), np.uint8)
    found = assemble(volume, prepared, labels, overlay=False).document["qc"]["checks"]
    assert found["regions_found"]["passed"] is True
    assert contract.MAX_REGIONS_ML > 0


def test_b0_contrast_is_seen_at_4_mm_pixels_too() -> None:
    """dipy's real b0 aniso_vox (4 x 4 x 5 mm) scored 2; its caudate heads are a few pixels
    each, which the contrast check must still use (it refuses that file with ratio 2.6)."""
    coarse = make_phantom(seed=6, in_plane=(56, 56), n_slices=14, fov_mm=224.0)
    with pytest.raises(ScoreRefusedError, match="brighter than the caudate"):
        score_of(coarse, b0(coarse))
    assert score_of(coarse, b1000(coarse))["method"]["csf_tissue_ratio"] < 1.0
