"""Augmentations suited to DWI slices, as small pure functions on network-size arrays.

Geometric ones (rotation, scaling, translation, left/right flip) are one affine warp that
also takes the crop: bilinear for the image, nearest for the labels, so labels stay exact
classes.  Classes are hemisphere-agnostic (``m1`` is ``m1`` on either side), so a mirrored
slice keeps every label value.  Intensity ones (gamma, contrast, bias field, noise) act on
the 0–255 float image before the contract normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentations (``identity()`` turns them all off)."""

    rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.85, 1.15)
    flip_prob: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 10.0  # ± grey levels
    bias_strength: float = 0.15  # ± relative, smooth over the slice
    noise_sigma: tuple[float, float] = (0.0, 6.0)  # grey levels

    @staticmethod
    def identity() -> AugmentConfig:
        return AugmentConfig(0.0, (1.0, 1.0), 0.0, (1.0, 1.0), (1.0, 1.0), 0.0, 0.0, (0.0, 0.0))


def crop_transform(
    centre_yx: tuple[float, float],
    crop: int,
    rotation_deg: float = 0.0,
    scale: float = 1.0,
    flip: bool = False,
) -> np.ndarray:
    """2×3 matrix (OpenCV ``warpAffine`` convention, dst → src inverted by OpenCV) mapping a
    source pixel (x, y) to the crop pixel so that ``centre_yx`` lands at the crop centre,
    rotated by ``rotation_deg``, scaled by ``scale`` and, with ``flip``, mirrored left/right."""
    cy, cx = centre_yx
    half = (crop - 1) / 2.0
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rotation_deg), float(scale))
    m[:, 2] += (half - cx, half - cy)
    if flip:  # mirror the crop's columns: x' = (crop - 1) - x
        m = np.array([[-1.0, 0.0, crop - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


def warp_pair(
    image: np.ndarray, labels: np.ndarray, matrix: np.ndarray, crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """image float32 [C, H, W] and labels uint8 [H, W] → crops [C, crop, crop] and
    [crop, crop] under ``matrix`` (outside the slice: 0 = background / black)."""
    size = (crop, crop)
    img = np.stack([
        cv2.warpAffine(
            ch, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        for ch in image
    ])
    lab = cv2.warpAffine(
        labels, matrix, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return img, lab


def bias_field(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative field float32 [H, W], 1 ± ``strength`` (random quadratic)."""
    if strength <= 0:
        return np.ones(shape, np.float32)
    y, x = np.meshgrid(
        np.linspace(-1, 1, shape[0], dtype=np.float32),
        np.linspace(-1, 1, shape[1], dtype=np.float32),
        indexing="ij",
    )
    c = rng.uniform(-1, 1, 5).astype(np.float32)
    field = c[0] * x + c[1] * y + c[2] * x * x + c[3] * y * y + c[4] * x * y
    field /= max(float(np.abs(field).max()), 1e-6)
    return (1.0 + strength * field).astype(np.float32)


def jitter_intensity(
    image: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> np.ndarray:
    """Gamma, contrast/brightness, bias field and Gaussian noise on a 0–255 float32 image
    [C, H, W] (the same draw for every channel); clipped back to 0–255."""
    x = np.clip(image, 0, 255) / 255.0
    x = np.power(x, rng.uniform(*config.gamma), dtype=np.float32) * 255.0
    x = x * rng.uniform(*config.contrast) + rng.uniform(-config.brightness, config.brightness)
    x = x * bias_field(rng, image.shape[-2:], rng.uniform(0, config.bias_strength))
    sigma = rng.uniform(*config.noise_sigma)
    if sigma > 0:
        x = x + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.float32)


def random_crop(
    image: np.ndarray,
    labels: np.ndarray,
    crop: int,
    rng: np.random.Generator,
    config: AugmentConfig,
    foreground_prob: float = 0.85,
) -> tuple[np.ndarray, np.ndarray]:
    """An augmented ``crop``×``crop`` sample of a float32 image [C, h, w] and uint8 labels
    [h, w] at network size.

    The centre is a random labelled pixel (probability ``foreground_prob``, jittered by a
    quarter crop) or a uniform position; then rotation, scale, flip and intensity jitter.
    """
    h, w = image.shape[-2:]
    fg = np.flatnonzero(labels) if rng.random() < foreground_prob else np.empty(0, np.intp)
    if fg.size:
        cy, cx = divmod(int(fg[rng.integers(fg.size)]), w)
        cy += rng.uniform(-crop / 4, crop / 4)
        cx += rng.uniform(-crop / 4, crop / 4)
    else:
        cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
    matrix = crop_transform(
        (cy, cx),
        crop,
        rotation_deg=rng.uniform(-config.rotation_deg, config.rotation_deg),
        scale=rng.uniform(*config.scale),
        flip=bool(rng.random() < config.flip_prob),
    )
    img, lab = warp_pair(image, labels, matrix, crop)
    if config != AugmentConfig.identity():
        img = jitter_intensity(img, rng, config)
    return img, lab
