"""Seeded recipes of the b1000 phantoms (``phantom.make_phantom``) and the disjoint seed
ranges that training, validation and the held-out benchmark draw from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from aspects_client import contract

from .phantom import Phantom, make_phantom

RECIPE_VERSION = "v1"
# Disjoint phantom seed ranges: training, validation (checkpoint choice), held-out benchmark.
TRAIN_SEED_START = 1000
VAL_SEED_START = 9000
BENCHMARK_SEED_START = 100_000


@dataclass(frozen=True)
class PhantomRecipe:
    """Arguments of ``make_phantom`` drawn for one training volume (all in mm / degrees)."""

    seed: int
    in_plane: tuple[int, int]
    n_slices: int
    fov_mm: float
    slice_mm: float
    centre_z_mm: float
    max_rotation_deg: float
    max_translation_mm: float
    grid_rotation_deg: tuple[float, float, float]
    noise: float
    lesions: tuple[tuple[str, str], ...] = field(default=())

    def key(self) -> str:
        """Stable cache key of the recipe."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(f"{RECIPE_VERSION}:{text}".encode()).hexdigest()[:16]

    def render(self) -> Phantom:
        """The phantom (stored RAS)."""
        return make_phantom(
            self.seed,
            self.in_plane,
            self.n_slices,
            fov_mm=self.fov_mm,
            slice_mm=self.slice_mm,
            centre_z_mm=self.centre_z_mm,
            max_rotation_deg=self.max_rotation_deg,
            max_translation_mm=self.max_translation_mm,
            grid_rotation_deg=self.grid_rotation_deg,
            noise=self.noise,
            lesions=self.lesions,
        )


def draw_recipe(seed: int) -> PhantomRecipe:
    """Seeded random phantom arguments: pose, FOV, slice thickness and level, tilt, noise,
    0–3 lesions, in-plane 512² (70 %) or 256²/384² (resized to 512 by the contract)."""
    rng = np.random.default_rng([seed, 7])
    size = int(rng.choice([512, 512, 512, 512, 512, 512, 512, 384, 256, 256]))
    slice_mm = float(rng.uniform(4.0, 6.0))
    n_lesions = int(rng.integers(0, 4))
    lesions = tuple(
        (str(rng.choice(contract.REGION_KEYS)), str(rng.choice(contract.HEMISPHERES)))
        for _ in range(n_lesions)
    )
    return PhantomRecipe(
        seed=int(seed),
        in_plane=(size, size),
        n_slices=int(np.ceil(105.0 / slice_mm)),
        fov_mm=float(rng.uniform(200.0, 250.0)),
        slice_mm=slice_mm,
        centre_z_mm=float(rng.uniform(8.0, 22.0)),
        max_rotation_deg=12.0,
        max_translation_mm=10.0,
        grid_rotation_deg=tuple(float(a) for a in rng.uniform(-6.0, 6.0, 3)),  # type: ignore[arg-type]
        noise=float(rng.uniform(0.02, 0.06)),
        lesions=tuple(sorted(set(lesions))),
    )


def seed_range(start: int, count: int) -> Sequence[int]:
    """``range(start, start + count)`` (training, validation and benchmark use disjoint ones)."""
    return range(int(start), int(start) + int(count))
