"""The NumPy reference of preprocess/postprocess (aspects_client.server_reference)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aspects_client import contract
from aspects_client import server_reference as pp

H, W = contract.NETWORK_SIZE
C = contract.NUM_CLASSES


def _onehot_logits(labels: np.ndarray, high: float = 10.0) -> np.ndarray:
    """Logits [N, 11, H, W] (network size) with ``high`` for each pixel's class, 0 elsewhere."""
    logits = np.zeros((labels.shape[0], C, H, W), np.float32)
    for c in range(C):
        logits[:, c][labels == c] = high
    return logits


# --- 2.5D stacks ---------------------------------------------------------------------------

# (N, expected slice index of channel c of stack k), CONTEXT_OFFSETS = (-1, 0, 1): the
# missing neighbour at the first / last slice is the slice itself (edge replicate).
CONTEXT_TABLE = [
    (1, [[0, 0, 0]]),
    (2, [[0, 0, 1], [0, 1, 1]]),
    (5, [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]),
]


def test_context_offsets_are_below_slice_above() -> None:
    assert contract.CONTEXT_OFFSETS == (-1, 0, 1)
    assert contract.NETWORK_CHANNELS == len(contract.CONTEXT_OFFSETS) == 3


@pytest.mark.parametrize(("n", "expected"), CONTEXT_TABLE, ids=[f"N={n}" for n, _ in CONTEXT_TABLE])
def test_context_indices_table(n: int, expected: list[list[int]]) -> None:
    idx = pp.context_indices(n)
    assert idx.shape == (n, contract.NETWORK_CHANNELS)
    assert idx.tolist() == expected


@pytest.mark.parametrize(("n", "expected"), CONTEXT_TABLE, ids=[f"N={n}" for n, _ in CONTEXT_TABLE])
def test_context_stacks_edge_replicate(n: int, expected: list[list[int]]) -> None:
    """Every slice is filled with its own index (+ a per-slice pattern): each channel of each
    stack must be exactly the slice the table names."""
    rng = np.random.default_rng(n)
    slices = rng.integers(0, 256, (n, 5, 7), dtype=np.uint8)
    slices[:, 0, 0] = np.arange(n)  # a tag: which slice this is
    stacks = pp.context_stacks(slices)
    assert stacks.shape == (n, contract.NETWORK_CHANNELS, 5, 7) and stacks.dtype == np.uint8
    assert stacks.flags.c_contiguous
    for k in range(n):
        for c, src in enumerate(expected[k]):
            np.testing.assert_array_equal(stacks[k, c], slices[src], err_msg=f"stack {k} ch {c}")
        assert stacks[k, :, 0, 0].tolist() == expected[k]


