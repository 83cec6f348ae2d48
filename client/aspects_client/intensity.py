"""The volume-wise intensity window (contract.WINDOW_PERCENTILES) to UINT8."""

from __future__ import annotations

import numpy as np

from . import contract


def window_bounds(data: np.ndarray) -> tuple[float, float]:
    """(lo, hi) = percentiles of the non-zero voxels of ``data`` (any shape, real dtype).

    Returns (0, 0) for a volume without non-zero voxels.
    """
    nonzero = data[data != 0]  # 1-D copy of the non-zero voxels
    if nonzero.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(nonzero, contract.WINDOW_PERCENTILES, overwrite_input=True)
    return float(lo), float(hi)


def window_to_uint8(data: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Map ``data`` (any shape) linearly from [lo, hi] to 0..255, clipped and rounded.

    Output: uint8, same shape and memory order as ``data``.
    """
    lo, hi = window_bounds(data) if bounds is None else bounds
    if hi <= lo:  # constant non-zero intensities: they become 255, the rest 0
        return ((data >= hi) & (data != 0)).astype(np.uint8) * np.uint8(255)
    scale = np.float32(255.0 / (hi - lo))
    out = np.subtract(data, np.float32(lo), dtype=np.float32)
    out *= scale
    np.clip(out, 0.0, 255.0, out=out)
    np.rint(out, out=out)
    return out.astype(np.uint8)
