"""The contours document: schema, round trip IoU, areas/volumes, label map, overlay."""

from __future__ import annotations

import copy
import gzip

import cv2
import jsonschema
import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract
from aspects_client.assemble import assemble
from aspects_client.display_stack import prepare
from aspects_client.document import dumps, validate
from aspects_client.geometry import to_display
from aspects_client.labelmap import label_map_bytes
from aspects_client.rasterize import rasterize_document
from aspects_client.volume_io import load_volume


@pytest.fixture(scope="module")
def result(phantom_512):
    raw = gzip.compress(phantom_512.image.to_bytes(), compresslevel=1)
    vol = load_volume(raw, name="phantom.nii.gz")
    prepared = prepare(vol)
    labels = np.ascontiguousarray(to_display(phantom_512.classes, prepared.geometry))
    return assemble(vol, prepared, labels, overlay=True, overlay_note="phantom truth")


def test_document_validates_and_is_json(result) -> None:
    validate(result.document)
    text = dumps(result.document)
    assert text.startswith('{"schema_version"')
    assert result.document["schema_version"] == contract.SCHEMA_VERSION == "1.2.0"


def test_phantom_truth_passes_qc(result) -> None:
    """The exact labels of the default phantom (seed 3, an untilted level split) pass every
    check; the numbers behind each check are reported."""
    qc = result.document["qc"]
    assert qc["passed"] and qc["flags"] == [], qc["flags"]
    asym = qc["checks"]["asymmetry"]["values"]
    assert set(asym) == set(contract.REGION_KEYS)
    assert 0 < max(v["asymmetry"] for v in asym.values()) <= contract.QC_ASYMMETRY_MAX
    assert qc["checks"]["level_consistency"]["values"] == []
    head = qc["checks"]["outside_head"]
    assert head["value"] == 0.0 and len(head["values"]) == 19  # 19 of 20 slices labelled


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.pop("summary"),
        lambda d: d["slices"][0]["regions"].pop("m1"),
        lambda d: d["slices"][0]["regions"]["m1"].update(x=[]),
        lambda d: d["source"].update(axcodes="XYZ"),
        lambda d: d["summary"]["m1"]["r"].update(volume_ml=-1),
        lambda d: d.pop("qc"),
        lambda d: d["qc"].update(flags="none"),
        lambda d: d["qc"]["checks"]["asymmetry"].pop("passed"),
    ],
)
def test_schema_rejects_broken_documents(result, breakage) -> None:
    doc = copy.deepcopy(result.document)
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_round_trip_iou_per_region(result, phantom_512) -> None:
    classes, hemis = rasterize_document(result.document)
    for region in contract.REGIONS:
        for hemi, code in contract.HEMISPHERE_CODES.items():
            truth = (phantom_512.classes == region.index) & (phantom_512.hemispheres == code)
            got = (classes == region.index) & (hemis == code)
            assert truth.any(), (region.key, hemi)
            iou = np.count_nonzero(truth & got) / np.count_nonzero(truth | got)
            assert iou >= 0.99, (region.key, hemi, iou)


def test_volumes_and_areas_match_voxel_counts(result, phantom_512) -> None:
    zooms = np.abs(np.linalg.det(phantom_512.image.affine[:3, :3]))
    for region in contract.REGIONS:
        for hemi, code in contract.HEMISPHERE_CODES.items():
            n = int(
                np.count_nonzero(
                    (phantom_512.classes == region.index) & (phantom_512.hemispheres == code)
                )
            )
            entry = result.document["summary"][region.key][hemi]
            assert entry["voxels"] == n
            assert entry["volume_ml"] == pytest.approx(n * zooms / 1000, rel=1e-3)
            per_slice = sum(
                s["areas"].get(region.key, {}).get(hemi, {}).get("pixels", 0)
                for s in result.document["slices"]
            )
            assert per_slice == n


def test_label_map_is_in_the_source_grid(result, phantom_512) -> None:
    img = nib.Nifti1Image.from_bytes(gzip.decompress(label_map_bytes(result.label_image)))
    assert img.shape == phantom_512.image.shape
    np.testing.assert_allclose(img.affine, phantom_512.image.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), phantom_512.classes)
    assert img.get_data_dtype() == np.uint8


def test_overlay_is_radiological(result) -> None:
    """Right-hemisphere contours are drawn on the image's left half of each tile."""
    png = result.overlay_png
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] >= 384 and img.shape[1] >= 384 * 3
    # QC passed: no banner, the header is title + note, the tiles follow
    assert img.shape[0] == 56 + 2 * 384
    # Re-render one slice with only right-hemisphere polygons of one region
    from aspects_client.contours import SliceContours
    from aspects_client.overlay import TILE_PX, render_overlay

    sc = next(s for s in result.contours if ("l", "r") in s.polygons)
    only_right = SliceContours(sc.index, {("l", "r"): sc.polygons[("l", "r")]}, {("l", "r"): 1})
    prepared_slices = np.zeros((len(result.contours), *result.hemispheres.shape[1:]), np.uint8)
    png1 = render_overlay(prepared_slices, [only_right], _geometry(result), indices=[sc.index])
    tile = cv2.imdecode(np.frombuffer(png1, np.uint8), cv2.IMREAD_COLOR)[-TILE_PX:, :TILE_PX]
    colour = np.array(contract.REGION_BY_KEY["l"].colour_rgb[::-1])
    hits = np.argwhere(np.abs(tile.astype(int) - colour).sum(-1) < 30)
    assert len(hits) > 20
    assert hits[:, 1].mean() < TILE_PX / 2


def _geometry(result):
    from aspects_client.geometry import geometry_of

    src = result.document["source"]
    return geometry_of(np.array(src["affine"]), tuple(src["shape"]))
