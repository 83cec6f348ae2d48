"""The mid-sagittal plane is always finite and stated: when the labels cannot give it, a
fallback (the head's own centroid, else the field-of-view centre) is used and QC says so.

The synthetic case: 128 x 128 x 6 voxels of 1 x 1 x 5 mm, RAS (world x = i - 63.5 mm), a
uniform head disc of radius 58 px; labels are painted in display space (column = i).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract, qc
from aspects_client.assemble import assemble
from aspects_client.display_stack import prepare
from aspects_client.document import build_document, validate
from aspects_client.geometry import geometry_of, to_display
from aspects_client.hemisphere import (
    METHOD_BILATERAL,
    METHOD_FOV,
    METHOD_HEAD,
    MidsagittalPlane,
    estimate_plane,
    fallback_plane,
    hemisphere_map,
)
from aspects_client.volume_io import load_volume

N, H, W = 6, 128, 128
CENTRE = (W - 1) / 2
FALLBACKS = (METHOD_HEAD, METHOD_FOV)
M1 = contract.REGION_BY_KEY["m1"].index
M2 = contract.REGION_BY_KEY["m2"].index


def affine(shift_mm: float = 0.0) -> np.ndarray:
    return np.array(
        [[1.0, 0, 0, -CENTRE + shift_mm], [0, 1, 0, -CENTRE], [0, 0, 5, 0], [0, 0, 0, 1]]
    )


def head_volume(centre_px: float = CENTRE, radius_px: float = 58) -> np.ndarray:
    """float32 [X, Y, Z]: a uniform disc (200) of radius_px centred at column centre_px."""
    xx, yy = np.meshgrid(np.arange(W), np.arange(H), indexing="ij")
    disc = np.hypot(xx - centre_px, yy - CENTRE) <= radius_px
    return np.repeat(np.where(disc, 200.0, 0.0)[:, :, None], N, axis=2).astype(np.float32)


def blob(labels: np.ndarray, cls: int, x_mm: float, rows: slice = slice(40, 50)) -> None:
    """Paint class cls, 6 columns wide around world x = x_mm, on every display slice."""
    col = round(x_mm + CENTRE)
    labels[:, rows, col - 3 : col + 3] = cls


def labels_for(case: str) -> np.ndarray:
    labels = np.zeros((N, H, W), np.uint8)
    if case == "one-sided-pairs":  # two blobs per class, all on the patient's right
        blob(labels, M1, 20)
        blob(labels, M1, 50)
        blob(labels, M2, 40, slice(60, 70))
        blob(labels, M2, 60, slice(60, 70))
    elif case == "one-class-one-side":
        blob(labels, M1, 25)
    elif case == "single-pixel":
        labels[2, 64, 80] = M1
    elif case == "few-pixels":
        labels[2, 64, 30] = labels[2, 64, 97] = M1  # left and right, 1 pixel each
    elif case == "bilateral":
        blob(labels, M1, -30)
        blob(labels, M1, 30)
    return labels


CASES = ["no-labels", "single-pixel", "few-pixels", "one-class-one-side", "one-sided-pairs"]


def run(labels: np.ndarray, centre_px: float = CENTRE, radius_px: float = 58):
    image = nib.Nifti1Image(head_volume(centre_px, radius_px), affine())
    volume = load_volume(image, name="hemi.nii")
    prepared = prepare(volume)
    return assemble(volume, prepared, labels, overlay=False), prepared


def assert_finite(plane: MidsagittalPlane) -> None:
    assert np.all(np.isfinite(plane.normal)) and np.isfinite(plane.offset_mm), plane
    assert np.linalg.norm(plane.normal) == pytest.approx(1.0)


# --- estimate_plane -----------------------------------------------------------------------


def test_one_sided_pairs_no_longer_give_a_nan_plane() -> None:
    """Two classes, each two blobs on the right: both pass as 'pairs' whose midpoints
    (35 and 50 mm) straddle their median by more than 5 mm -> 0/0 = NaN before."""
    g = geometry_of(affine(), (W, H, N))
    plane = estimate_plane(labels_for("one-sided-pairs"), g)
    assert_finite(plane)


def test_a_plane_that_does_not_split_the_head_falls_back_to_the_head_centroid() -> None:
    _, prepared = run(labels_for("no-labels"))
    labels = labels_for("one-sided-pairs")
    plane = estimate_plane(labels, prepared.geometry, prepared.slices)
    assert plane.method == METHOD_HEAD and plane.is_fallback
    assert plane.normal == (1.0, 0.0, 0.0)
    assert plane.offset_mm == pytest.approx(0.0, abs=0.5)
    hemis = hemisphere_map(labels, prepared.geometry, plane)
    assert set(np.unique(hemis[labels > 0])) == {contract.HEMISPHERE_CODES["r"]}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_image", [False, True])
def test_every_path_gives_a_finite_plane(case: str, with_image: bool) -> None:
    _, prepared = run(labels_for("no-labels"))
    image = prepared.slices if with_image else None
    plane = estimate_plane(labels_for(case), prepared.geometry, image)
    assert_finite(plane)
    if case != "one-sided-pairs" or with_image:
        assert plane.method in FALLBACKS
        assert plane.method == (METHOD_HEAD if with_image else METHOD_FOV)


def test_head_centroid_follows_an_off_centre_head() -> None:
    """The head's disc (radius 45 px) is centred 15 px right of the field of view's centre."""
    _, prepared = run(labels_for("no-labels"), centre_px=CENTRE + 15, radius_px=45)
    g = prepared.geometry
    plane = estimate_plane(labels_for("one-class-one-side"), g, prepared.slices)
    assert plane.method == METHOD_HEAD
    assert plane.offset_mm == pytest.approx(15.0, abs=0.5)
    assert fallback_plane(g).method == METHOD_FOV
    assert fallback_plane(g).offset_mm == pytest.approx(0.0)
    blank = np.zeros_like(prepared.slices)
    assert fallback_plane(g, blank).method == METHOD_FOV


def test_the_image_does_not_change_a_good_plane(phantom_small) -> None:
    volume = load_volume(phantom_small.image)
    prepared = prepare(volume)
    labels = np.ascontiguousarray(to_display(phantom_small.classes, prepared.geometry))
    old_call = estimate_plane(labels, prepared.geometry)
    new_call = estimate_plane(labels, prepared.geometry, prepared.slices)
    assert old_call == new_call and new_call.method == METHOD_BILATERAL


def test_image_must_match_labels() -> None:
    g = geometry_of(affine(), (W, H, N))
    with pytest.raises(ValueError, match="differ"):
        estimate_plane(labels_for("bilateral"), g, np.zeros((N, H, W - 1), np.uint8))


# --- the document and its QC ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_assembled_documents_are_json_and_flag_a_fallback_plane(case: str) -> None:
    result, _ = run(labels_for(case))
    doc = result.document
    text = json.dumps(doc, allow_nan=False)  # "Out of range float values" before
    validate(json.loads(text))
    plane, check = doc["midsagittal_plane"], doc["qc"]["checks"]["midsagittal_plane"]
    assert check["method"] == plane["method"]
    flagged = [f for f in doc["qc"]["flags"] if "fallback mid-sagittal plane" in f]
    if plane["method"] == METHOD_BILATERAL:
        assert check["passed"] and not flagged
    else:
        assert not check["passed"] and not doc["qc"]["passed"]
        assert flagged and "review left/right" in flagged[0]
    if case != "one-sided-pairs":  # whatever image assemble passes, these must fall back
        assert plane["method"] in FALLBACKS


def test_one_sided_pairs_with_the_image_are_flagged_in_qc() -> None:
    """What assemble gives once it passes the display slices to estimate_plane."""
    _, prepared = run(labels_for("no-labels"))
    labels = labels_for("one-sided-pairs")
    plane = estimate_plane(labels, prepared.geometry, prepared.slices)
    from aspects_client.contours import extract_contours

    contours = extract_contours(labels, hemisphere_map(labels, prepared.geometry, plane))
    doc = build_document(contours, prepared.geometry, plane, source_name="hemi.nii")
    doc["qc"] = qc.quality_control(
        doc, labels, prepared.slices, pixel_spacing_mm=prepared.geometry.display_pixel_spacing_mm
    )
    validate(json.loads(json.dumps(doc, allow_nan=False)))
    assert doc["midsagittal_plane"]["method"] == METHOD_HEAD
    assert not doc["qc"]["passed"]
    assert doc["qc"]["flags"][0] == (
        "left/right: hemisphere assignment used the fallback mid-sagittal plane "
        "(head centroid, x = 0.0 mm (world RAS)); review left/right"
    )


@pytest.mark.parametrize(
    ("method", "passed", "words"),
    [
        (METHOD_BILATERAL, True, "regions labelled on both sides"),
        (METHOD_HEAD, False, "head centroid, x = -2.5 mm"),
        (METHOD_FOV, False, "field-of-view centre, x = -2.5 mm"),
    ],
)
def test_check_midsagittal_plane(method: str, passed: bool, words: str) -> None:
    check = qc.check_midsagittal_plane(
        {"normal": [1.0, 0.0, 0.0], "offset_mm": -2.5, "method": method}
    )
    assert check["passed"] is passed and check["method"] == method
    assert words in check["message"]
    assert bool(check["flags"]) is not passed
    if not passed:
        assert words in check["flags"][0] and "review left/right" in check["flags"][0]
        assert "review every region's hemisphere" in check["message"]
        assert all(ord(c) < 128 for c in check["flags"][0] + check["message"])
