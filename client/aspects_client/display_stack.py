"""Volume -> the UINT8 display stack [N, H, W] sent to Triton, and its geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Geometry, geometry_of, to_display
from .intensity import window_bounds, window_to_uint8
from .volume_io import Volume


@dataclass(frozen=True)
class PreparedVolume:
    """slices: uint8 [N, H, W] C-contiguous display stack; window: (lo, hi) intensities."""

    slices: np.ndarray
    geometry: Geometry
    window: tuple[float, float]


def prepare(volume: Volume) -> PreparedVolume:
    """Window the whole volume to uint8, reorient to canonical and slice to [N, H, W].

    The window is applied straight to the display view of the data (a view: permutations
    and flips only), so the one volume-sized allocation is the uint8 stack itself
    (1 byte per voxel; see ``volume_io`` for the bound of load + prepare)."""
    geometry = geometry_of(volume.affine, volume.shape)
    bounds = window_bounds(volume.data)
    slices = window_to_uint8(to_display(volume.data, geometry), bounds)
    return PreparedVolume(slices=np.ascontiguousarray(slices), geometry=geometry, window=bounds)
