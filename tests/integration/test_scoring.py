"""The ASPECTS score through the real Triton ensemble, with answers known in advance.

The oracle unet segments a phantom painted with its band centres exactly
(``oracle_cases``), and an ADC map built from WORLD coordinates (a low-ADC sphere around the
right lentiform nucleus) on a different grid — coarser, shifted, stored LPS — must come out
as a lesion in the right lentiform nucleus: ASPECTS 10 - (regions it reaches) on the right,
10 on the left.  The CLI prints the score and writes the lesion map in the source grid."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from aspects_client import AdcCoverageError, AdcUnitsError, AspectsClient, contract
from aspects_client.outputs import printable
from aspects_client.scoring.lesions import ScoringRule

from .oracle_cases import painted_phantom

pytestmark = [pytest.mark.integration]

LESION_RADIUS_MM = 9.0
CORE_ADC, NORMAL_ADC, CSF_ADC = 400.0, 800.0, 3000.0


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    phantom = painted_phantom(seed=3, n_slices=12)
    folder = tmp_path_factory.mktemp("scoring")
    dwi = folder / "dwi.nii.gz"
    nib.save(phantom.image, dwi)
    right = contract.HEMISPHERE_CODES["r"]
    lentiform = contract.REGION_BY_KEY["l"].index
    ijk = np.argwhere((phantom.classes == lentiform) & (phantom.hemispheres == right))
    centre = nib.affines.apply_affine(phantom.image.affine, ijk).mean(axis=0)
    return phantom, dwi, centre


def adc_map(centre: np.ndarray, affine: np.ndarray, shape, scale: float = 1.0) -> nib.Nifti1Image:
    """ADC on its own grid from world coordinates: core sphere, brain-like box, CSF outside."""
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(affine, ijk)
    distance = np.linalg.norm(xyz - centre, axis=1)
    values = np.where(distance <= LESION_RADIUS_MM, CORE_ADC, NORMAL_ADC)
    values = np.where(np.abs(xyz[:, 0]) > 75, CSF_ADC, values)
    return nib.Nifti1Image((values.reshape(shape) / scale).astype(np.float32), affine)


def other_grid(phantom) -> tuple[np.ndarray, tuple[int, int, int]]:
    """2 x 2 x 3 mm voxels stored LPS, covering the DWI's field of view with a margin."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in phantom.image.shape])).reshape(3, -1).T
    world = nib.affines.apply_affine(phantom.image.affine, corners)
    lo, hi = world.min(axis=0) - 6, world.max(axis=0) + 6
    zooms = np.array([2.0, 2.0, 3.0])
    shape = tuple(int(n) for n in np.ceil((hi - lo) / zooms) + 1)
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])  # LPS: x and y decrease with i and j
    affine[:3, 3] = [hi[0], hi[1], lo[2]]
    return affine, shape


