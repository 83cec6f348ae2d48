"""The seed's coloured markup format: palette round trip, refusals, and a volume import that
lands on the original voxels in any voxel order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from aspects_client import contract
from aspects_client.geometry import geometry_of, to_display
from aspects_synth import reorder
from aspects_train.markup import (
    PALETTE,
    MarkupError,
    decode_markup,
    encode_markup,
    import_markup_volume,
    one_hot,
)


def _all_classes(h: int = 40, w: int = 44) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    for c in range(contract.NUM_CLASSES):
        labels[c * 3 : c * 3 + 3, c : c + 20] = c
    return labels


def test_palette_is_the_contract_colours():
    assert {r.index: r.colour_rgb for r in contract.REGIONS} == PALETTE
    assert len(set(PALETTE.values())) == len(contract.REGIONS)


def test_palette_round_trips_every_class_over_a_grey_slice():
    labels = _all_classes()
    grey = np.random.default_rng(0).integers(0, 256, labels.shape, dtype=np.uint8)
    rgb = encode_markup(labels, grey)
    assert np.array_equal(rgb[labels == 0], np.repeat(grey[labels == 0, None], 3, axis=1))
    assert np.array_equal(decode_markup(rgb), labels)


def test_decode_tolerates_compression_noise():
    labels = _all_classes()
    rgb = encode_markup(labels).astype(np.int16)
    rgb += np.random.default_rng(1).integers(-8, 9, rgb.shape, dtype=np.int16)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    # grey stays grey: noise may tint background a little, never into a region
    assert np.array_equal(decode_markup(rgb)[labels > 0], labels[labels > 0])


def test_unknown_colours_are_refused_with_what_to_fix():
    labels = _all_classes()
    rgb = encode_markup(labels)
    rgb[labels == 1] = (0, 0, 255)  # pure blue is no palette colour
    with pytest.raises(MarkupError, match=r"match no palette colour.*RGB\(0, 0, 255\)"):
        decode_markup(rgb, name="slice.png")


def test_one_hot_matches_labels():
    labels = _all_classes()
    oh = one_hot(labels)
    assert oh.shape == (contract.NUM_CLASSES, *labels.shape) and oh.dtype == bool
    assert np.array_equal(oh.argmax(0), labels) and (oh.sum(0) == 1).all()


def _write_markups(ph, d):
    geometry = geometry_of(ph.image.affine, ph.image.shape)
    display = np.ascontiguousarray(to_display(ph.classes, geometry))
    paths = []
    for k, labels in enumerate(display):
        path = d / f"slice_{k:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(encode_markup(labels), cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("order", ["RAS", "LPS", "PIR"])
def test_import_markup_volume_lands_on_the_original_voxels(tmp_path, phantom_small, order):
    ph = reorder(phantom_small, order)
    vol = tmp_path / "vol.nii.gz"
    nib.save(ph.image, vol)
    img = import_markup_volume(vol, _write_markups(ph, tmp_path))
    assert np.array_equal(np.asanyarray(img.dataobj), ph.classes)
    assert np.allclose(img.affine, ph.image.affine)


def test_import_markup_refuses_wrong_count_and_size(tmp_path, phantom_small):
    vol = tmp_path / "vol.nii.gz"
    nib.save(phantom_small.image, vol)
    paths = _write_markups(phantom_small, tmp_path)
    with pytest.raises(MarkupError, match="one image per slice"):
        import_markup_volume(vol, paths[:-1])
    cv2.imwrite(paths[0], np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(MarkupError, match="export the markup at the slice's size"):
        import_markup_volume(vol, paths)


def test_cli_import_markup(tmp_path, phantom_small):
    vol = tmp_path / "vol.nii.gz"
    nib.save(phantom_small.image, vol)
    paths = _write_markups(phantom_small, tmp_path)
    out = tmp_path / "labels.nii.gz"
    cmd = [sys.executable, "-m", "aspects_train.cli", "import-markup", str(vol), *paths]
    ok = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert np.array_equal(np.asanyarray(nib.load(out).dataobj), phantom_small.classes)
    before = out.read_bytes()
    stamp = out.stat().st_mtime_ns
    bad = subprocess.run([*cmd[:-1], "-o", str(out)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "one image per slice" in bad.stderr
    # a failed run leaves the existing output exactly as it was
    assert out.read_bytes() == before and out.stat().st_mtime_ns == stamp


# --- a hand-built markup: orientation pinned by hand, not by the project's own writer -------

# A 6 (patient L-R) x 4 (A-P) x 3 (I-S) grid of 2 x 2.5 x 3 mm voxels stored three ways; each
# affine is written out by hand (columns: where +i, +j, +k point in RAS+ mm).
HAND_AFFINES = {
    # i -> patient right (+x), j -> anterior (+y), k -> superior (+z)
    "RAS": np.array([[2, 0, 0, -5], [0, 2.5, 0, -3.75], [0, 0, 3, -3], [0, 0, 0, 1]], float),
    # i -> patient left (-x), j -> posterior (-y), k -> superior (+z)
    "LPS": np.array([[-2, 0, 0, 5], [0, -2.5, 0, 3.75], [0, 0, 3, -3], [0, 0, 0, 1]], float),
    # i -> posterior (-y), j -> inferior (-z), k -> patient right (+x)
    "PIR": np.array([[0, 0, 2, -5], [-2.5, 0, 0, 3.75], [0, -3, 0, 3], [0, 0, 0, 1]], float),
}
HAND_SHAPES = {"RAS": (6, 4, 3), "LPS": (6, 4, 3), "PIR": (4, 3, 6)}
# The markup (3 PNGs of 4 rows x 6 columns, slice 0 = most inferior; row 0 = anterior,
# column 0 = patient left):
#   slice 0: an m1 block in rows 0-1, columns 0-1  -> the 4 most anterior, most patient-left
#            voxels of the most inferior slice;
#   slice 2: one c pixel in row 3, column 5        -> the most posterior, most patient-right
#            voxel of the most superior slice.
# Expected voxel indices, worked out by hand from the affines above:
HAND_EXPECTED = {
    "RAS": {
        "m1": {(0, 3, 0), (0, 2, 0), (1, 3, 0), (1, 2, 0)},  # x min = left, y max = anterior
        "c": {(5, 0, 2)},
    },
    "LPS": {
        "m1": {(5, 0, 0), (5, 1, 0), (4, 0, 0), (4, 1, 0)},  # i max = left, j 0 = anterior
        "c": {(0, 3, 2)},
    },
    "PIR": {
        "m1": {(0, 2, 0), (1, 2, 0), (0, 2, 1), (1, 2, 1)},  # i 0 = anterior, j 2 = inferior
        "c": {(3, 0, 5)},
    },
}


def _hand_markups(d: Path) -> list[str]:
    """Three RGB PNGs written with PIL from literal arrays (grey 90 everywhere, the two
    markers in the contract colours), not with the project's encode_markup."""
    m1 = contract.REGION_BY_KEY["m1"].colour_rgb
    c = contract.REGION_BY_KEY["c"].colour_rgb
    slices = [np.full((4, 6, 3), 90, np.uint8) for _ in range(3)]
    slices[0][0:2, 0:2] = m1  # top-left: anterior, patient left
    slices[2][3, 5] = c  # bottom-right: posterior, patient right
    paths = []
    for k, rgb in enumerate(slices):
        path = d / f"hand_{k}.png"
        Image.fromarray(rgb, mode="RGB").save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("order", list(HAND_AFFINES))
