"""Quality control (aspects_client.qc) on label maps whose answer is known.

The synthetic case: a 128 x 128 x 6 volume, 1 x 1 x 5 mm voxels, stored with the slice
axis flipped (original slice k is display slice 5 - k), a uniform head disc of radius 58 px
with a dark "ventricle", and one 8 x 10 px box per region and slice, mirrored about the
mid-sagittal plane: ganglionic regions on the three inferior slices, supraganglionic ones
on the three superior slices.  Every box holds 8 x 10 x 3 = 240 voxels = 1.2 mL per side.
"""

from __future__ import annotations

import json

import cv2
import jsonschema
import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract, qc
from aspects_client.assemble import assemble
from aspects_client.display_stack import prepare
from aspects_client.document import validate
from aspects_client.geometry import to_display
from aspects_client.volume_io import load_volume

X = Y = 128
Z = 6
RADIUS = 58.0
CENTRE = (X - 1) / 2
# slot (x0, y0) of each region's left-hemisphere box (x = i: patient left = low i)
SLOTS = [(24, 30), (34, 30), (44, 30), (24, 45), (34, 45), (44, 45), (24, 60)]
GANGLIONIC_K = (3, 4, 5)  # stored superior first: k = 5 is the most inferior slice
SUPRA_K = (0, 1, 2)
BOX = (8, 10)  # (x, y) size in voxels


def _affine() -> np.ndarray:
    """RAS in-plane, slice axis flipped: voxel k is at z = 5 * (Z - 1 - k) mm."""
    return np.array(
        [[1.0, 0, 0, -CENTRE], [0, 1.0, 0, -CENTRE], [0, 0, -5.0, 5.0 * (Z - 1)], [0, 0, 0, 1]]
    )


def _image() -> np.ndarray:
    """float32 [X, Y, Z]: a uniform head disc (200) with a dark ventricle (20), 0 outside."""
    xx, yy = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    r = np.hypot(xx - CENTRE, yy - CENTRE)
    plane = np.where(r <= RADIUS, 200.0, 0.0)
    plane[(np.abs(xx - CENTRE) < 6) & (np.abs(yy - 80) < 6)] = 20.0
    return np.repeat(plane[:, :, None], Z, axis=2).astype(np.float32)


def _box(labels: np.ndarray, cls: int, x0: int, y0: int, k: int, *, side: str) -> None:
    """Paint one box of class cls on one side (left: as given; right: mirrored in x)."""
    w, h = BOX
    xs = slice(x0, x0 + w) if side == "l" else slice(X - x0 - w, X - x0)
    labels[xs, y0 : y0 + h, k] = cls


def symmetric_labels() -> np.ndarray:
    """uint8 [X, Y, Z] class map: every region on both sides, at its own ASPECTS level."""
    labels = np.zeros((X, Y, Z), np.uint8)
    ganglionic = [contract.REGION_BY_KEY[k].index for k in contract.QC_GANGLIONIC_KEYS]
    supra = [contract.REGION_BY_KEY[k].index for k in contract.QC_SUPRAGANGLIONIC_KEYS]
    for classes, ks in ((ganglionic, GANGLIONIC_K), (supra, SUPRA_K)):
        for cls, (x0, y0) in zip(classes, SLOTS, strict=False):
            for k in ks:
                for side in ("l", "r"):
                    _box(labels, cls, x0, y0, k, side=side)
    return labels


def run(labels: np.ndarray, *, overlay: bool = False):
    image = nib.Nifti1Image(_image(), _affine())
    volume = load_volume(image, name="qc-case.nii.gz")
    prepared = prepare(volume)
    display = np.ascontiguousarray(to_display(labels, prepared.geometry)).astype(np.uint8)
    return assemble(volume, prepared, display, overlay=overlay), prepared


LENTIFORM = contract.REGION_BY_KEY["l"].index
M1 = contract.REGION_BY_KEY["m1"].index
M4 = contract.REGION_BY_KEY["m4"].index


