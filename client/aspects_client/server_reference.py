"""NumPy/OpenCV reference of the server-side steps (``preprocess`` and ``postprocess``).

This is the executable definition of what the ONNX graphs written by
``aspects_export.graphs`` compute; ``aspects_export.numeric_check`` and the tests compare the
two.  NumPy and OpenCV only (no torch), so the client and training code can import it.

Exact semantics (architecture §3, contract.py):

``context_stacks`` — a volume's display slices ``[N, H, W]`` → 2.5D stacks ``[N, 3, H, W]``:
channel ``c`` of stack ``k`` is slice ``k + contract.CONTEXT_OFFSETS[c]`` (slice below, the
slice, slice above), clamped at the first and last slice (edge replicate).  Done by the client.

``network_input`` — UINT8 stacks ``[N, 3, H, W]`` → float32 → bilinear resize of every channel
to ``contract.NETWORK_SIZE`` with half-pixel centres, no antialias (``cv2.INTER_LINEAR`` on
float32) → ``/ 255`` → ``(x - mean[c]) / std[c]`` per channel (float32 arithmetic).

``postprocess`` — per pixel of the network-size logits:

1. ``p = softmax(logits)`` over the 11 classes (float32, max-subtracted);
2. ``label = argmax_c logits`` (first index on ties) if ``max_c p >= threshold_prob`` else 0;
3. per slice and class ``c >= 1``: if fewer than ``min_area`` pixels carry label ``c`` (counted
   at network size, ``contract.NETWORK_SIZE``, after step 2) they all become 0.  Background is
   never "dropped" (the seed counted background pixels too, so its check never fired; that bug
   is not copied);
4. ``CONFIDENCE[c]`` = mean of ``p_c`` over the pixels finally labelled ``c`` at network size, 0
   when there are none.  For ``c >= 1`` those pixels have ``c`` as argmax, so this is the
   mean max-probability of the class's pixels.  For ``c = 0`` it is the mean *background*
   probability over all pixels finally labelled background — including pixels demoted by the
   threshold or the min-area rule — so a low ``CONFIDENCE[0]`` flags a slice where much of the
   "background" is really uncertain foreground;
5. labels are resized to the native ``H × W`` with nearest neighbour, half-pixel centres
   ``src = floor((dst + 0.5) * in / out)``, computed here in exact integer arithmetic.  Note:
   ``cv2.INTER_NEAREST_EXACT`` uses 16-bit fixed point and rounds *down* at exact ties (e.g.
   512→320 differs on 28 of 320 rows), whereas ONNX Resize (nearest/half_pixel/
   round_prefer_ceil) and torch ``nearest-exact`` follow the formula; the formula is the
   definition, so it is not used.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import contract

_MEAN = np.asarray(contract.IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
_STD = np.asarray(contract.IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
_SCALE = np.float32(contract.PIXEL_SCALE)


def _check_slices(slices: np.ndarray) -> np.ndarray:
    slices = np.asarray(slices)
    if slices.dtype != np.uint8:
        raise TypeError(f"slices must be uint8, got {slices.dtype}")
    if slices.ndim != 3 or min(slices.shape) < 1:
        raise ValueError(f"slices must have shape [N, H, W] with N, H, W >= 1, got {slices.shape}")
    return slices


def _check_stacks(stacks: np.ndarray) -> np.ndarray:
    stacks = np.asarray(stacks)
    if stacks.dtype != np.uint8:
        raise TypeError(f"stacks must be uint8, got {stacks.dtype}")
    c = contract.NETWORK_CHANNELS
    if stacks.ndim != 4 or stacks.shape[1] != c or min(stacks.shape) < 1:
        raise ValueError(
            f"stacks must have shape [N, {c}, H, W] with N, H, W >= 1, got {stacks.shape}"
        )
    return stacks


def context_indices(n: int) -> np.ndarray:
    """Slice index of every channel of every 2.5D stack: int64 ``[n, 3]`` (edge replicate)."""
    if n < 1:
        raise ValueError(f"a volume needs at least one slice, got {n}")
    k = np.arange(n)[:, None] + np.asarray(contract.CONTEXT_OFFSETS)[None, :]
    return np.clip(k, 0, n - 1)


def context_stacks(slices: np.ndarray) -> np.ndarray:
    """A volume's display slices uint8 ``[N, H, W]`` → 2.5D stacks uint8 ``[N, 3, H, W]``."""
    slices = _check_slices(slices)
    return np.ascontiguousarray(slices[context_indices(len(slices))])


