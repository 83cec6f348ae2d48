"""Importer for the seed's labelling format: coloured markup images, one per display slice,
where each ASPECTS region is painted in its own colour over the grey slice.

The palette is the contract's region colours (``contract.REGIONS[*].colour_rgb``, the same
colours the overlay uses): one place.  Grey pixels (R ≈ G ≈ B) are background; a pixel
within ``tolerance`` (RGB Euclidean distance) of a palette colour takes that class; other
colours are refused when they are more than a small fraction of the painted pixels (a
markup drawn with a different palette), else taken as background (anti-aliased edges).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np

from aspects_client import contract
from aspects_client.geometry import geometry_of
from aspects_client.labelmap import label_map_image
from aspects_client.volume_io import Limits, load_volume

PALETTE: dict[int, tuple[int, int, int]] = {r.index: r.colour_rgb for r in contract.REGIONS}
GREY_SPREAD = 12  # max(R, G, B) - min(R, G, B) at or below this: a grey (unlabelled) pixel
MAX_UNKNOWN_FRACTION = 0.02  # of painted pixels


class MarkupError(ValueError):
    """A markup image that cannot be read or does not use the contract palette."""


def encode_markup(labels: np.ndarray, grey: np.ndarray | None = None) -> np.ndarray:
    """Paint class labels uint8 [H, W] in the palette over ``grey`` uint8 [H, W] (or black)
    → RGB uint8 [H, W, 3]."""
    labels = np.asarray(labels)
    base = np.zeros(labels.shape, np.uint8) if grey is None else np.asarray(grey, np.uint8)
    rgb = np.repeat(base[..., None], 3, axis=2)
    lut = np.zeros((256, 3), np.uint8)
    for index, colour in PALETTE.items():
        lut[index] = colour
    painted = labels > 0
    rgb[painted] = lut[labels[painted]]
    return rgb


def decode_markup(rgb: np.ndarray, tolerance: float = 40.0, name: str = "markup") -> np.ndarray:
    """RGB uint8 [H, W, 3] markup → class labels uint8 [H, W] (see the module docstring)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise MarkupError(
            f"{name}: expected an RGB uint8 image [H, W, 3], got {rgb.shape} {rgb.dtype}"
        )
    pixels = rgb.reshape(-1, 3).astype(np.int32)
    spread = pixels.max(axis=1) - pixels.min(axis=1)
    painted = spread > GREY_SPREAD
    colours = np.array(list(PALETTE.values()), np.int32)  # [10, 3]
    indices = np.array(list(PALETTE.keys()), np.uint8)
    labels = np.zeros(len(pixels), np.uint8)
    if painted.any():
        d2 = ((pixels[painted, None, :] - colours[None]) ** 2).sum(axis=2)  # [P, 10]
        nearest = d2.argmin(axis=1)
        close = d2[np.arange(len(nearest)), nearest] <= tolerance**2
        unknown = int((~close).sum())
        if unknown > MAX_UNKNOWN_FRACTION * len(nearest):
            odd = pixels[painted][~close]
            values, counts = np.unique(odd, axis=0, return_counts=True)
            top = ", ".join(
                f"RGB{tuple(int(c) for c in values[i])}×{counts[i]}"
                for i in np.argsort(-counts)[:3]
            )
            raise MarkupError(
                f"{name}: {unknown} painted pixels ({unknown / len(nearest):.1%}) match no "
                f"palette colour within {tolerance:g} (e.g. {top}); paint regions in the "
                "contract colours (aspects_train.markup.PALETTE) or raise --tolerance"
            )
        labels[np.flatnonzero(painted)[close]] = indices[nearest[close]]
    return labels.reshape(rgb.shape[:2])


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Class labels int [..., H, W] → bool one-hot [..., 11, H, W] (contract class order)."""
    labels = np.asarray(labels)
    classes = np.arange(contract.NUM_CLASSES).reshape(-1, 1, 1)
    return labels[..., None, :, :] == classes


def read_markup(path: str | Path) -> np.ndarray:
    """A markup image file (PNG, …; alpha ignored) → RGB uint8 [H, W, 3]."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MarkupError(f"{path}: not a readable image (missing, corrupt or not PNG/JPEG)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# Markup needs only the volume's geometry: no minimum slice size (a hand-drawn test grid
# may be tiny); every other check (orientation, voxel sizes, bounds) stays.
MARKUP_LIMITS = Limits(min_inplane_voxels=1, min_inplane_fov_mm=0.0)


def import_markup_volume(
    volume_path: str | Path, markup_paths: Sequence[str | Path], tolerance: float = 40.0
) -> nib.Nifti1Image:
    """Markup images of a volume's display slices (contract orientation: row 0 anterior,
    column 0 patient left; slice 0 inferior) → uint8 label map in the volume's own grid."""
    volume = load_volume(volume_path, limits=MARKUP_LIMITS)
    geometry = geometry_of(volume.affine, volume.shape)
    n, h, w = geometry.display_shape
    if len(markup_paths) != n:
        raise MarkupError(
            f"{volume_path} has {n} axial slices but {len(markup_paths)} markup images were "
            "given; give one image per slice, inferior to superior"
        )
    labels = np.zeros((n, h, w), np.uint8)
    for k, path in enumerate(markup_paths):
        rgb = read_markup(path)
        if rgb.shape[:2] != (h, w):
            raise MarkupError(
                f"{path}: image is {rgb.shape[1]}×{rgb.shape[0]} but slice {k} of "
                f"{volume_path} displays as {w}×{h}; export the markup at the slice's size"
            )
        labels[k] = decode_markup(rgb, tolerance, name=str(path))
    return label_map_image(labels, geometry, volume.header)
