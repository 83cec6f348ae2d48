"""NumPy/OpenCV reference of the server-side steps (``preprocess`` and ``postprocess``).

This is the executable definition of what the ONNX graphs written by
``aspects_export.graphs`` compute; ``aspects_export.numeric_check`` and the tests compare the
two.  NumPy and OpenCV only (no torch), so the client and training code can import it.

Exact semantics (DESIGN §3, contract.py):

``network_input`` — UINT8 slice ``[H, W]`` → float32 → bilinear resize to 512×512 with
half-pixel centres, no antialias (``cv2.INTER_LINEAR`` on float32, contract
``IMAGE_RESIZE``) → ``/ 255`` → ``(x - mean) / std`` per channel (float32 arithmetic, same
value replicated to the 3 channels before normalisation).

``postprocess`` — per pixel of the 512×512 logits:

1. ``p = softmax(logits)`` over the 11 classes (float32, max-subtracted);
2. ``label = argmax_c logits`` (first index on ties) if ``max_c p >= threshold_prob`` else 0;
3. per slice and class ``c >= 1``: if fewer than ``min_area`` pixels carry label ``c`` (counted
   at 512×512 after step 2) they all become 0.  Background is never "dropped" (the seed
   counted background pixels too, so its check never fired; that bug is not copied);
4. ``CONFIDENCE[c]`` = mean of ``p_c`` over the pixels finally labelled ``c`` at 512×512, 0
   when there are none.  For ``c >= 1`` those pixels have ``c`` as argmax, so this is the
   mean max-probability of the class's pixels.  For ``c = 0`` it is the mean *background*
   probability over all pixels finally labelled background — including pixels demoted by the
   threshold or the min-area rule — so a low ``CONFIDENCE[0]`` flags a slice where much of the
   "background" is really uncertain foreground;
5. labels are resized to the native ``H × W`` with nearest neighbour, half-pixel centres
   (contract ``LABEL_RESIZE``): ``src = floor((dst + 0.5) * 512 / out)``, computed here in
   exact integer arithmetic.  Note: ``cv2.INTER_NEAREST_EXACT`` uses 16-bit fixed point and
   rounds *down* at exact ties (e.g. 512→320 differs on 28 of 320 rows), whereas ONNX Resize
   (nearest/half_pixel/round_prefer_ceil) and torch ``nearest-exact`` follow the formula; the
   formula is the definition, so it is not used.
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


def resize_image(slices: np.ndarray) -> np.ndarray:
    """Bilinear (half-pixel) resize: uint8 ``[N, H, W]`` → float32 ``[N, 512, 512]``, 0–255."""
    slices = _check_slices(slices)
    h, w = contract.NETWORK_SIZE
    out = np.empty((slices.shape[0], h, w), dtype=np.float32)
    for i, s in enumerate(slices):
        out[i] = cv2.resize(s.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def normalise(image: np.ndarray) -> np.ndarray:
    """Float32 0–255 ``[N, h, w]`` (any h, w) → ``[N, 3, h, w]``: ``/255``, ImageNet mean/std.

    The second half of :func:`network_input`; training applies it to augmented crops.
    """
    x = np.asarray(image, dtype=np.float32)[:, None] / _SCALE  # [N, 1, h, w], 0..1
    return np.ascontiguousarray((x - _MEAN) / _STD, dtype=np.float32)


def network_input(slices: np.ndarray) -> np.ndarray:
    """Contract network input: uint8 ``[N, H, W]`` → float32 ``[N, 3, 512, 512]``, normalised."""
    return normalise(resize_image(slices))


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Half-pixel nearest source indices ``floor((dst + 0.5) * in / out)``: int64 ``[out]``."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got in={in_size}, out={out_size}")
    dst = np.arange(out_size, dtype=np.int64)
    return ((2 * dst + 1) * in_size) // (2 * out_size)


def resize_labels(labels: np.ndarray, native_hw: tuple[int, int]) -> np.ndarray:
    """Nearest (half-pixel, contract LABEL_RESIZE) resize: labels ``[N, h, w]`` → ``[N, H, W]``."""
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


def postprocess_512(
    logits: np.ndarray,
    threshold_prob: float = contract.THRESHOLD_PROB,
    min_area: int = contract.MIN_AREA_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1–4 at network resolution: logits float32 ``[N, 11, 512, 512]`` →
    (labels uint8 ``[N, 512, 512]``, confidence float32 ``[N, 11]``)."""
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
    """Contract postprocess: logits float32 ``[N, 11, 512, 512]`` and the native ``(H, W)`` →
    (labels uint8 ``[N, H, W]``, confidence float32 ``[N, 11]``); see the module docstring."""
    labels, confidence = postprocess_512(logits, threshold_prob, min_area)
    return resize_labels(labels, native_hw), confidence
