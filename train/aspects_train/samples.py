"""Labelled slice stacks in the display orientation the network sees (architecture §3).

A :class:`SliceStack` holds a volume after the client's ``prepare`` (window → uint8, RAS+
reorientation, ``rot90`` display) and its class labels put through the very same
reorientation.  Sources: a NIfTI volume + label-map pair in any voxel order, or a seeded
synthetic phantom (``aspects_synth``), cached on disk as ``.npz``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from aspects_client import contract
from aspects_client.display_stack import prepare
from aspects_client.geometry import geometry_of, to_display
from aspects_client.volume_io import Volume, load_volume
from aspects_synth.recipes import PhantomRecipe, draw_recipe

CACHE_VERSION = "v1"


class LabelMismatchError(ValueError):
    """A label map that does not fit its volume (grid, affine or class values)."""


@dataclass(frozen=True)
class SliceStack:
    """slices: uint8 [N, H, W] windowed display slices; labels: uint8 [N, H, W] classes 0..10."""

    slices: np.ndarray
    labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.slices.shape != self.labels.shape or self.slices.ndim != 3:
            raise LabelMismatchError(
                f"{self.source}: slices {self.slices.shape} and labels {self.labels.shape} "
                "must both be [N, H, W]"
            )
        if self.slices.dtype != np.uint8 or self.labels.dtype != np.uint8:
            raise LabelMismatchError(f"{self.source}: slices and labels must be uint8")

    @property
    def labelled_slices(self) -> np.ndarray:
        """Indices of slices holding at least one region pixel: int [K]."""
        return np.flatnonzero(self.labels.reshape(len(self.labels), -1).max(axis=1) > 0)


def stack_from_volume(volume: Volume, labels: np.ndarray) -> SliceStack:
    """A client ``Volume`` and its class labels (same voxel order [X, Y, Z]) → SliceStack."""
    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise LabelMismatchError(
            f"{volume.source}: label map shape {labels.shape} != volume shape {volume.shape}; "
            "the label map must be in the volume's own grid"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        rounded = np.rint(labels)
        if not np.array_equal(rounded, labels):
            raise LabelMismatchError(f"{volume.source}: label map holds non-integer values")
        labels = rounded
    if labels.min() < 0 or labels.max() >= contract.NUM_CLASSES:
        raise LabelMismatchError(
            f"{volume.source}: label values must be contract classes 0..{contract.NUM_CLASSES - 1}"
            f" ({', '.join(contract.CLASS_KEYS)}), found {int(labels.min())}..{int(labels.max())}"
        )
    prepared = prepare(volume)
    display = to_display(labels.astype(np.uint8), geometry_of(volume.affine, volume.shape))
    return SliceStack(prepared.slices, np.ascontiguousarray(display), volume.source)


def stack_from_files(volume_path: str | Path, label_path: str | Path) -> SliceStack:
    """A NIfTI volume and its label map (same grid; any voxel order) → SliceStack."""
    volume = load_volume(volume_path)
    label_img = nib.load(str(label_path))
    if not np.allclose(label_img.affine, volume.affine, atol=1e-3):
        raise LabelMismatchError(
            f"{label_path}: affine differs from {volume_path}'s; resample the label map onto "
            "the volume's grid (nearest neighbour) first"
        )
    labels = np.asanyarray(label_img.dataobj)
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
    return stack_from_volume(volume, labels)


# --- synthetic phantoms ---------------------------------------------------------------------


def phantom_stack(recipe: PhantomRecipe) -> SliceStack:
    """Render a phantom and take it through the client's preparation → SliceStack."""
    phantom = recipe.render()
    volume = load_volume(phantom.image, name=f"phantom seed {recipe.seed}")
    return replace(stack_from_volume(volume, phantom.classes), source=f"phantom:{recipe.key()}")


def default_cache_dir() -> Path:
    """``$ASPECTS_CACHE_DIR/train-slices`` or ``~/.cache/aspects/train-slices``."""
    from aspects_synth.atlas import cache_dir

    return cache_dir() / "train-slices" / CACHE_VERSION


def cached_phantom_stack(recipe: PhantomRecipe, cache_dir: Path | None = None) -> SliceStack:
    """``phantom_stack`` through an on-disk ``.npz`` cache (written atomically)."""
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / f"{recipe.key()}.npz"
    if path.is_file():
        with np.load(path) as data:
            return SliceStack(data["slices"], data["labels"], f"phantom:{recipe.key()}")
    stack = phantom_stack(recipe)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, slices=stack.slices, labels=stack.labels)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return stack


def phantom_stacks(
    seeds: Iterable[int], cache_dir: Path | None = None, progress: bool = False
) -> list[SliceStack]:
    """Cached stacks of ``draw_recipe(seed)`` for each seed."""
    seeds = list(seeds)
    out = []
    for n, seed in enumerate(seeds, 1):
        out.append(cached_phantom_stack(draw_recipe(seed), cache_dir))
        if progress:
            print(f"\rphantoms {n}/{len(seeds)}", end="", flush=True)
    if progress and seeds:
        print()
    return out
