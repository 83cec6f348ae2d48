"""Lesion maps, involvement per region and hemisphere, and the ASPECTS score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aspects_client import contract
from aspects_client.errors import UsageError
from aspects_client.geometry import from_display, geometry_of, to_display
from aspects_client.scoring.lesions import (
    ScoringRule,
    aspects_score,
    brain_mask,
    involvement,
    lesion_from_adc,
    lesion_from_dwi,
    lesion_label_map,
    remove_specks,
)

N, H, W = 2, 64, 64
R, L = contract.HEMISPHERE_CODES["r"], contract.HEMISPHERE_CODES["l"]
PER_SIDE = N * 5 * 20  # voxels of each region on each side in ``layout``
LEFT_COLS, RIGHT_COLS = slice(8, 28), slice(36, 56)  # display column 0 = patient left


def layout() -> tuple[np.ndarray, np.ndarray]:
    """classes, hemis [N, H, W]: region c fills rows 5c..5c+4 on both sides, 200 voxels
    per side (columns 8..27 patient left, 36..55 patient right)."""
    classes = np.zeros((N, H, W), dtype=np.uint8)
    for region in contract.REGIONS:
        rows = slice(5 * region.index, 5 * region.index + 5)
        classes[:, rows, LEFT_COLS] = region.index
        classes[:, rows, RIGHT_COLS] = region.index
    hemis = np.zeros_like(classes)
    hemis[:, :, : W // 2][classes[:, :, : W // 2] > 0] = L
    hemis[:, :, W // 2 :][classes[:, :, W // 2 :] > 0] = R
    return classes, hemis


def region_voxels(key: str, hemi: str, n: int) -> np.ndarray:
    """A mask of the first n voxels (C order) of region ``key`` on side ``hemi``."""
    classes, hemis = layout()
    where = (classes == contract.REGION_BY_KEY[key].index) & (
        hemis == contract.HEMISPHERE_CODES[hemi]
    )
    mask = np.zeros(where.shape, dtype=bool)
    mask.ravel()[np.flatnonzero(where)[:n]] = True
    return mask


def lesions(**counts: int) -> np.ndarray:
    """lesions(m1_r=10, c_l=5): that many voxels of each region side."""
    mask = np.zeros((N, H, W), dtype=bool)
    for name, n in counts.items():
        key, hemi = name.rsplit("_", 1)
        mask |= region_voxels(key, hemi, n)
    return mask


def cell(mask: np.ndarray, key: str, hemi: str, voxel_ml: float, **rule) -> dict:
    classes, hemis = layout()
    return involvement(mask, classes, hemis, voxel_ml, ScoringRule(**rule))[key][hemi]


# --- the rule -------------------------------------------------------------------------


def test_rule_defaults_are_the_contracts() -> None:
    rule = ScoringRule()
    assert rule.as_dict() == {
        "adc_threshold": contract.ADC_CORE_THRESHOLD,
        "dwi_ratio": contract.DWI_LESION_RATIO,
        "min_lesion_ml": contract.MIN_LESION_ML,
        "min_fraction": contract.AFFECTED_MIN_FRACTION,
        "min_volume_ml": contract.AFFECTED_MIN_ML,
        "uncertain_factor": contract.UNCERTAIN_FACTOR,
    }
    json.dumps(rule.as_dict(), allow_nan=False)
    assert ScoringRule(min_fraction=np.float32(0.25)).min_fraction == 0.25


@pytest.mark.parametrize("field", list(ScoringRule().as_dict()))
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_rule_refuses_bad_numbers_by_name(field: str, value) -> None:
    with pytest.raises(UsageError, match=field):
        ScoringRule(**{field: value})


def test_rule_bounds_of_fraction_and_factor() -> None:
    with pytest.raises(UsageError, match="min_fraction"):
        ScoringRule(min_fraction=1.5)
    with pytest.raises(UsageError, match="uncertain_factor"):
        ScoringRule(uncertain_factor=0.5)
    assert ScoringRule(min_fraction=1.0, uncertain_factor=1.0).uncertain_factor == 1.0


# --- affected and uncertain at the edges of the rule (0.05 of the region, 0.1 mL, x2) --------


@pytest.mark.parametrize(
    ("n", "voxel_ml", "affected", "uncertain"),
    [
        (10, 0.01, True, True),  # exactly 0.05 and exactly 0.1 mL
        (9, 0.01, False, True),  # 0.045 and 0.09 mL: just below both, inside the band
        (10, 1.0, True, True),  # exactly 0.05 with 10 mL
        (9, 1.0, False, True),  # 0.045 with 9 mL
        (20, 1.0, True, False),  # 0.1 = 0.05 x 2: the band's upper edge is outside it
        (5, 1.0, False, True),  # 0.025 = 0.05 / 2: the band's lower edge is inside it
        (4, 1.0, False, False),  # 0.02: clearly below
        (100, 0.001, True, True),  # fraction 0.5, exactly 0.1 mL
        (99, 0.001, False, True),  # 0.099 mL
        (100, 0.002, True, False),  # 0.2 mL = 0.1 x 2, fraction 0.5: clearly affected
        (1, 0.06, False, False),  # 0.06 mL is in the band but 0.005 of the region is not
        (0, 1.0, False, False),  # no lesion
    ],
)
def test_affected_and_uncertain_at_the_edges(n, voxel_ml, affected, uncertain) -> None:
    got = cell(lesions(m2_r=n), "m2", "r", voxel_ml)
    assert (got["affected"], got["uncertain"]) == (affected, uncertain)
    assert got["lesion_voxels"] == n and got["region_voxels"] == PER_SIDE
    assert got["fraction"] == pytest.approx(n / PER_SIDE)
    assert got["lesion_ml"] == pytest.approx(round(n * voxel_ml, 4))
    assert got["region_ml"] == pytest.approx(round(PER_SIDE * voxel_ml, 4))


def test_involvement_counts_only_lesion_inside_its_region_side() -> None:
    classes, hemis = layout()
    mask = lesions(m1_r=30)
    mask[:, 60:, :] = True  # below every region: background
    inv = involvement(mask, classes, hemis, 0.01)
    assert set(inv) == set(contract.REGION_KEYS)
    assert all(set(inv[k]) == {"r", "l"} for k in inv)
    assert inv["m1"]["r"]["lesion_voxels"] == 30 and inv["m1"]["l"]["lesion_voxels"] == 0
    assert sum(inv[k][h]["lesion_voxels"] for k in inv for h in inv[k]) == 30
    json.dumps(inv, allow_nan=False)


def test_an_absent_region_is_unaffected_and_certain() -> None:
    classes, hemis = layout()
    classes[hemis == R] = 0
    hemis[hemis == R] = 0
    got = involvement(np.ones((N, H, W), bool), classes, hemis, 0.01)["c"]["r"]
    assert got == {
        "lesion_ml": 0.0,
        "region_ml": 0.0,
        "fraction": 0.0,
        "affected": False,
        "uncertain": False,
        "lesion_voxels": 0,
        "region_voxels": 0,
    }


def test_involvement_refuses_bad_inputs() -> None:
    classes, hemis = layout()
    mask = lesions(m1_r=1)
    with pytest.raises(UsageError, match="voxel_ml"):
        involvement(mask, classes, hemis, 0.0)
    with pytest.raises(UsageError, match="one shape"):
        involvement(mask[:1], classes, hemis, 0.01)
    with pytest.raises(UsageError, match="classes must be 0"):
        involvement(mask, classes + 20, hemis, 0.01)
    with pytest.raises(UsageError, match="hemisphere codes"):
        involvement(mask, classes, hemis + 5, 0.01)


# --- specks ----------------------------------------------------------------------------------


def test_specks_below_the_minimum_are_removed_and_at_it_kept() -> None:
    mask = np.zeros((4, 32, 32), dtype=bool)
    mask[1, 2, 2:7] = True  # 5 voxels x 0.01 mL = 0.05 mL: exactly the minimum
    mask[1, 20, 2:6] = True  # 4 voxels: 0.04 mL
    mask[0:3, 10:14, 20:24] = True  # 48 voxels
    mask[3, 30, 30] = True  # a single voxel
    out = remove_specks(mask, 0.01, 0.05)
    expected = mask.copy()
    expected[1, 20, 2:6] = False
    expected[3, 30, 30] = False
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == bool
    np.testing.assert_array_equal(remove_specks(mask, 0.01, 0.0), mask)


def test_specks_are_26_connected_across_slices() -> None:
    """Five voxels touching only at corners, one per slice: one component of 0.05 mL."""
    mask = np.zeros((5, 8, 8), dtype=bool)
    for i in range(5):
        mask[i, i, i] = True
    np.testing.assert_array_equal(remove_specks(mask, 0.01, 0.05), mask)
    mask[4, 4, 4] = False
    assert not remove_specks(mask, 0.01, 0.05).any()


def test_remove_specks_refuses_bad_numbers() -> None:
    mask = np.ones((2, 4, 4), dtype=bool)
    with pytest.raises(UsageError, match="voxel_ml"):
        remove_specks(mask, float("nan"), 0.05)
    with pytest.raises(UsageError, match="min_ml"):
        remove_specks(mask, 0.01, -1.0)


# --- the score -------------------------------------------------------------------------------


def score(mask: np.ndarray, voxel_ml: float = 0.01, **kwargs) -> dict:
    classes, hemis = layout()
    result = aspects_score(involvement(mask, classes, hemis, voxel_ml), **kwargs)
    json.dumps(result, allow_nan=False)
    return result


def test_a_lesion_free_volume_scores_10() -> None:
    result = score(np.zeros((N, H, W), dtype=bool))
    assert result["affected_hemisphere"] is None
    assert result["score"] == 10 and result["scores"] == {"r": 10, "l": 10}
    assert result["affected_regions"] == {"r": [], "l": []}
    assert result["uncertain"] is False
    assert result["lesion_ml"] == {"r": 0.0, "l": 0.0}


def test_both_hemispheres_affected_score_from_the_side_with_more_lesion() -> None:
    result = score(lesions(m1_r=100, m2_r=100, m3_r=100, c_l=150))
    assert result["affected_hemisphere"] == "r"
    assert result["score"] == 7
    assert result["scores"] == {"r": 7, "l": 9}
    assert result["affected_regions"] == {"r": ["m1", "m2", "m3"], "l": ["c"]}
    assert result["lesion_ml"] == {"r": 3.0, "l": 1.5}
    # not an ordinary unilateral stroke: uncertain, and the result says why (issue 24)
    assert result["uncertain"] is True
    assert any("both hemispheres" in note for note in result["notes"]), result["notes"]
    # more lesion on the left, in fewer regions: the left decides
    result = score(lesions(m1_r=100, m2_r=100, c_l=200, l_l=150))
    assert result["affected_hemisphere"] == "l"
    assert result["score"] == 8 and result["scores"] == {"r": 8, "l": 8}
    result = score(lesions(m4_l=200, m5_l=200, m6_l=200, i_r=50))
    assert result["affected_hemisphere"] == "l" and result["score"] == 7
    assert result["scores"] == {"r": 9, "l": 7}


def test_a_lesion_below_the_rule_names_the_side_and_scores_10() -> None:
    result = score(lesions(ic_l=4))  # 0.04 mL, 2 % of the region
    assert result["affected_hemisphere"] == "l"
    assert result["score"] == 10 and result["affected_regions"] == {"r": [], "l": []}
    assert result["uncertain"] is False  # 0.02 < 0.05 / 2: clearly unaffected


def test_uncertain_on_the_affected_side_only() -> None:
    near = score(lesions(m1_r=100, m2_r=10))  # m2: exactly at the rule
    assert near["affected_hemisphere"] == "r" and near["score"] == 8
    assert near["uncertain"] is True and near["uncertain_regions"]["r"] == ["m2"]
    other = score(lesions(m1_r=100, m2_l=9))  # the uncertain (unaffected) region is on the
    assert other["affected_hemisphere"] == "r"  # other side
    assert other["uncertain"] is False and other["uncertain_regions"]["l"] == ["m2"]
    assert other["affected_regions"]["l"] == []


def test_qc_flagged_regions_make_the_score_uncertain() -> None:
    result = score(lesions(m1_r=100), qc_flagged_regions={"c", "m4"})
    assert result["uncertain"] is True and result["qc_flagged_regions"] == ["c", "m4"]
    assert score(lesions(m1_r=100))["uncertain"] is False
    with pytest.raises(UsageError, match="unknown region keys"):
        score(lesions(m1_r=100), qc_flagged_regions={"m7"})


def test_a_tie_is_uncertain_and_says_so() -> None:
    result = score(lesions(m1_r=100, m1_l=50, m2_l=50))
    assert result["affected_hemisphere"] == "l"  # equal volume, more affected regions
    assert result["score"] == 8 and result["uncertain"] is True
    assert result["notes"] and "equal lesion volume" in result["notes"][0]


def test_aspects_score_refuses_something_else() -> None:
    with pytest.raises(UsageError, match="involvement"):
        aspects_score({"m1": {"r": {}}})


# --- lesion maps ---------------------------------------------------------------------------


def dwi_image(seed: int = 0) -> np.ndarray:
    """DWI about 100 (+-5 %) in every region, 0 outside."""
    classes, _ = layout()
    rng = np.random.default_rng(seed)
    return np.where(classes > 0, rng.uniform(95, 105, classes.shape), 0).astype(np.float32)


def test_dwi_lesion_against_the_homologous_region() -> None:
    """A bright block filling 40 % of the right M2 is found exactly; the left side, and
    the rest of the right, are not lesion."""
    classes, hemis = layout()
    dwi = dwi_image()
    lesion = region_voxels("m2", "r", 80)
    dwi[lesion] = 200.0  # 2 x the homologous median, > the 1.8 ratio
    result = lesion_from_dwi(dwi, classes, hemis)
    np.testing.assert_array_equal(result.mask, lesion)
    assert result.notes == []
    ref = result.references["m2"]["r"]
    assert ref["reference"] == "homologous" and 95 < ref["median"] < 105
    # the lesioned side's median (raised by the lesion) is the left's reference: no lesion
    assert not result.mask[hemis == L].any()


def test_dwi_lesion_filling_a_whole_region_side_and_the_threshold() -> None:
    classes, hemis = layout()
    dwi = dwi_image(1)
    whole = (classes == contract.REGION_BY_KEY["l"].index) & (hemis == L)
    dwi[whole] *= 2.2
    dwi[region_voxels("c", "r", 10)] = 140.0  # 1.4 x: under the contract ratio (1.8)
    result = lesion_from_dwi(dwi, classes, hemis)
    np.testing.assert_array_equal(result.mask, whole)
    lower = lesion_from_dwi(dwi, classes, hemis, ScoringRule(dwi_ratio=1.3))
    assert lower.mask[region_voxels("c", "r", 10)].all()


def test_dwi_falls_back_to_all_labelled_voxels_without_a_homologous_region() -> None:
    classes, hemis = layout()
    right_c = (classes == contract.REGION_BY_KEY["c"].index) & (hemis == R)
    classes[right_c] = 0
    hemis[right_c] = 0
    dwi = dwi_image(2)
    lesion = region_voxels("c", "l", 30)
    dwi[lesion] = 190.0
    result = lesion_from_dwi(dwi, classes, hemis)
    np.testing.assert_array_equal(result.mask, lesion)
    assert len(result.notes) == 1 and result.notes[0].startswith("c l:")
    assert "all labelled voxels" in result.notes[0]
    assert result.references["c"]["l"]["reference"] == "all-labelled"
    assert "r" not in result.references["c"]


def test_dwi_without_labels_has_no_lesion() -> None:
    empty = np.zeros((N, H, W), dtype=np.uint8)
    result = lesion_from_dwi(np.ones((N, H, W), np.float32), empty, empty)
    assert not result.mask.any() and result.notes


def test_adc_lesion_inside_the_brain_mask_only() -> None:
    classes, _ = layout()
    adc = np.where(classes > 0, 800.0, 3000.0).astype(np.float32)  # CSF-like outside
    covered = np.ones_like(classes, dtype=bool)
    core = region_voxels("m5", "l", 60)
    adc[core] = 400.0
    adc[0, 10, 30] = 3000.0  # CSF between the hemispheres: never lesion
    adc[:, 55:57, 40] = 300.0  # just below ic (row 54): 1-2 px outside the regions
    adc[:, 62, 40] = 300.0  # 8 px away
    hole = region_voxels("m1", "r", 20)
    adc[hole] = 0.0  # no ADC fitted
    gap = region_voxels("m3", "r", 20)
    adc[gap] = 300.0
    covered[gap] = False  # outside the ADC's field of view
    lesion = lesion_from_adc(adc, covered, classes)
    np.testing.assert_array_equal(lesion, core)  # default: the regions themselves
    dilated = lesion_from_adc(adc, covered, classes, pixel_spacing_mm=(1.0, 1.0))
    expected = core.copy()
    expected[:, 55:57, 40] = True  # within 3 mm of a region
    np.testing.assert_array_equal(dilated, expected)
    coarse = lesion_from_adc(adc, covered, classes, pixel_spacing_mm=(2.0, 2.0))
    expected[:, 56, 40] = False  # 2 px = 4 mm away at 2 mm pixels
    np.testing.assert_array_equal(coarse, expected)
    assert not lesion_from_adc(adc, covered, classes, ScoringRule(adc_threshold=250)).any()


def test_brain_mask_margin_is_in_plane_and_in_mm() -> None:
    classes = np.zeros((3, 40, 40), dtype=np.uint8)
    classes[1, 20, 20] = 1
    mask = brain_mask(classes, (0.5, 1.0), margin_mm=2.0)
    assert not mask[0].any() and not mask[2].any()
    rows, cols = np.nonzero(mask[1])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (16, 24, 18, 22)
    np.testing.assert_array_equal(brain_mask(classes), classes > 0)
    with pytest.raises(UsageError, match="pixel_spacing_mm"):
        brain_mask(classes, (0.0, 1.0))


def test_lesion_label_map_goes_back_to_the_original_grid() -> None:
    mask = lesions(m1_r=50)
    labels = lesion_label_map(mask)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    geometry = geometry_of(np.diag([-1.0, -1.0, 5.0, 1.0]), (W, H, N))  # stored LPS
    original = from_display(labels, geometry)
    assert original.shape == (W, H, N)
    np.testing.assert_array_equal(to_display(original, geometry), labels)


def test_the_chain_from_adc_to_score() -> None:
    """ADC -> lesion map -> specks removed -> involvement -> score, JSON-ready."""
    classes, hemis = layout()
    adc = np.full(classes.shape, 800.0, dtype=np.float32)
    adc[region_voxels("m2", "r", 150)] = 450.0
    adc[region_voxels("i", "r", 60)] = 500.0
    adc[0, 40, 40] = 500.0  # a lone voxel in l (right): a speck
    covered = np.ones(classes.shape, dtype=bool)
    voxel_ml = 0.5 * 0.5 * 5.0 / 1000  # 0.00125 mL
    mask = remove_specks(lesion_from_adc(adc, covered, classes), voxel_ml)
    assert not mask[0, 40, 40]
    inv = involvement(mask, classes, hemis, voxel_ml)
    assert inv["m2"]["r"]["affected"] and inv["i"]["r"]["fraction"] == 0.3
    assert not inv["i"]["r"]["affected"]  # 60 x 0.00125 = 0.075 mL < 0.1 mL
    result = aspects_score(inv)
    assert result["affected_hemisphere"] == "r" and result["score"] == 9
    assert result["uncertain"] is True and result["uncertain_regions"]["r"] == ["m2", "i"]
    json.dumps({"involvement": inv, "score": result}, allow_nan=False)