# --- the pure pieces ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vr", "vl", "expected"),
    [(0, 0, 0.0), (3.0, 3.0, 0.0), (1.0, 0.0, 1.0), (0.0, 2.5, 1.0), (1.0, 0.58, 0.42)],
)
def test_asymmetry_formula(vr, vl, expected) -> None:
    assert qc.asymmetry(vr, vl) == pytest.approx(expected)


def _summary(**regions: tuple[float, float]) -> dict:
    """{key: (ml_r, ml_l)} -> a document summary (1 voxel = 0.001 mL), other regions empty."""
    out = {}
    for key in contract.REGION_KEYS:
        r, left = regions.get(key, (0.0, 0.0))
        out[key] = {
            "r": {"voxels": round(r * 1000), "volume_ml": r},
            "l": {"voxels": round(left * 1000), "volume_ml": left},
        }
    return out


def test_check_asymmetry_thresholds() -> None:
    ok = qc.check_asymmetry(_summary(l=(1.0, 0.9), c=(0.2, 0.0)))  # c: tiny, not judged
    assert ok["passed"] and ok["regions"] == [] and ok["flags"] == []
    assert ok["values"]["c"]["asymmetry"] == 1.0 and not ok["values"]["c"]["flagged"]
    bad = qc.check_asymmetry(_summary(l=(1.0, 0.58), m1=(3.0, 3.0)))
    assert not bad["passed"] and bad["regions"] == ["l"]
    assert bad["values"]["l"]["asymmetry"] == pytest.approx(0.42)
    assert bad["flags"] == [
        "lentiform nucleus (L): left/right volume asymmetry 42 % (> 15 %; R 1.00 mL, L 0.58 mL)"
    ]
    assert "head position" in bad["message"]
    # exactly at the bound is not flagged; the bound is a parameter
    assert qc.check_asymmetry(_summary(l=(1.0, 0.85)))["passed"]
    assert not qc.check_asymmetry(_summary(l=(1.0, 0.85)), max_asymmetry=0.1)["passed"]


def test_check_levels_on_document_areas() -> None:
    def entry(index, **px):
        areas = {}
        for name, (r, left) in px.items():
            areas[name] = {h: {"pixels": v} for h, v in (("r", r), ("l", left)) if v}
        return {"slice_index": index, "display_index": 9 - index, "areas": areas}

    slices = [
        entry(2, m1=(500, 500), m4=(19, 0)),  # 19 px < QC_LEVEL_MIN_PIXELS
        entry(3, m1=(5000, 5000), m4=(40, 60)),  # 40 < 1 % of 5040; 60 >= 1 % of 5060
        entry(4, m5=(300, 300)),
    ]
    result = qc.check_levels(slices)
    assert not result["passed"]
    assert result["slices"] == [3]
    assert result["values"] == [
        {
            "slice_index": 3,
            "display_index": 6,
            "hemisphere": "l",
            "ganglionic_pixels": 5000,
            "supraganglionic_pixels": 60,
            "labelled_pixels": 5060,
        }
    ]
    assert result["flags"] == [
        "ganglionic and supraganglionic regions on the same side: slice 3 (L)"
    ]
    assert qc.check_levels(slices[:1] + slices[2:])["passed"]


def _disc(shape=(200, 240), centre=(100, 110), radius=70, value=180) -> np.ndarray:
    img = np.zeros(shape, np.uint8)
    cv2.circle(img, (centre[1], centre[0]), radius, value, -1)
    return img


