"""Geometry is sacred: the same phantom labels written in many voxel orders and shapes.

For every variant the contours JSON, rasterised back into the variant's own grid, must
give exactly the phantom's classes and hemispheres, and every variant of one phantom
must put its contour points at the same world positions (within half a voxel).
"""

from __future__ import annotations

import functools
import gzip

import numpy as np
import pytest

from aspects_client import contract
from aspects_client.assemble import assemble
from aspects_client.display_stack import prepare
from aspects_client.document import validate
from aspects_client.geometry import to_display
from aspects_client.rasterize import rasterize_document
from aspects_client.volume_io import load_volume
from aspects_synth import make_phantom, reorder

# (name, make_phantom kwargs): non-square, non-512 in-plane sizes, the fewest slices
# (contract.MIN_SLICES), oblique grid
SHAPES = {
    "160x192x9": {"seed": 11, "in_plane": (160, 192), "n_slices": 9},
    "97x64x3": {"seed": 5, "in_plane": (97, 64), "n_slices": 3, "centre_z_mm": 5.0},
    "256x256x12-oblique": {
        "seed": 7,
        "in_plane": (256, 256),
        "n_slices": 12,
        "grid_rotation_deg": (6.0, -8.0, 12.0),
    },
    "512x512x20": {"seed": 3},
}
ORDERS = ("RAS", "LPS", "LAS", "RPI", "PIR", "ASL", "ILP")
CASES = [(s, o) for s in SHAPES for o in ORDERS if s != "512x512x20" or o in ("RAS", "LPS", "PIR")]


@functools.cache
def phantom(shape_name: str):
    return make_phantom(**SHAPES[shape_name])


@functools.cache
def run_variant(shape_name: str, order: str):
    """Write the variant as .nii.gz bytes, load it back, contour its true labels."""
    variant = reorder(phantom(shape_name), order)
    raw = gzip.compress(variant.image.to_bytes(), compresslevel=1)
    vol = load_volume(raw, name=f"{shape_name}-{order}.nii.gz")
    prepared = prepare(vol)
    labels = np.ascontiguousarray(to_display(variant.classes, prepared.geometry))
    result = assemble(vol, prepared, labels, overlay=False)
    return variant, result


@pytest.mark.parametrize(("shape_name", "order"), CASES)
def test_labels_and_hemispheres_come_back_on_the_original_voxels(shape_name, order) -> None:
    variant, result = run_variant(shape_name, order)
    doc = result.document
    validate(doc)
    assert doc["source"]["shape"] == list(variant.image.shape)
    assert doc["source"]["axcodes"] == "".join(
        __import__("nibabel").aff2axcodes(variant.image.affine)
    )
    classes, hemis = rasterize_document(doc)
    np.testing.assert_array_equal(classes, variant.classes)
    labelled = variant.classes > 0
    wrong = np.count_nonzero(hemis[labelled] != variant.hemispheres[labelled])
    assert wrong == 0, f"{wrong} voxels in the wrong hemisphere"
    # the label map NIfTI lands on the same voxels, with the source's affine
    np.testing.assert_array_equal(np.asanyarray(result.label_image.dataobj), variant.classes)
    np.testing.assert_allclose(result.label_image.affine, variant.image.affine, atol=1e-5)


def world_points(doc) -> dict[tuple[str, str], np.ndarray]:
    out: dict[tuple[str, str], list] = {}
    for entry in doc["slices"]:
        for key, per_hemi in entry["regions"].items():
            for hemi, rings in per_hemi.items():
                for ring in rings:
                    out.setdefault((key, hemi), []).extend(ring["world_mm"])
    return {k: np.asarray(v) for k, v in out.items()}


def max_nearest_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric max over points of the distance to the nearest point of the other set."""
    worst = 0.0
    for x, y in ((a, b), (b, a)):
        for chunk in np.array_split(x, max(1, len(x) // 2000)):
            d = np.sqrt(((chunk[:, None, :] - y[None, :, :]) ** 2).sum(-1)).min(axis=1)
            worst = max(worst, float(d.max()))
    return worst


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_every_voxel_order_agrees_in_world_space(shape_name) -> None:
    orders = [o for s, o in CASES if s == shape_name]
    reference = world_points(run_variant(shape_name, orders[0])[1].document)
    half_voxel = min(phantom(shape_name).image.header.get_zooms()[:3]) / 2
    assert reference, "the phantom should have contours"
    for order in orders[1:]:
        points = world_points(run_variant(shape_name, order)[1].document)
        assert points.keys() == reference.keys(), order
        for key in reference:
            assert max_nearest_distance(points[key], reference[key]) <= half_voxel, (order, key)


@pytest.mark.parametrize(("shape_name", "order"), [("160x192x9", "LPS"), ("97x64x3", "PIR")])
def test_right_hemisphere_is_patient_right_in_world(shape_name, order) -> None:
    """Independent of the plane estimate: right-hemisphere rings sit at larger world x."""
    _, result = run_variant(shape_name, order)
    pts = world_points(result.document)
    for key in contract.REGION_KEYS:
        if (key, "r") in pts and (key, "l") in pts:
            assert pts[(key, "r")][:, 0].mean() > pts[(key, "l")][:, 0].mean(), key


def test_slice_axis_and_index_follow_the_file() -> None:
    _, result = run_variant("160x192x9", "ASL")
    doc = result.document
    axis = doc["source"]["slice_axis"]
    codes = doc["source"]["axcodes"]
    assert codes[axis] in "SI"
    for entry in doc["slices"]:
        for per_hemi in entry["regions"].values():
            for rings in per_hemi.values():
                for ring in rings:
                    assert {v[axis] for v in ring["voxels"]} == {entry["slice_index"]}