def test_context_stacks_rejects_bad_input() -> None:
    with pytest.raises(TypeError):
        pp.context_stacks(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError):
        pp.context_stacks(np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        pp.context_stacks(np.zeros((2, 3, 4, 4), np.uint8))  # already stacks
    with pytest.raises(ValueError):
        pp.context_indices(0)


# --- network input ---------------------------------------------------------------------------


def test_network_input_constant_stack_is_exact_per_channel_normalisation() -> None:
    values = (40, 200, 120)  # a different constant in each channel
    stacks = np.stack([np.full((2, 100, 140), v, np.uint8) for v in values], axis=1)
    x = pp.network_input(stacks)
    assert x.shape == (2, contract.NETWORK_CHANNELS, H, W)
    assert x.dtype == np.float32
    for ch, v in enumerate(values):
        expected = (v / 255 - contract.IMAGENET_MEAN[ch]) / contract.IMAGENET_STD[ch]
        np.testing.assert_allclose(x[:, ch], expected, rtol=0, atol=1e-6)


def test_network_input_at_network_size_is_no_resize() -> None:
    rng = np.random.default_rng(0)
    stacks = rng.integers(0, 256, (1, contract.NETWORK_CHANNELS, H, W), dtype=np.uint8)
    x = pp.network_input(stacks)
    for ch in range(contract.NETWORK_CHANNELS):
        std, mean = np.float32(contract.IMAGENET_STD[ch]), np.float32(contract.IMAGENET_MEAN[ch])
        np.testing.assert_allclose((x[0, ch] * std + mean) * 255, stacks[0, ch], atol=1e-3)


def test_image_resize_is_half_pixel_bilinear_per_channel() -> None:
    # A 0|255 step at column W/4 of W/2, upsampled 2x to W: the output columns around the edge
    # sit at source x = W/4 - 1.25, -0.75, -0.25, +0.25 -> 0, 63.75, 191.25, 255.
    src = np.zeros((1, contract.NETWORK_CHANNELS, H // 2, W // 2), np.uint8)
    src[:, 1, :, W // 4 :] = 255  # only the centre channel has the step
    r = pp.resize_image(src)[0]
    assert r.shape == (contract.NETWORK_CHANNELS, H, W)
    e = W // 2
    np.testing.assert_allclose(
        r[1, :, e - 2 : e + 2], np.broadcast_to([0, 63.75, 191.25, 255], (H, 4))
    )
    assert (r[0] == 0).all() and (r[2] == 0).all()


def test_network_input_rejects_wrong_dtype_and_rank() -> None:
    with pytest.raises(TypeError):
        pp.network_input(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError):
        pp.network_input(np.zeros((1, 8, 8), np.uint8))  # slices, not stacks
    with pytest.raises(ValueError):
        pp.network_input(np.zeros((1, 1, 8, 8), np.uint8))  # one channel
    with pytest.raises(ValueError):
        pp.network_input(np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize("out", [1, 6, 7, 200, 256, 320, 480, 511, 512, 600, 1024])
def test_nearest_indices_follow_the_contract_formula(out: int) -> None:
    idx = pp.nearest_indices(512, out)
    expected = [int(np.floor((d + 0.5) * 512 / out + 1e-12)) for d in range(out)]
    assert idx.tolist() == expected
    assert idx.min() >= 0 and idx.max() <= 511


def test_label_resize_differs_from_cv2_only_at_exact_ties() -> None:
    """cv2.INTER_NEAREST_EXACT rounds down at exact ties (fixed point); the formula does not."""
    src = np.arange(512, dtype=np.uint16).reshape(512, 1).repeat(2, axis=1)
    ours = pp.nearest_indices(512, 320)
    cv = cv2.resize(src, (2, 320), interpolation=cv2.INTER_NEAREST_EXACT)[:, 0].astype(int)
    ties = np.nonzero(ours != cv)[0]
    assert len(ties) > 0  # documents the cv2 deviation
    for d in ties:
        assert ((2 * d + 1) * 512) % (2 * 320) == 0  # exact tie
        assert cv[d] == ours[d] - 1


@pytest.mark.parametrize("native", [(256, 320), (512, 512), (97, 131)])
def test_postprocess_shapes_dtypes_and_resize(native: tuple[int, int]) -> None:
    labels = np.zeros((2, H, W), np.uint8)
    labels[0, H // 3 :, W // 5 : W // 2] = 3
    labels[1, : H // 2, :] = 10  # the upper half of the network rows
    out, conf = pp.postprocess(_onehot_logits(labels), native)
    assert out.shape == (2, *native) and out.dtype == np.uint8
    assert conf.shape == (2, C) and conf.dtype == np.float32
    np.testing.assert_array_equal(out, pp.resize_labels(labels, native))
    upper = pp.nearest_indices(H, native[0]) < H // 2
    assert upper.any() and not upper.all()
    np.testing.assert_array_equal(out[1, upper], 10)
    np.testing.assert_array_equal(out[1, ~upper], 0)


def test_min_area_is_the_512_rule_at_network_size() -> None:
    """MIN_AREA_PIXELS is the same physical area as the old 64 px at 512 x 512."""
    assert contract.MIN_AREA_PIXELS * (512 * 512) == 64 * H * W


AREA = contract.MIN_AREA_PIXELS


@pytest.mark.parametrize(("area", "kept"), [(AREA - 1, False), (AREA, True), (AREA + 1, True)])
def test_min_area_boundary_counts_only_the_class(area: int, kept: bool) -> None:
    labels = np.zeros((2, H, W), np.uint8)
    labels[0].flat[np.arange(area) * 37] = 4  # scattered pixels of class 4
    labels[1].flat[:AREA] = 6  # exactly the min area in the other slice: per-slice counting
    out, conf = pp.postprocess_network(_onehot_logits(labels))
    assert bool((out[0] == 4).sum() == area) is kept
    assert (out[0] == 4).sum() in (0, area)
    assert (out[1] == 6).sum() == AREA
    assert bool(conf[0, 4] > 0) is kept


def test_min_area_parameter() -> None:
    labels = np.zeros((1, H, W), np.uint8)
    labels[0, :10, :10] = 2  # 100 px
    assert (pp.postprocess_network(_onehot_logits(labels), min_area=101)[0] == 2).sum() == 0
    assert (pp.postprocess_network(_onehot_logits(labels), min_area=100)[0] == 2).sum() == 100


def _two_class_logits(p: float) -> np.ndarray:
    """Every pixel: class 5 with probability ``p``, background with ``1 - p`` (others ~0)."""
    logits = np.full((1, C, H, W), -50.0, np.float32)
    logits[:, 0] = 0.0
    logits[:, 5] = np.log(p / (1 - p))
    return logits


@pytest.mark.parametrize(("p", "labelled"), [(0.6, True), (0.5 + 1e-4, True), (0.45, False)])
def test_probability_threshold(p: float, labelled: bool) -> None:
    out, conf = pp.postprocess_network(_two_class_logits(p))
    assert bool((out == 5).all()) is labelled
    assert bool((out == 0).all()) is not labelled
    if labelled:
        assert conf[0, 5] == pytest.approx(p, abs=1e-5)
        assert conf[0, 0] == 0.0
    else:  # all background: CONFIDENCE[0] is the mean background probability
        assert conf[0, 5] == 0.0
        assert conf[0, 0] == pytest.approx(1 - p, abs=1e-5)


def test_threshold_parameter() -> None:
    out, _ = pp.postprocess_network(_two_class_logits(0.6), threshold_prob=0.7)
    assert (out == 0).all()


def test_confidence_is_mean_probability_of_the_final_pixels() -> None:
    logits = np.zeros((1, C, H, W), np.float32)
    logits[0, 0] = 5.0  # confident background everywhere ...
    logits[0, 0, :100, :100] = 0.0
    logits[0, 7, :100, :50] = 3.0  # ... two probability levels inside class 7
    logits[0, 7, :100, 50:100] = 6.0
    out, conf = pp.postprocess_network(logits)
    assert (out == 7).sum() == 100 * 100
    p = lambda z: np.exp(z) / (np.exp(z) + 10)  # noqa: E731 - class z vs 10 zeros
    assert conf[0, 7] == pytest.approx((p(3.0) + p(6.0)) / 2, abs=1e-6)
    assert conf[0, 0] == pytest.approx(p(5.0), abs=1e-6)
    assert (conf[0, [c for c in range(1, C) if c != 7]] == 0).all()


def test_argmax_ties_take_the_first_class() -> None:
    logits = np.zeros((1, C, H, W), np.float32)
    logits[0, 2] = 30.0
    logits[0, 3] = 30.0  # p = 0.5 each: passes the threshold, first index wins
    out, _ = pp.postprocess_network(logits)
    assert (out == 2).all()


def test_postprocess_rejects_wrong_logits_shape() -> None:
    with pytest.raises(ValueError):
        pp.postprocess(np.zeros((1, 3, H, W), np.float32), (H, W))
