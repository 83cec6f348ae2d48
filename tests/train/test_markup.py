"""The seed's coloured markup format: palette round trip, refusals, and a volume import that
lands on the original voxels in any voxel order."""

from __future__ import annotations

import subprocess
import sys

import cv2
import nibabel as nib
import numpy as np
import pytest

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
    bad = subprocess.run([*cmd[:-1], "-o", str(out)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "one image per slice" in bad.stderr