def expected_regions(phantom, centre, client_labels: np.ndarray) -> set[str]:
    """Right-side regions the sphere covers enough of to be affected under the default rule
    (computed from the sphere and the labels the oracle returns)."""
    ijk = np.indices(phantom.image.shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(phantom.image.affine, ijk)
    inside = (np.linalg.norm(xyz - centre, axis=1) <= LESION_RADIUS_MM).reshape(
        phantom.image.shape
    )
    voxel_ml = abs(np.linalg.det(phantom.image.affine[:3, :3])) / 1000
    rule = ScoringRule()
    right = phantom.hemispheres == contract.HEMISPHERE_CODES["r"]
    out = set()
    for region in contract.REGIONS:
        in_region = (client_labels == region.index) & right
        lesion_ml = (in_region & inside).sum() * voxel_ml
        fraction = (in_region & inside).sum() / max(in_region.sum(), 1)
        # margins: the resampled sphere edge moves by under a voxel, so skip borderline ones
        if lesion_ml >= 2 * rule.min_volume_ml and fraction >= 2 * rule.min_fraction:
            out.add(region.key)
    return out


def test_adc_on_another_grid_scores_the_lesion_side(case, triton_oracle, tmp_path):
    phantom, dwi, centre = case
    affine, shape = other_grid(phantom)
    adc_path = tmp_path / "adc.nii.gz"
    nib.save(adc_map(centre, affine, shape, scale=1e6), adc_path)  # stored in mm^2/s
    with AspectsClient(triton_oracle.server.grpc_url) as client:
        result = client.segment(dwi, adc=adc_path)
    score = result.score
    assert score is not None and score["method"]["name"] == "adc"
    assert score["method"]["scale"] == 1e6 and score["method"]["scale_source"] == "detected"
    labels = np.asanyarray(result.label_image.dataobj)
    want = expected_regions(phantom, centre, labels)
    assert "l" in want
    assert score["affected_hemisphere"] == "r"
    assert want <= set(score["affected_regions"]["r"]), (want, score["affected_regions"])
    assert score["affected_regions"]["l"] == [] and score["scores"]["l"] == 10
    assert score["score"] == 10 - len(score["affected_regions"]["r"])
    sphere_ml = 4 / 3 * np.pi * LESION_RADIUS_MM**3 / 1000
    assert 0.2 * sphere_ml < score["lesion_ml_total"] <= 1.1 * sphere_ml
    assert score["lesion_ml"]["l"] == 0 < score["lesion_ml"]["r"]
    lesion = np.asanyarray(result.lesion_image.dataobj)
    assert lesion.shape == phantom.image.shape
    np.testing.assert_allclose(result.lesion_image.affine, phantom.image.affine)
    ijk = np.argwhere(lesion > 0)
    lesion_world = nib.affines.apply_affine(phantom.image.affine, ijk)
    assert np.all(np.linalg.norm(lesion_world - centre, axis=1) <= LESION_RADIUS_MM + 3.0)
    assert result.document["aspects"] is score
    from aspects_client.document import validate

    validate(result.document)
    assert result.overlay_png is not None


def test_a_lesion_free_adc_scores_ten(case, triton_oracle, tmp_path):
    phantom, dwi, _ = case
    far = np.array([500.0, 500.0, 500.0])  # the core sphere lies outside the head
    adc_path = tmp_path / "adc_clean.nii.gz"
    nib.save(adc_map(far, phantom.image.affine, phantom.image.shape), adc_path)
    with AspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
        score = client.segment(dwi, adc=adc_path).score
    assert score["score"] == 10 and score["affected_hemisphere"] is None
    assert score["lesion_ml_total"] == 0 and score["scores"] == {"r": 10, "l": 10}


def test_bad_adc_inputs_are_refused_with_what_to_send(case, triton_oracle, tmp_path):
    phantom, dwi, centre = case
    far_affine = phantom.image.affine.copy()
    far_affine[:3, 3] += 1000.0  # the same map, its field of view elsewhere
    elsewhere = tmp_path / "elsewhere.nii.gz"
    same = adc_map(centre, phantom.image.affine, phantom.image.shape)
    nib.save(nib.Nifti1Image(same.get_fdata(dtype=np.float32), far_affine), elsewhere)
    odd_units = tmp_path / "odd_units.nii.gz"
    nib.save(adc_map(centre, phantom.image.affine, phantom.image.shape, scale=1e-3), odd_units)
    nan = tmp_path / "nan.nii.gz"
    img = adc_map(centre, phantom.image.affine, phantom.image.shape)
    data = img.get_fdata(dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), nan)
    with AspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
        with pytest.raises(AdcCoverageError, match="ADC"):
            client.segment(dwi, adc=elsewhere)
        with pytest.raises(AdcUnitsError, match="--adc-scale"):
            client.segment(dwi, adc=odd_units)
        with pytest.raises(Exception, match="NaN") as info:
            client.segment(dwi, adc=nan)
        assert info.type.__module__ == "aspects_client.errors"


def test_cli_prints_the_score_and_writes_the_lesion_map(case, triton_oracle, tmp_path):
    phantom, dwi, centre = case
    affine, shape = other_grid(phantom)
    adc_path = tmp_path / "adc.nii.gz"
    nib.save(adc_map(centre, affine, shape), adc_path)
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "aspects_client.cli", "segment", str(dwi), "-o", str(out)]
    cmd += ["--adc", str(adc_path), "--lesion", "--overlay", "-q"]
    cmd += ["--url", triton_oracle.server.grpc_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(out.read_text())
    score = document["aspects"]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith(f"{printable(str(dwi))}: ASPECTS {score['score']} (right; affected:")
    assert "L" in line.split("affected:")[1]
    lesion = nib.load(tmp_path / "out_lesion.nii.gz")
    assert lesion.shape == phantom.image.shape and int(np.asanyarray(lesion.dataobj).max()) == 1
    assert (tmp_path / "out_overlay.png").stat().st_size > 0
    mismatch = subprocess.run(
        [*cmd[:4], str(dwi), str(dwi), "-o", f"{tmp_path}/many/", "--adc", str(adc_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert mismatch.returncode == 2 and "one --adc per SOURCE" in mismatch.stderr
