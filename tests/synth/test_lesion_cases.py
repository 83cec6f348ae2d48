"""Known-answer stroke cases: a seed makes the same case, the DWI, ADC and truth share one
point map, lesions are blobs in arterial territories that cross ASPECTS regions, ADC and DWI
carry the lesion contrast, and the ADC may live on its own grid over the same brain."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nibabel.affines import apply_affine

from aspects_client import contract
from aspects_synth import generator as g
from aspects_synth import lesion_cases as lc
from aspects_synth.head_labels import BRAIN_TISSUES, T, load_label_maps
from aspects_synth.phantom import sample_linear

SMALL = {"matrix": 96, "slices": 10, "slice_mm": 5.0}
SEED = lc.SCORE_SEED_START + 9  # three blobs: a right MCA lesion over 7 regions
BILATERAL = lc.SCORE_SEED_START + 6  # blobs on both hemispheres


@pytest.fixture(scope="module")
def maps():
    return load_label_maps()


@pytest.fixture(scope="module")
def case(maps):
    return lc.render_lesion_case(SEED, n_lesions=3, voxel_order="LPS", oblique_deg=8.0,
                                 maps=maps, **SMALL)


@pytest.fixture(scope="module")
def other(maps):
    return lc.render_lesion_case(SEED, n_lesions=3, voxel_order="LPS", oblique_deg=8.0,
                                 adc_grid="other", maps=maps, **SMALL)


def _region(case, key: str, hemi: str) -> np.ndarray:
    return (case.classes == contract.REGION_BY_KEY[key].index) & (
        case.hemispheres == contract.HEMISPHERE_CODES[hemi])


def _adc_on_dwi(case) -> np.ndarray:
    """The ADC, trilinearly sampled at the DWI's voxel centres (world space)."""
    ijk = np.indices(case.dwi.shape).reshape(3, -1).T
    world = apply_affine(case.dwi.affine, ijk)
    adc = np.asarray(case.adc.dataobj)
    return sample_linear(adc, np.linalg.inv(case.adc.affine), world).reshape(case.dwi.shape)


def test_same_seed_same_case(case, maps):
    again = lc.render_lesion_case(SEED, n_lesions=3, voxel_order="LPS", oblique_deg=8.0,
                                  maps=maps, **SMALL)
    for name in ("dwi", "adc"):
        a, b = getattr(case, name), getattr(again, name)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    for name in ("classes", "hemispheres", "lesion", "lesion_ids", "tissue"):
        np.testing.assert_array_equal(getattr(case, name), getattr(again, name))
    assert case.params == again.params
    different = lc.render_lesion_case(SEED + 1, n_lesions=3, maps=maps, **SMALL)
    assert different.params.lesions != case.params.lesions


def test_arrays_share_the_dwi_grid(case):
    shape = case.dwi.shape
    assert case.dwi.get_data_dtype() == np.float32 and case.adc.get_data_dtype() == np.float32
    assert nib.aff2axcodes(case.dwi.affine) == ("L", "P", "S")
    for name, dtype in (("classes", np.uint8), ("hemispheres", np.uint8), ("lesion", bool),
                        ("lesion_ids", np.uint8), ("tissue", np.uint8)):
        arr = getattr(case, name)
        assert arr.shape == shape and arr.dtype == dtype, name
    assert case.adc.shape == shape
    np.testing.assert_array_equal(case.adc.affine, case.dwi.affine)
    assert set(np.unique(case.classes)) <= set(range(contract.NUM_CLASSES))
    assert set(np.unique(case.hemispheres)) <= {0, *contract.HEMISPHERE_CODES.values()}
    assert case.lesion_count == 3 == len(case.params.lesions)
    np.testing.assert_array_equal(case.lesion, case.lesion_ids > 0)
    px, _, spacing = case.params.dwi_voxel_mm
    assert case.voxel_ml == pytest.approx(px * px * spacing / 1000.0)
    assert lc.voxel_ml(case.dwi) == case.voxel_ml
    # hemispheres are the patient's, in world space: right = larger RAS x
    x = apply_affine(case.dwi.affine, np.argwhere(case.hemispheres > 0))[:, 0]
    side = case.hemispheres[case.hemispheres > 0]
    assert x[side == contract.HEMISPHERE_CODES["r"]].mean() > 20.0 + x[
        side == contract.HEMISPHERE_CODES["l"]].mean()


