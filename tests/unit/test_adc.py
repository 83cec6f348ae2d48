"""The ADC map on the DWI's grid: resampling by the affines, coverage, units, refusals."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract
from aspects_client.errors import InvalidVolumeError, NonFiniteDataError, UsageError
from aspects_client.scoring.adc import (
    AdcCoverageError,
    AdcUnitsError,
    adc_on_grid,
    check_adc_scale,
    detect_adc_scale,
)
from aspects_client.volume_io import Volume, load_volume

DWI_SHAPE = (96, 96, 8)
DWI_ZOOMS = (2.5, 2.5, 5.0)


def centred_affine(shape, zooms, rotation=None, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """voxel -> world affine: the grid's centre at ``centre`` (mm), axes rotated."""
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) if rotation is None else rotation) @ np.diag(zooms)
    middle = (np.asarray(shape, float) - 1) / 2
    affine[:3, 3] = np.asarray(centre) - affine[:3, :3] @ middle
    return affine


def rotation(z_deg: float, x_deg: float = 0.0) -> np.ndarray:
    a, b = np.radians(z_deg), np.radians(x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def load(data: np.ndarray, affine: np.ndarray, name: str) -> Volume:
    """Through the client's own loader (NIfTI bytes -> validated Volume)."""
    return load_volume(nib.Nifti1Image(data.astype(np.float32), affine).to_bytes(), name=name)


def world_of(affine: np.ndarray, shape) -> np.ndarray:
    """World mm [3, *shape] of every voxel centre."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=0)
    return (
        np.tensordot(affine[:3, :3], ijk.astype(float), axes=1) + affine[:3, 3][:, None, None, None]
    )


def near(value: float, shape, seed: int = 9) -> np.ndarray:
    """About ``value`` everywhere (+-1 %): the loader refuses constant images."""
    return value * np.random.default_rng(seed).uniform(0.99, 1.01, shape)


def dwi_volume() -> Volume:
    rng = np.random.default_rng(0)
    return load(rng.random(DWI_SHAPE) * 100 + 10, centred_affine(DWI_SHAPE, DWI_ZOOMS), "dwi")


def linear_adc(world: np.ndarray) -> np.ndarray:
    """A known ADC field (x 1e-6 mm^2/s), linear in world mm: trilinear is exact on it."""
    x, y, z = world
    return 1000.0 + 1.0 * x + 1.5 * y + 0.5 * z


# --- resampling by the affines -----------------------------------------------------------


def test_linear_field_on_a_rotated_shifted_grid_lands_exactly() -> None:
    dwi = dwi_volume()
    shape = (150, 150, 16)
    affine = centred_affine(shape, (2.0, 2.0, 4.0), rotation(12.0, 5.0), centre=(3, -4, 2))
    adc = load(linear_adc(world_of(affine, shape)), affine, "adc")
    result = adc_on_grid(adc, dwi)
    dwi_world = world_of(dwi.affine, DWI_SHAPE)
    # DWI voxels whose ADC coordinates lie between the ADC's outer voxel centres
    source = np.tensordot(np.linalg.inv(affine)[:3, :3], dwi_world, axes=1)
    source += np.linalg.inv(affine)[:3, 3][:, None, None, None]
    interior = np.all(
        (source >= 0) & (source <= np.asarray(shape)[:, None, None, None] - 1), axis=0
    )
    assert interior.mean() > 0.9
    assert result.values.shape == DWI_SHAPE and result.values.dtype == np.float32
    assert result.covered[interior].all()
    np.testing.assert_allclose(
        result.values[interior], linear_adc(dwi_world)[interior], rtol=0, atol=0.02
    )
    assert result.scale == 1.0 and result.scale_detected
    assert result.coverage > 0.99  # a corner of the DWI grid is outside the rotated grid
    json.dumps(result.summary(), allow_nan=False)


def test_a_block_in_an_lps_grid_lands_on_the_patients_right() -> None:
    """Another orientation (LPS), voxel size and origin: a low-ADC block in world space at
    x 20..40 mm (patient right) shows at the DWI voxels inside it, and nowhere else."""
    dwi = dwi_volume()
    shape = (120, 120, 12)
    zooms = (2.0, 2.0, 4.0)
    affine = centred_affine(shape, zooms, np.diag([-1.0, -1.0, 1.0]), centre=(1.0, -3.0, 2.0))
    lo, hi = np.array([20.0, -10.0, -12.0]), np.array([40.0, 10.0, 12.0])

    def inside(world, margin):
        m = np.asarray(margin)[:, None, None, None]
        return np.all(
            (world >= lo[:, None, None, None] + m) & (world <= hi[:, None, None, None] - m), axis=0
        )

    data = np.where(inside(world_of(affine, shape), (0, 0, 0)), 300.0, 800.0)
    result = adc_on_grid(load(data, affine, "adc"), dwi)
    dwi_world = world_of(dwi.affine, DWI_SHAPE)
    core = inside(dwi_world, zooms)  # at least one ADC voxel inside: exactly 300
    outside = ~inside(dwi_world, tuple(-z for z in zooms))  # one voxel outside: 800
    assert core.sum() > 50
    np.testing.assert_allclose(result.values[core], 300.0, atol=1e-3)
    np.testing.assert_allclose(result.values[outside & result.covered], 800.0, atol=1e-3)
    low = result.covered & (result.values < contract.ADC_CORE_THRESHOLD)
    assert low.any() and np.all(dwi_world[0][low] > 0)  # patient right: world x > 0


def test_zero_background_does_not_fade_into_low_adc_at_the_edge() -> None:
    """Values are interpolated over valid (positive) voxels only: a brain of 800 on a zero
    background, resampled on a rotated grid, is 800 wherever it is covered."""
    dwi = dwi_volume()
    shape = (130, 130, 14)
    affine = centred_affine(shape, (1.9, 1.9, 3.5), rotation(20.0))
    x, y, z = world_of(affine, shape)
    brain = (x / 70) ** 2 + (y / 90) ** 2 + (z / 30) ** 2 <= 1
    result = adc_on_grid(load(np.where(brain, 800.0, 0.0), affine, "adc"), dwi)
    dx, dy, dz = world_of(dwi.affine, DWI_SHAPE)
    dwi_brain = (dx / 70) ** 2 + (dy / 90) ** 2 + (dz / 30) ** 2
    np.testing.assert_allclose(result.values[result.covered], 800.0, rtol=1e-6)
    assert result.covered[dwi_brain <= 0.8].all()
    assert not result.covered[dwi_brain >= 1.3].any()
    assert np.all(result.values[~result.covered] == 0)


def test_the_same_grid_is_copied_not_interpolated() -> None:
    dwi = dwi_volume()
    rng = np.random.default_rng(1)
    data = rng.uniform(600, 1000, DWI_SHAPE)
    data[:10] = 0
    result = adc_on_grid(load(data, dwi.affine, "adc"), dwi)
    np.testing.assert_array_equal(result.covered, data > 0)
    np.testing.assert_allclose(result.values, data.astype(np.float32) * (data > 0))


# --- field of view ------------------------------------------------------------------------


def test_no_overlap_is_refused() -> None:
    dwi = dwi_volume()
    affine = centred_affine(DWI_SHAPE, DWI_ZOOMS, centre=(1000.0, 0.0, 0.0))
    with pytest.raises(AdcCoverageError, match="does not overlap") as info:
        adc_on_grid(load(near(800.0, DWI_SHAPE), affine, "adc"), dwi)
    assert "send the ADC map" in str(info.value)
    assert isinstance(info.value, InvalidVolumeError)


def test_partial_overlap_under_half_is_refused_and_over_half_is_marked() -> None:
    dwi = dwi_volume()  # world x -118.75 .. 118.75 mm
    narrow = (40, 96, 8)  # 100 mm wide: x 70..170 -> about 20 % of the DWI
    affine = centred_affine(narrow, DWI_ZOOMS, centre=(120.0, 0.0, 0.0))
    with pytest.raises(AdcCoverageError, match=r"covers only 2\d %"):
        adc_on_grid(load(near(800.0, narrow), affine, "adc"), dwi)
    wide = (60, 96, 8)  # 150 mm: x -30..120 -> about 62 %
    affine = centred_affine(wide, DWI_ZOOMS, centre=(45.0, 0.0, 0.0))
    result = adc_on_grid(load(near(800.0, wide), affine, "adc"), dwi)
    assert 0.55 < result.coverage < 0.7
    x = world_of(dwi.affine, DWI_SHAPE)[0]
    assert result.covered[x > -28].all() and not result.covered[x < -32].any()
    # judged on the regions when given: regions outside the ADC's view -> refused
    regions = x < -40
    with pytest.raises(AdcCoverageError, match="labelled regions"):
        adc_on_grid(load(near(800.0, wide), affine, "adc"), dwi, regions=regions)


def test_coverage_of_the_regions_counts_valid_values_not_the_field_of_view() -> None:
    """Two thirds of the ADC's slices zeroed (no value) inside a full field of view: a third
    of the regions has a value, and the map is refused (it was coverage 1.0, scored 10,
    before); with every slice valid it passes."""
    data = near(800.0, DWI_SHAPE).copy()
    regions = np.ones(DWI_SHAPE, bool)
    full = adc_on_grid(load(data, centred_affine(DWI_SHAPE, DWI_ZOOMS), "adc"), dwi_volume(),
                       regions=regions)
    assert full.coverage == 1.0
    data[..., : 2 * DWI_SHAPE[2] // 3 + 1] = 0.0
    adc = load(data, centred_affine(DWI_SHAPE, DWI_ZOOMS), "adc")
    with pytest.raises(AdcCoverageError, match=r"in only 2\d % .*\(.*100 % lie inside"):
        adc_on_grid(adc, dwi_volume(), regions=regions)


# --- content --------------------------------------------------------------------------------


def test_nan_is_refused_by_the_loader_and_by_adc_on_grid() -> None:
    data = np.full(DWI_SHAPE, 800.0, dtype=np.float32)
    data[5, 5, 5] = np.nan
    affine = centred_affine(DWI_SHAPE, DWI_ZOOMS)
    with pytest.raises(NonFiniteDataError):
        load(data, affine, "adc")
    direct = Volume(data=data, affine=affine, header=nib.Nifti1Header(), source="adc")
    with pytest.raises(NonFiniteDataError, match="NaN or infinite"):
        adc_on_grid(direct, dwi_volume())


def test_negative_values_dominating_are_refused() -> None:
    data = -np.random.default_rng(2).uniform(600, 1000, DWI_SHAPE)
    data[:20] = 800.0
    with pytest.raises(AdcUnitsError, match="negative: not an ADC map"):
        adc_on_grid(load(data, centred_affine(DWI_SHAPE, DWI_ZOOMS), "adc"), dwi_volume())


# --- units ------------------------------------------------------------------------------------


def tissue(median: float, seed: int = 3) -> np.ndarray:
    """ADC-like values: tissue around ``median`` plus 10 % CSF at ~3.5 x and some zeros."""
    rng = np.random.default_rng(seed)
    values = median * rng.normal(1.0, 0.15, 5000)
    values[:500] = median * 3.5
    values[500:700] = 0.0
    return values


@pytest.mark.parametrize(
    ("median", "scale"), [(0.0008, 1e6), (0.8, 1e3), (80.0, 10.0), (800.0, 1.0), (1300.0, 1.0)]
)
def test_each_known_unit_is_detected(median: float, scale: float) -> None:
    assert detect_adc_scale(tissue(median)) == scale


@pytest.mark.parametrize("median", [5.0, 3000.0, 0.03, 250.0])
def test_an_unknown_unit_is_refused(median: float) -> None:
    with pytest.raises(AdcUnitsError, match="not an ADC map in a known unit") as info:
        detect_adc_scale(tissue(median))
    assert "--adc-scale" in str(info.value)


def test_no_positive_values_are_refused() -> None:
    with pytest.raises(AdcUnitsError, match="no positive ADC values"):
        detect_adc_scale(np.zeros(100))


def test_a_map_in_mm2_per_s_is_converted() -> None:
    dwi = dwi_volume()
    rng = np.random.default_rng(4)
    data = rng.uniform(0.0006, 0.001, DWI_SHAPE)
    result = adc_on_grid(load(data, dwi.affine, "adc"), dwi)
    assert result.scale == 1e6 and result.scale_detected
    np.testing.assert_allclose(result.values, data * 1e6, rtol=1e-5)
    assert 600 < result.median < 1000
    assert result.summary()["unit"] == contract.ADC_UNIT


def test_a_given_scale_skips_detection_but_must_be_plausible() -> None:
    dwi = dwi_volume()
    data = np.random.default_rng(5).uniform(0.6, 1.0, DWI_SHAPE)  # 1e-3 mm^2/s
    adc = load(data, dwi.affine, "adc")
    result = adc_on_grid(adc, dwi, scale=1000)
    assert result.scale == 1000.0 and not result.scale_detected
    assert result.summary()["scale_source"] == "given"
    with pytest.raises(AdcUnitsError, match="given scale 1 ") as info:
        adc_on_grid(adc, dwi, scale=1)
    assert "--adc-scale" in str(info.value)
    check_adc_scale(tissue(800.0), 1.0)


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), True, "1e6"])
def test_a_bad_scale_is_a_usage_error(scale) -> None:
    dwi = dwi_volume()
    with pytest.raises(UsageError, match="ADC scale"):
        adc_on_grid(load(near(800.0, DWI_SHAPE), dwi.affine, "adc"), dwi, scale=scale)


def test_the_unit_is_judged_inside_the_regions() -> None:
    """Outside the regions the map holds CSF-like values; inside, tissue: the median of
    the regions decides (the whole map's median would be out of range)."""
    dwi = dwi_volume()
    data = np.full(DWI_SHAPE, 3200.0)
    regions = np.zeros(DWI_SHAPE, dtype=bool)
    regions[30:60, 30:60, 2:6] = True
    data[regions] = 780.0
    adc = load(data, dwi.affine, "adc")
    with pytest.raises(AdcUnitsError):
        adc_on_grid(adc, dwi)
    result = adc_on_grid(adc, dwi, regions=regions)
    assert result.scale == 1.0 and result.median == pytest.approx(780.0)
    with pytest.raises(UsageError, match="shape"):
        adc_on_grid(adc, dwi, regions=regions[:-1])