def resize_image(stacks: np.ndarray) -> np.ndarray:
    """Bilinear (half-pixel) resize of every channel: uint8 ``[N, 3, H, W]`` → float32
    ``[N, 3, h, w]`` (``contract.NETWORK_SIZE``), 0–255."""
    stacks = _check_stacks(stacks)
    h, w = contract.NETWORK_SIZE
    n, c = stacks.shape[:2]
    out = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        for j in range(c):
            out[i, j] = cv2.resize(
                stacks[i, j].astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR
            )
    return out


def normalise(image: np.ndarray) -> np.ndarray:
    """Float32 0–255 ``[N, 3, h, w]`` (any h, w) → ``[N, 3, h, w]``: ``/255``, then ImageNet
    mean/std of each channel.  The second half of :func:`network_input`."""
    x = np.asarray(image, dtype=np.float32) / _SCALE
    return np.ascontiguousarray((x - _MEAN) / _STD, dtype=np.float32)


def network_input(stacks: np.ndarray) -> np.ndarray:
    """Contract network input: uint8 stacks ``[N, 3, H, W]`` → float32 ``[N, 3, h, w]``."""
    return normalise(resize_image(stacks))


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Half-pixel nearest source indices ``floor((dst + 0.5) * in / out)``: int64 ``[out]``."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got in={in_size}, out={out_size}")
    dst = np.arange(out_size, dtype=np.int64)
    return ((2 * dst + 1) * in_size) // (2 * out_size)


def resize_labels(labels: np.ndarray, native_hw: tuple[int, int]) -> np.ndarray:
    """Nearest (half-pixel) resize: labels ``[N, h, w]`` → ``[N, H, W]``."""
    labels = np.asarray(labels)
    H, W = (int(native_hw[0]), int(native_hw[1]))
    rows = nearest_indices(labels.shape[1], H)
    cols = nearest_indices(labels.shape[2], W)
    return np.ascontiguousarray(labels[:, rows][:, :, cols])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Float32 softmax over axis 1 of ``[N, C, ...]`` (max-subtracted, as ONNX Softmax)."""
    logits = np.asarray(logits, dtype=np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def postprocess_network(
    logits: np.ndarray,
    threshold_prob: float = contract.THRESHOLD_PROB,
    min_area: int = contract.MIN_AREA_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1–4 at network resolution: logits float32 ``[N, 11, h, w]`` →
    (labels uint8 ``[N, h, w]``, confidence float32 ``[N, 11]``)."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 4 or logits.shape[1] != contract.NUM_CLASSES:
        raise ValueError(f"logits must be [N, {contract.NUM_CLASSES}, H, W], got {logits.shape}")
    n, c = logits.shape[:2]
    probs = softmax(logits)
    arg = logits.argmax(axis=1)
    keep = probs.max(axis=1) >= np.float32(threshold_prob)
    labels = np.where(keep, arg, 0)
    classes = np.arange(c).reshape(1, c, 1, 1)
    onehot = labels[:, None] == classes  # [N, C, h, w]
    counts = onehot.sum(axis=(2, 3))  # [N, C]
    drop = counts < int(min_area)
    drop[:, contract.BACKGROUND_INDEX] = False
    labels = np.where(
        np.take_along_axis(drop, labels.reshape(n, -1), axis=1).reshape(labels.shape), 0, labels
    )
    onehot = labels[:, None] == classes
    counts = onehot.sum(axis=(2, 3))
    sums = (probs * onehot).sum(axis=(2, 3), dtype=np.float64)
    confidence = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)
    return labels.astype(np.uint8), confidence


def postprocess(
    logits: np.ndarray,
    native_hw: tuple[int, int],
    threshold_prob: float = contract.THRESHOLD_PROB,
    min_area: int = contract.MIN_AREA_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Contract postprocess: logits float32 ``[N, 11, h, w]`` and the native ``(H, W)`` →
    (labels uint8 ``[N, H, W]``, confidence float32 ``[N, 11]``); see the module docstring."""
    labels, confidence = postprocess_network(logits, threshold_prob, min_area)
    return resize_labels(labels, native_hw), confidence