def test_head_mask_is_the_filled_largest_component() -> None:
    img = _disc()
    disc = img > 0
    img[90:110, 100:120] = 0  # a dark hole inside the head: filled
    img[5:12, 5:12] = 255  # a bright speck outside: not the head
    mask = qc.head_mask(img)
    assert mask[100, 110] and not mask[8, 8]
    assert not (disc & ~mask).any()  # the whole disc, hole included
    assert not (mask & ~(_disc(radius=72) > 0)).any()  # the blur grows it by <= 2 px
    grown = qc.head_mask(img, margin_px=4)
    assert np.count_nonzero(grown) > np.count_nonzero(mask)
    assert grown[100, 110 + 70 + 3] and not mask[100, 110 + 70 + 3]
    assert not qc.head_mask(np.zeros((32, 32), np.uint8)).any()


def test_labels_outside_a_head_disc_are_counted_exactly() -> None:
    images = np.stack([_disc(), _disc(), np.zeros((200, 240), np.uint8)])
    labels = np.zeros_like(images)
    labels[0, 80:120, 90:130] = M1  # 1600 px inside
    labels[1, 80:120, 90:130] = M1  # 1600 px inside ...
    labels[1, 0:10, 0:25] = M4  # ... and 250 px in the corner, outside
    outside, labelled = qc.outside_head_counts(labels, images, margin_px=3)
    assert outside.tolist() == [0, 250, 0] and labelled.tolist() == [1600, 1850, 0]
    check = qc.check_outside_head(outside, labelled, [7, 8, 9])
    assert not check["passed"]
    assert check["value"] == round(250 / 3450, 4)
    assert check["slices"] == [8]
    assert [v["fraction"] for v in check["values"]] == [0.0, round(250 / 1850, 4)]
    assert check["flags"] == ["7.2 % of labelled pixels outside the head (> 1 %): slice 8"]
    assert "review slices 8" in check["message"]
    assert qc.check_outside_head([0, 10], [1600, 1850], [7, 8])["passed"]  # 0.3 %


def test_margin_pixels() -> None:
    assert qc.margin_pixels(2.0, (0.5, 0.45)) == 4
    assert qc.margin_pixels(2.0, (5.0, 5.0)) == 0


# --- through assemble: the document's qc on known label maps -----------------------------


@pytest.fixture(scope="module")
def passing():
    return run(symmetric_labels(), overlay=True)


def test_symmetric_map_passes(passing) -> None:
    result, _ = passing
    doc = result.document
    validate(doc)
    assert doc["schema_version"] == contract.SCHEMA_VERSION
    assert doc["midsagittal_plane"]["method"] == "bilateral-centroids"
    q = doc["qc"]
    assert q["passed"] and q["flags"] == [], q["flags"]
    assert all(c["passed"] for c in q["checks"].values())
    assert doc["summary"]["l"]["r"]["volume_ml"] == pytest.approx(1.2)
    assert q["checks"]["asymmetry"]["values"]["l"] == {
        "asymmetry": 0.0,
        "volume_ml": {"r": 1.2, "l": 1.2},
        "flagged": False,
    }
    assert q["checks"]["outside_head"]["value"] == 0.0
    assert q["checks"]["asymmetry"]["threshold"] == contract.QC_ASYMMETRY_MAX


def test_shrunken_left_lentiform_is_flagged_with_its_percentage() -> None:
    labels = symmetric_labels()
    x0, y0 = SLOTS[contract.QC_GANGLIONIC_KEYS.index("l")]
    labels[x0 : x0 + BOX[0], y0 + 6 : y0 + BOX[1], :] = 0  # left: 8 x 6 of 8 x 10 kept
    doc = run(labels)[0].document
    validate(doc)
    assert doc["summary"]["l"]["l"]["voxels"] == 144 and doc["summary"]["l"]["r"]["voxels"] == 240
    q = doc["qc"]
    assert not q["passed"]
    check = q["checks"]["asymmetry"]
    assert check["regions"] == ["l"] and check["values"]["l"]["asymmetry"] == 0.4
    assert q["flags"] == [
        "lentiform nucleus (L): left/right volume asymmetry 40 % (> 15 %; R 1.20 mL, L 0.72 mL)"
    ]
    assert q["checks"]["level_consistency"]["passed"] and q["checks"]["outside_head"]["passed"]


