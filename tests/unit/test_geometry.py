"""Small pure functions of geometry/intensity/contours, as a table of known answers."""

from __future__ import annotations

import cv2
import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract
from aspects_client.contours import fill_polygons, polygons_of_mask
from aspects_client.geometry import (
    apply_affine_points,
    from_display,
    geometry_of,
    to_display,
)
from aspects_client.intensity import window_bounds, window_to_uint8

# (affine, expected slice axis, expected world step of one display row, of one column)
# Display: row 0 = anterior (a row step goes posterior: -y), column 0 = patient left (+x).
TABLE = [
    (np.diag([2.0, 3.0, 5.0, 1.0]), 2, (0, -3, 0), (2, 0, 0)),  # RAS
    (np.diag([-2.0, -3.0, 5.0, 1.0]), 2, (0, -3, 0), (2, 0, 0)),  # LPS
    (
        np.array([[0, 0, 2.0, 0], [-3.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 0, 1]]),
        1,
        (0, -3, 0),
        (2, 0, 0),
    ),
    (
        np.array([[0, -2.0, 0, 0], [0, 0, 3.0, 0], [-5.0, 0, 0, 0], [0, 0, 0, 1]]),
        0,
        (0, -3, 0),
        (2, 0, 0),
    ),
]


@pytest.mark.parametrize(("affine", "slice_axis", "row_step", "col_step"), TABLE)
def test_display_convention(affine, slice_axis, row_step, col_step) -> None:
    shape = (6, 7, 4)
    g = geometry_of(affine, shape)
    assert g.slice_axis == slice_axis
    m = g.display_to_world
    np.testing.assert_allclose(m[:3, 1], row_step, atol=1e-12)
    np.testing.assert_allclose(m[:3, 2], col_step, atol=1e-12)
    assert m[2, 0] > 0  # display index runs inferior -> superior


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIR", "SLA", "ILP", "ASR"])
def test_to_display_round_trip_and_point_map(codes) -> None:
    rng = np.random.default_rng(0)
    base = nib.Nifti1Image(
        rng.integers(0, 1000, (5, 6, 7)).astype(np.int16), np.diag([2, 3, 4, 1.0])
    )
    img = base.as_reoriented(
        nib.orientations.ornt_transform(
            nib.orientations.io_orientation(base.affine), nib.orientations.axcodes2ornt(codes)
        )
    )
    data = np.asanyarray(img.dataobj)
    g = geometry_of(img.affine, img.shape)
    stack = to_display(data, g)
    np.testing.assert_array_equal(
        stack, to_display(np.asanyarray(base.dataobj), geometry_of(base.affine, base.shape))
    )
    np.testing.assert_array_equal(from_display(stack, g), data)
    points = np.argwhere(np.ones(stack.shape, bool))
    ijk = np.rint(apply_affine_points(g.display_to_original, points)).astype(int)
    np.testing.assert_array_equal(data[tuple(ijk.T)], stack[tuple(points.T)])
    assert all(
        g.original_slice_index(n) == ijk[points[:, 0] == n][0, g.slice_axis]
        for n in range(len(stack))
    )


def test_rot90_convention_matches_the_seed() -> None:
    """For an RAS-stored file the display slice is np.rot90 of the file's slice."""
    data = np.random.default_rng(1).random((8, 5, 3))
    g = geometry_of(np.diag([1.0, 1.0, 2.0, 1.0]), data.shape)
    stack = to_display(data, g)
    for n in range(3):
        np.testing.assert_array_equal(stack[n], np.rot90(data[:, :, n], k=contract.DISPLAY_ROT90_K))


def test_window_known_answers() -> None:
    data = np.zeros((10, 10, 10), np.float32)
    data[:5] = np.linspace(1, 1000, 500).reshape(5, 10, 10)
    lo, hi = window_bounds(data)
    assert lo == pytest.approx(np.percentile(data[data != 0], 0.5))
    assert hi == pytest.approx(np.percentile(data[data != 0], 99.5))
    out = window_to_uint8(data)
    assert out.dtype == np.uint8 and out.shape == data.shape
    assert out[5:].max() == 0 and out.max() == 255
    assert out[data >= hi].min() == 255 and out[(data <= lo) & (data != 0)].max() == 0
    mid = (lo + hi) / 2
    assert window_to_uint8(np.array([mid], np.float32), (lo, hi))[0] in (127, 128)
    assert window_to_uint8(np.zeros((3, 3, 3))).max() == 0
    assert set(np.unique(window_to_uint8(np.full((3, 3, 3), 7.0)))) == {255}


def test_polygons_round_trip_with_holes_and_islands() -> None:
    mask = np.zeros((64, 80), np.uint8)
    cv2.circle(mask, (40, 32), 25, 1, -1)
    cv2.circle(mask, (40, 32), 12, 0, -1)  # a hole
    cv2.circle(mask, (40, 32), 4, 1, -1)  # an island in the hole
    mask[2:4, 2:9] = 1
    mask[60, 70] = 1  # a single pixel
    polys = polygons_of_mask(mask)
    assert sum(len(p.holes) for p in polys) == 1
    np.testing.assert_array_equal(fill_polygons(mask.shape, polys), mask)


def test_plane_ignores_regions_labelled_on_one_side_only(phantom_small) -> None:
    """A large infarct the model missed on one side must not drag the mid-sagittal plane."""
    from aspects_client.hemisphere import estimate_plane, hemisphere_map

    g = geometry_of(phantom_small.image.affine, phantom_small.image.shape)
    labels = np.ascontiguousarray(to_display(phantom_small.classes, g))
    truth = np.ascontiguousarray(to_display(phantom_small.hemispheres, g))
    one_sided = labels.copy()
    left = truth == contract.HEMISPHERE_CODES[contract.HEMISPHERE_LEFT]
    for key in ("m1", "m2", "m3", "m4", "m5", "m6"):
        one_sided[left & (labels == contract.REGION_BY_KEY[key].index)] = 0
    for stack in (labels, one_sided):
        plane = estimate_plane(stack, g)
        assert plane.method == "bilateral-centroids"
        hemis = hemisphere_map(stack, g, plane)
        assert np.array_equal(hemis[stack > 0], truth[stack > 0])
