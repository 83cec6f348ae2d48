"""The domain-randomised generator: labels follow every deformation exactly, a seed makes
the same sample, the training tensors are the serving contract's, and whole volumes go
through the client's geometry to their exact truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from aspects_client import contract
from aspects_client.display_stack import prepare
from aspects_client.geometry import geometry_of, to_display
from aspects_client.intensity import window_bounds, window_to_uint8
from aspects_client.server_reference import context_stacks, network_input
from aspects_client.volume_io import load_volume
from aspects_synth import generator as g
from aspects_synth import reorder
from aspects_synth.head_labels import BRAIN_TISSUES, HEAD_TISSUES, T, load_label_maps


@pytest.fixture(scope="module")
def maps():
    return load_label_maps()


def _strong(seed: int, maps, **overrides) -> g.Head:
    """A head with every deformation at a large, known setting and no intensity noise."""
    head = g.Head(seed, maps=maps)
    params = dataclasses.replace(
        head.params,
        rotation_deg=(28.0, 6.0, -9.0),
        scale=(1.1, 0.9, 1.05),
        shear=(0.05, -0.04, 0.03),
        translation_mm=(6.0, -5.0, 3.0),
        deform_mm=3.5,
        ventricle_gain=0.3,
        epi_mm=-8.0,
        flip=False,
        **overrides,
    )
    head.params = params
    head.warp = g.Warp(params, maps, head.device)
    return head


# --- an independent NumPy version of the point map --------------------------------------


def _trilinear(field: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """field [C, a, b, c] at fractional indices coords [N, 3] (clamped to the edges)."""
    size = np.asarray(field.shape[1:])
    c = np.clip(coords, 0, size - 1)
    lo = np.minimum(np.floor(c).astype(int), size - 2)
    f = c - lo
    out = np.zeros((field.shape[0], len(c)))
    for corner in np.ndindex(2, 2, 2):
        w = np.prod(np.where(np.asarray(corner), f, 1 - f), axis=1)
        idx = lo + np.asarray(corner)
        out += w * field[:, idx[:, 0], idx[:, 1], idx[:, 2]]
    return out.T


def _numpy_labels(head: g.Head, grid: g.Grid, size: int, maps) -> np.ndarray:
    """Classes [S, size, size] at the display pixel centres, by NumPy float64 maths."""
    p = head.params
    px = grid.fov_mm / size
    centres = (np.arange(size) + 0.5 - size / 2) * px
    out = []
    mni_from_scanner = np.linalg.inv(g.pose_matrix(p))
    vox_from_mni = np.linalg.inv(maps.affine)
    field = head.warp.field[0].cpu().numpy().astype(np.float64)
    shape = np.asarray(maps.tissue.shape, float)
    for z in grid.z_mm:
        yy, xx = np.meshgrid(-centres, centres, indexing="ij")
        pts = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)], -1)
        rigid = pts @ mni_from_scanner[:3, :3].T + mni_from_scanner[:3, 3]
        blob = np.zeros(len(pts))
        for bx, by, bz, s in g.PHASE_BLOBS_MNI:
            blob += np.exp(-((rigid - (bx, by, bz)) ** 2).sum(-1) / (2 * s * s))
        pts[:, 1] += p.epi_mm * np.minimum(blob, 1.0)
        mni = pts @ mni_from_scanner[:3, :3].T + mni_from_scanner[:3, 3]
        d = mni - maps.ventricle_centre_mm
        mni = mni - p.ventricle_gain * d * np.exp(-(d * d).sum(-1, keepdims=True) / 968.0)
        vox = mni @ vox_from_mni[:3, :3].T + vox_from_mni[:3, 3]
        frac = vox / (shape - 1) * (np.asarray(field.shape[1:]) - 1)
        mni = mni + _trilinear(field, frac)
        vox = np.rint(mni @ vox_from_mni[:3, :3].T + vox_from_mni[:3, 3]).astype(int)
        inside = ((vox >= 0) & (vox < shape.astype(int))).all(1)
        v = np.where(inside[:, None], vox, 0)
        lab = np.where(inside, maps.classes[v[:, 0], v[:, 1], v[:, 2]], 0)
        out.append(lab.reshape(size, size))
    return np.stack(out)


def test_labels_follow_pose_shear_deformation_ventricles_and_epi_exactly(maps):
    head = _strong(1234, maps)
    grid = g.Grid(matrix=96, fov_mm=230.0, thickness_mm=4.0, z_mm=(-5.0, 12.0, 30.0))
    torch_labels = head.render(grid, label_size=96).classes.numpy()
    numpy_labels = _numpy_labels(head, grid, 96, maps)
    assert torch_labels.max() > 0
    # float32 vs float64: only points within rounding of a voxel face may differ
    assert (torch_labels != numpy_labels).mean() < 2e-3


def test_every_deformation_moves_the_labels(maps):
    """Turning each deformation off changes the labels: none of them is silently ignored."""
    grid = g.Grid(matrix=64, fov_mm=230.0, thickness_mm=4.0, z_mm=(12.0,))
    full = _strong(99, maps).render(grid).classes.numpy()
    for field, off in (
        ("deform_mm", 0.0),
        ("ventricle_gain", 0.0),
        ("epi_mm", 0.0),
        ("scale", (1.0, 1.0, 1.0)),
        ("shear", (0.0, 0.0, 0.0)),
    ):
        head = _strong(99, maps)
        params = dataclasses.replace(head.params, **{field: off})
        head.params, head.warp = params, g.Warp(params, maps, head.device)
        assert (head.render(grid).classes.numpy() != full).mean() > 0.002, field


def test_image_and_labels_share_one_point_map(maps):
    """An image drawn from the class map itself (no noise, bias or dropout, thin slices)
    equals the labels wherever the 8 trilinear neighbours agree."""
    head = _strong(7, maps, noise=0.0, bias=0.0, dropout=0.0, mask_background=False)
    head.intensity = head.classes.float()
    grid = g.Grid(matrix=128, fov_mm=220.0, thickness_mm=0.5, z_mm=(0.0, 15.0, 40.0))
    out = head.render(grid, partial=1)
    image, labels = out.image.numpy(), out.classes.numpy()
    exact = np.isclose(image, np.round(image), atol=1e-4)
    assert exact.mean() > 0.9
    assert np.array_equal(np.round(image[exact]).astype(np.uint8), labels[exact])
    assert labels.max() >= 8  # deep regions are in view


def test_same_seed_same_sample_other_seed_other_sample(maps):
    a = g.training_samples(g.Head(5, maps=maps), np.random.default_rng(1), 2)
    b = g.training_samples(g.Head(5, maps=maps), np.random.default_rng(1), 2)
    c = g.training_samples(g.Head(6, maps=maps), np.random.default_rng(1), 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert g.draw_head(5, maps) == g.draw_head(5, maps)


def test_training_sample_is_the_serving_contract(maps):
    """x is the contract network input of a 2.5D uint8 stack; y are classes at its size."""
    x, y = g.training_samples(g.Head(11, maps=maps), np.random.default_rng(3), 3)
    h, w = contract.NETWORK_SIZE
    assert x.shape == (3, contract.NETWORK_CHANNELS, h, w) and x.dtype == torch.float32
    assert y.shape == (3, h, w) and y.dtype == torch.int64
    assert int(y.max()) < contract.NUM_CLASSES
    rng = np.random.default_rng(0)
    for shape in ((4, 3, 128, 128), (2, 3, 300, 256), (1, 3, 512, 512)):
        stacks = rng.integers(0, 256, shape, dtype=np.uint8)
        torch_x = g.network_tensor(torch.from_numpy(stacks)).numpy()
        np.testing.assert_allclose(torch_x, network_input(stacks), atol=2e-5)


def test_window_is_the_clients(maps):
    rng = np.random.default_rng(4)
    data = rng.gamma(2.0, 100.0, (3, 64, 64)).astype(np.float32)
    data[:, :10] = 0
    lo, hi = g.window_limits(torch.from_numpy(data))
    np.testing.assert_allclose((lo, hi), window_bounds(data), rtol=1e-5)
    ours = g.apply_window(torch.from_numpy(data), lo, hi).numpy()
    theirs = window_to_uint8(data, (lo, hi))
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    assert (ours != theirs).mean() < 1e-3


def test_flip_mirrors_image_and_labels(maps):
    grid = g.Grid(matrix=64, fov_mm=230.0, thickness_mm=3.0, z_mm=(10.0,))
    head = g.Head(21, maps=maps)
    head.params = dataclasses.replace(head.params, flip=False, noise=0.0)
    plain = head.render(grid)
    head.params = dataclasses.replace(head.params, flip=True)
    flipped = head.render(grid)
    assert torch.equal(flipped.classes, plain.classes.flip(-1))
    torch.testing.assert_close(flipped.image, plain.image.flip(-1))


def test_lesions_lie_in_their_territory_and_in_brain(maps):
    head = g.Head(3, maps=maps)
    value = maps.territory_names.index("MCAFL") + 1
    idx = np.argwhere(maps.territories == value)[len(np.argwhere(maps.territories == value)) // 2]
    centre = tuple(float(c) for c in maps.affine[:3, :3] @ idx + maps.affine[:3, 3])
    head.params = dataclasses.replace(head.params, lesions=((value, centre, (15.0, 12.0, 10.0)),))
    mask = head.lesion_mask().numpy()
    assert mask.sum() > 200
    assert (maps.territories[mask] == value).all()
    assert np.isin(maps.tissue[mask], BRAIN_TISSUES).all()


def test_head_labels_cover_brain_and_head(maps):
    counts = np.bincount(maps.tissue.ravel(), minlength=len(T))
    assert (counts[: T["lesion"]] > 0).all() and counts[T["lesion"]] == 0
    # the 2 mm atlas reaches past the 1 mm brain edge in a few voxels only
    in_regions = maps.tissue[maps.classes > 0]
    assert np.isin(in_regions, HEAD_TISSUES).mean() < 0.005
    assert (in_regions != T["air"]).all()
    assert np.isin(maps.tissue[maps.classes > 0], BRAIN_TISSUES).mean() > 0.9


@pytest.mark.parametrize("order", ["RAS", "LPS", "PIR"])
def test_render_volume_truth_lands_on_the_clients_display(order):
    """A rendered volume in any voxel order: the client's display of its exact labels is the
    same array whatever the order, and it holds both hemispheres."""
    ph = g.render_volume(100_003, n_slices=4, oblique_deg=10.0)
    ph = reorder(ph, order)
    volume = load_volume(ph.image)
    display = to_display(ph.classes, geometry_of(volume.affine, volume.shape))
    ras = g.render_volume(100_003, n_slices=4, oblique_deg=10.0)
    ras_volume = load_volume(ras.image)
    expected = to_display(ras.classes, geometry_of(ras_volume.affine, ras_volume.shape))
    assert np.array_equal(display, expected)
    assert prepare(volume).slices.shape == display.shape
    assert set(np.unique(ph.hemispheres)) >= {1, 2}
    assert context_stacks(prepare(volume).slices).shape[1] == contract.NETWORK_CHANNELS


def test_campaign_sample_options_crop_and_centre_labels(maps):
    """A crop is a window of the whole sample drawn from the same stream; the centre-only
    label lookup gives the same labels as the full one."""
    head = g.Head(12, maps=maps)
    full = g.training_samples(head, np.random.default_rng(2), 2,
                              g.SampleOptions(centre_labels_only=False))
    fast = g.training_samples(head, np.random.default_rng(2), 2, g.SampleOptions())
    assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1])
    x, y = g.training_samples(head, np.random.default_rng(2), 2, g.SampleOptions(crop=96))
    assert x.shape[-2:] == (96, 96) and y.shape[-2:] == (96, 96)
    rows, _ = g.crop_window(np.random.default_rng(0), 96)
    assert rows.stop - rows.start == 96 and 0 <= rows.start <= contract.NETWORK_SIZE[0] - 96
    assert g.crop_window(np.random.default_rng(0), None) == (slice(None), slice(None))


def test_deep_fraction_draws_levels_from_the_ganglionic_band():
    rng = np.random.default_rng(3)
    levels = np.array([g.draw_level(rng, 1.0) for _ in range(200)])
    assert levels.min() >= g.DEEP_LEVEL_MM[0] and levels.max() <= g.DEEP_LEVEL_MM[1]
    wide = np.array([g.draw_level(np.random.default_rng(k), 0.0) for k in range(200)])
    assert wide.min() < g.DEEP_LEVEL_MM[0] and wide.max() > g.DEEP_LEVEL_MM[1]
    # off means the same random stream as before the option existed
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    assert g.draw_level(a, 0.0) == float(b.uniform(*g.LEVEL_RANGE_MM))