def test_lentiform_on_one_side_only_is_flagged() -> None:
    labels = symmetric_labels()
    labels[: X // 2][labels[: X // 2] == LENTIFORM] = 0  # patient left = low i
    q = run(labels)[0].document["qc"]
    assert not q["passed"]
    assert q["checks"]["asymmetry"]["values"]["l"]["asymmetry"] == 1.0
    assert q["flags"] == [
        "lentiform nucleus (L): only in the right hemisphere (1.20 mL), none on the left"
    ]


def test_m1_and_m4_on_one_side_of_a_slice_are_flagged_with_its_index() -> None:
    labels = symmetric_labels()
    k = GANGLIONIC_K[1]  # original slice 4 = display slice 1
    _box(labels, M4, 34, 75, k, side="r")  # m4 beside m1, patient right only
    result, prepared = run(labels)
    doc = result.document
    validate(doc)
    assert prepared.geometry.original_slice_index(Z - 1 - k) == k  # flipped storage
    check = doc["qc"]["checks"]["level_consistency"]
    assert not check["passed"] and check["slices"] == [k]
    assert check["values"] == [
        {
            "slice_index": k,
            "display_index": Z - 1 - k,
            "hemisphere": "r",
            "ganglionic_pixels": 7 * 80,
            "supraganglionic_pixels": 80,
            "labelled_pixels": 8 * 80,
        }
    ]
    assert doc["qc"]["flags"][-1] == (
        f"ganglionic and supraganglionic regions on the same side: slice {k} (R)"
    )
    assert "review these slices" in check["message"]
    # the m4 volume (1.2 + 0.4 mL right vs 1.2 mL left) is asymmetric too: 25 %
    assert doc["qc"]["checks"]["asymmetry"]["regions"] == ["m4"]


def test_labels_painted_outside_the_head_disc_fraction() -> None:
    labels = symmetric_labels()
    k = SUPRA_K[0]
    labels[0:6, 0:6, k] = M4  # corners, far outside the disc, both sides: 72 px
    labels[X - 6 :, 0:6, k] = M4
    doc = run(labels)[0].document
    validate(doc)
    total = sum(s["voxels"] for r in doc["summary"].values() for s in r.values())
    assert total == 2 * 10 * 240 + 72
    check = doc["qc"]["checks"]["outside_head"]
    assert not check["passed"]
    assert check["value"] == round(72 / total, 4)
    per_slice = {v["slice_index"]: v for v in check["values"]}
    assert per_slice[k]["outside_pixels"] == 72
    assert per_slice[k]["fraction"] == round(72 / (6 * 80 + 72), 4)
    assert all(v["outside_pixels"] == 0 for i, v in per_slice.items() if i != k)
    assert check["slices"] == [k]
    assert doc["qc"]["flags"][-1] == (
        f"{100 * 72 / total:.1f} % of labelled pixels outside the head (> 1 %): slice {k}"
    )


def test_schema_requires_a_well_formed_qc(passing) -> None:
    doc = json.loads(json.dumps(passing[0].document))
    validate(doc)
    for breakage in (
        lambda d: d.pop("qc"),
        lambda d: d["qc"].update(passed="yes"),
        lambda d: d["qc"]["checks"].pop("outside_head"),
        lambda d: d["qc"]["checks"]["asymmetry"].update(threshold=-0.1),
        lambda d: d["qc"]["checks"]["asymmetry"]["values"]["l"].update(asymmetry=1.5),
        lambda d: d["qc"]["checks"]["level_consistency"].pop("message"),
        lambda d: d["qc"]["checks"]["outside_head"].update(value=2.0),
    ):
        broken = json.loads(json.dumps(doc))
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


# --- the overlay shows a failed QC ----------------------------------------------------------

_BANNER_BGR = np.array([20, 20, 120])
_RED_BGR = np.array([40, 40, 235])


def _count(img: np.ndarray, bgr: np.ndarray) -> int:
    return int(np.count_nonzero(np.abs(img.astype(int) - bgr).sum(-1) < 12))


def test_overlay_marks_a_failed_qc(passing, tmp_path) -> None:
    labels = symmetric_labels()
    k = GANGLIONIC_K[1]
    _box(labels, M4, 34, 75, k, side="r")
    result, _ = run(labels, overlay=True)
    (tmp_path / "qc_failed_overlay.png").write_bytes(result.overlay_png)
    failed = cv2.imdecode(np.frombuffer(result.overlay_png, np.uint8), cv2.IMREAD_COLOR)
    ok = cv2.imdecode(np.frombuffer(passing[0].overlay_png, np.uint8), cv2.IMREAD_COLOR)
    assert _count(ok, _BANNER_BGR) == 0 and _count(ok, _RED_BGR) < 50
    header = failed.shape[0] - ok.shape[0]  # the banner: title + 2 flags
    assert header == 12 + 24 * 3
    assert _count(failed[32 : 32 + header], _BANNER_BGR) > 0.8 * header * failed.shape[1]
    # the flagged slice's tile is framed in red: it is the 2nd of 6 tiles (display 1)
    tile = failed[32 + header : 32 + header + 384, 384 : 2 * 384]
    assert _count(tile, _RED_BGR) > 4 * 384
    others = failed[32 + header : 32 + header + 384, 0:384]
    assert _count(others, _RED_BGR) < 50


def test_flagged_slices_are_shown_first() -> None:
    from aspects_client.contours import SliceContours
    from aspects_client.overlay import choose_slices

    contours = [SliceContours(n, pixels={("m1", "r"): 100 + n}) for n in range(10)]
    assert choose_slices(contours) == [4, 5, 6, 7, 8, 9]
    assert choose_slices(contours, priority=[0, 2]) == [0, 2, 6, 7, 8, 9]
    document_qc = {
        "passed": False,
        "checks": {
            "level_consistency": {"passed": False, "values": [{"display_index": 2}]},
            "outside_head": {
                "passed": False,
                "threshold": 0.01,
                "values": [
                    {"display_index": 2, "outside_pixels": 5, "labelled_pixels": 100},
                    {"display_index": 3, "outside_pixels": 1, "labelled_pixels": 100},
                ],
            },
        },
    }
    assert qc.flagged_slices(document_qc) == {2: ["levels", "outside head"]}
    assert qc.flagged_slices(None) == {}


# --- the CLI path: contours from a given label map get QC too -------------------------------


def test_contours_cli_writes_qc_and_warns(tmp_path, capsys) -> None:
    from aspects_client.cli import main

    labels = symmetric_labels()
    labels[: X // 2][labels[: X // 2] == LENTIFORM] = 0
    vol_path, lab_path = tmp_path / "dwi.nii.gz", tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(_image(), _affine()), vol_path)
    nib.save(nib.Nifti1Image(labels, _affine()), lab_path)
    out = tmp_path / "contours.json"
    png = tmp_path / "overlay.png"
    args = ["contours", str(vol_path), str(lab_path), "-o", str(out)]
    rc = main([*args, f"--overlay={png}"])
    assert rc == 0
    doc = json.loads(out.read_text())
    validate(doc)
    assert not doc["qc"]["passed"] and "lentiform nucleus (L)" in doc["qc"]["flags"][0]
    err = capsys.readouterr().err
    assert "warning" in err and "QC failed" in err and "only in the right" in err
    assert png.stat().st_size > 0


def test_segmentation_result_exposes_qc(passing) -> None:
    from aspects_client.client import SegmentationResult

    result, _ = passing
    seg = SegmentationResult(
        source="x",
        document=result.document,
        label_image=result.label_image,
        overlay_png=None,
        regions={},
        provenance={},
    )
    assert seg.qc is result.document["qc"] and seg.qc["passed"] is True