def test_truth_is_the_generators_point_map(maps):
    """Classes on an axis-aligned RAS case equal the generator's own render of that grid."""
    case = lc.render_lesion_case(SEED, n_lesions=1, voxel_order="RAS", oblique_deg=0.0,
                                 maps=maps, matrix=64, slices=4, slice_mm=5.0)
    head = g.Head(SEED, maps=maps)
    head.params = case.params.head
    head.warp = g.Warp(head.params, maps, head.device)
    a = case.dwi.affine
    grid = g.Grid(matrix=64, fov_mm=64 * a[0, 0], thickness_mm=5.0,
                  z_mm=tuple(float(a[2, 3] + 5.0 * k) for k in range(4)))
    out = head.render(grid)
    classes = g.display_to_ras(out.classes.numpy())
    hemis = g.display_to_ras(out.hemispheres.numpy())
    assert (classes == case.classes).mean() > 0.999
    assert (hemis == case.hemispheres).mean() > 0.999


def test_lesions_are_territorial_blobs_in_brain(case, maps):
    # on the MNI grid: every blob voxel is brain tissue inside one of its territories
    tissue = np.array(maps.tissue)
    ids = lc.blob_ids(maps, case.params.lesions, tissue)
    for n, blob in enumerate(case.params.lesions, start=1):
        values = [maps.territory_names.index(t) + 1 for t in blob.territories]
        inside = ids == n
        assert inside.any()
        assert np.isin(maps.territories[inside], values).all()
        assert np.isin(tissue[inside], BRAIN_TISSUES).all()
        assert all(t.endswith(blob.side.upper()) for t in blob.territories)
        assert min(blob.radii_mm) >= 5.0 * 0.65 and max(blob.radii_mm) <= 30.0
    # on the DWI grid: lesion ⊆ brain, mostly within the ASPECTS regions or next to them
    assert case.lesion.sum() > 200
    assert case.brain[case.lesion].all()
    labelled = torch.from_numpy(case.classes > 0).float()[None, None]
    near = F.max_pool3d(labelled, (9, 9, 3), stride=1, padding=(4, 4, 1))[0, 0].numpy() > 0
    assert near[case.lesion].mean() > 0.9  # within ~8 mm in-plane, one slice
    # crossing region boundaries: one lesion touches many regions
    assert len(case.lesion_voxels_by_region()) >= 4


def test_both_hemispheres_in_some_cases(maps):
    case = lc.render_lesion_case(BILATERAL, n_lesions=3, maps=maps, **SMALL)
    sides = {hemi for _, hemi in case.lesion_voxels_by_region()}
    assert sides == {"r", "l"}
    assert {b.side for b in case.params.lesions} == {"r", "l"}


def test_adc_core_below_threshold_and_tissue_above(case):
    adc = np.asarray(case.adc.dataobj)
    normal = case.brain & ~case.lesion
    assert np.median(adc[case.lesion]) < contract.ADC_CORE_THRESHOLD
    assert np.median(adc[normal]) > contract.ADC_CORE_THRESHOLD
    lo, hi = contract.ADC_TISSUE_MEDIAN_RANGE
    assert lo < np.median(adc[(case.classes > 0) & ~case.lesion]) < hi
    assert np.median(adc[case.tissue == T["ventricle"]]) > 2000.0
    for blob in case.params.lesions:
        assert 350.0 <= blob.adc <= 550.0
    # the threshold finds most of the core in the labelled regions (partial volume aside)
    core = (adc < contract.ADC_CORE_THRESHOLD) & (case.classes > 0)
    truth = case.lesion & (case.classes > 0)
    assert 2 * (core & truth).sum() / (core.sum() + truth.sum()) > 0.7