def test_hand_built_markup_lands_on_hand_computed_voxels(tmp_path, order):
    affine, shape = HAND_AFFINES[order], HAND_SHAPES[order]
    assert nib.aff2axcodes(affine) == tuple(order)  # premise: the stored orientation
    data = np.random.default_rng(5).uniform(10, 100, shape).astype(np.float32)
    vol = tmp_path / f"hand_{order}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), vol)
    img = import_markup_volume(vol, _hand_markups(tmp_path))
    labels = np.asanyarray(img.dataobj)
    assert labels.shape == shape
    np.testing.assert_allclose(img.affine, affine)
    got = {
        key: {tuple(int(v) for v in ijk) for ijk in np.argwhere(labels == index)}
        for key, index in (("m1", 1), ("c", 9))
    }
    assert got == HAND_EXPECTED[order]
    assert np.count_nonzero(labels) == 5  # nothing else is labelled
    # the same voxels in world mm: m1 in the patient's left (x < 0) anterior (y > 0) corner
    # at the lowest level; c at the right (x > 0) posterior (y < 0) corner at the top
    world = nib.affines.apply_affine(affine, np.argwhere(labels == 1))
    assert np.allclose(sorted(set(world[:, 0])), [-5, -3]), world
    assert np.allclose(sorted(set(world[:, 1])), [1.25, 3.75]), world
    assert np.allclose(world[:, 2], -3), world
    c_world = nib.affines.apply_affine(affine, np.argwhere(labels == 9))
    np.testing.assert_allclose(c_world, [[5, -3.75, 3]])
