"""Fixtures for the training tests: small phantoms written as NIfTI volume + label pairs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pytest

pytest.importorskip("lightning", reason="the [train] extra (lightning, optuna) is not installed")


@pytest.fixture(scope="session")
def tiny_phantom():
    """48×56×5 phantom (4.8 mm pixels): enough anatomy for a few labelled slices."""
    from aspects_synth import make_phantom

    return make_phantom(seed=21, in_plane=(48, 56), n_slices=5, slice_mm=8.0)


@pytest.fixture(scope="session")
def tiny_pairs(tmp_path_factory, tiny_phantom) -> list[tuple[str, str]]:
    """The tiny phantom as (volume, labels) .nii.gz files in two voxel orders (RAS, LPS)."""
    from aspects_synth import reorder

    d: Path = tmp_path_factory.mktemp("pairs")
    pairs = []
    for order in ("RAS", "LPS"):
        ph = reorder(tiny_phantom, order)
        vol, lab = d / f"vol_{order}.nii.gz", d / f"lab_{order}.nii.gz"
        nib.save(ph.image, vol)
        nib.save(ph.label_image(), lab)
        pairs.append((str(vol), str(lab)))
    return pairs