def test_dwi_lesion_brighter_than_the_rest_of_its_region(case):
    dwi = np.asarray(case.dwi.dataobj)
    counts = case.lesion_voxels_by_region()
    (key, hemi), _ = max(counts.items(), key=lambda kv: kv[1])
    region = _region(case, key, hemi)
    assert np.median(dwi[region & case.lesion]) > 1.3 * np.median(dwi[region & ~case.lesion])
    gm = case.params.head.intensities[T["cortical_gm"]]
    for blob in case.params.lesions:
        assert 1.5 <= blob.dwi_ratio <= 3.0
    assert case.params.head.contrast == "b1000" and not case.params.head.flip
    assert 0.5 * lc.DWI_SCALE * gm < np.median(dwi[case.tissue == T["cortical_gm"]])


def test_adc_on_its_own_grid_covers_the_same_brain(case, other):
    # the DWI and the truth do not depend on where the ADC lives
    np.testing.assert_array_equal(np.asarray(other.dwi.dataobj), np.asarray(case.dwi.dataobj))
    np.testing.assert_array_equal(other.lesion, case.lesion)
    assert other.params.adc_grid == "other"
    assert other.adc.shape != other.dwi.shape
    assert not np.allclose(other.adc.affine, other.dwi.affine, atol=1.0)
    zooms = sorted(other.adc.header.get_zooms())
    assert zooms[0] > 1.5 and zooms[2] < 6.7
    assert nib.aff2axcodes(other.adc.affine) == tuple(other.params.adc_axcodes)
    assert other.params.adc_axcodes != other.params.dwi_axcodes
    # every brain voxel of the DWI lies inside the ADC's grid
    vox = apply_affine(np.linalg.inv(other.adc.affine) @ other.dwi.affine,
                       np.argwhere(other.brain))
    assert (vox > -0.5).all() and (vox < np.asarray(other.adc.shape) - 0.5).all()
    adc = _adc_on_dwi(other)
    assert np.median(adc[other.lesion]) < contract.ADC_CORE_THRESHOLD
    assert np.median(adc[other.brain & ~other.lesion]) > contract.ADC_CORE_THRESHOLD


def test_lesion_free_cases(case, maps):
    # the same patient and acquisition without the stroke
    free = lc.render_lesion_case(SEED, n_lesions=0, voxel_order="LPS", oblique_deg=8.0,
                                 maps=maps, **SMALL)
    assert free.lesion_count == 0 and free.params.lesions == ()
    assert not free.lesion.any() and not free.lesion_ids.any()
    assert free.lesion_voxels_by_region() == {}
    np.testing.assert_array_equal(free.classes, case.classes)
    np.testing.assert_array_equal(free.dwi.affine, case.dwi.affine)
    assert free.params.head == case.params.head
    adc = np.asarray(free.adc.dataobj)
    assert np.median(adc[free.brain]) > contract.ADC_CORE_THRESHOLD
    assert np.median(adc[case.lesion]) > contract.ADC_CORE_THRESHOLD
    near = F.max_pool3d(torch.from_numpy(case.lesion).float()[None, None], 3, stride=1,
                        padding=1)[0, 0].numpy() > 0
    far = ~near & (free.tissue == case.tissue)
    same = np.asarray(free.dwi.dataobj)[far] == np.asarray(case.dwi.dataobj)[far]
    assert same.mean() > 0.999  # (blob slivers between voxel centres aside)
    # with the count drawn from the seed, every LESION_FREE_EVERY-th seed is lesion-free
    start = lc.SCORE_SEED_START
    assert start % lc.LESION_FREE_EVERY == 0
    free = lc.render_lesion_case(start, maps=maps, matrix=64, slices=4)
    assert free.lesion_count == 0 and not free.lesion.any()


def test_as_phantom_and_arguments(case):
    ph = case.as_phantom()
    assert ph.image is case.dwi and ph.classes is case.classes
    assert set(np.unique(ph.tissue)) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="adc_grid"):
        lc.render_lesion_case(SEED, adc_grid="elsewhere")
    assert dataclasses.is_dataclass(case.params)
