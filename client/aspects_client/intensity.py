"""The volume-wise intensity window (contract.WINDOW_PERCENTILES) to UINT8."""

from __future__ import annotations

import numpy as np

from . import contract

_SAMPLE_SIZE = 1 << 16  # voxels sampled to pick the tail thresholds
_CHUNK = 1 << 18  # voxels windowed at a time (a 1 MiB float32 scratch buffer)


def window_bounds(data: np.ndarray) -> tuple[float, float]:
    """(lo, hi) = percentiles of the non-zero voxels of ``data`` (any shape, real dtype).

    Equal to ``np.percentile(data[data != 0], contract.WINDOW_PERCENTILES)`` (method
    'linear'), but only the voxels of the two tails are copied and partitioned: the
    thresholds come from a strided sample and are checked against exact counts.
    Returns (0, 0) for a volume without non-zero voxels.
    """
    flat = np.ravel(data, order="K")  # a view for contiguous data
    n = int(np.count_nonzero(flat))
    if n == 0:
        return 0.0, 0.0
    q = np.true_divide(contract.WINDOW_PERCENTILES, 100)
    virtual = (n - 1) * q  # numpy's 'linear' method, step by step
    prev = np.floor(virtual)
    nxt = prev + 1
    at_end = virtual >= n - 1
    prev[at_end] = nxt[at_end] = n - 1
    prev = np.clip(prev, 0, n - 1).astype(np.intp)
    nxt = np.clip(nxt, 0, n - 1).astype(np.intp)
    gamma = virtual - np.floor(virtual)
    ranks = np.concatenate([prev, nxt])
    values = _order_statistics(flat, n, ranks)
    a = values[: len(prev)].astype(flat.dtype)
    b = values[len(prev) :].astype(flat.dtype)
    diff = b - a  # numpy's _lerp
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe")
    return float(result[0]), float(result[1])


def _order_statistics(flat: np.ndarray, n: int, ranks: np.ndarray) -> np.ndarray:
    """The values of the non-zero entries of ``flat`` at the ascending ``ranks`` (exact)."""
    low, high = ranks[ranks < n // 2], ranks[ranks >= n // 2]
    out = {}
    if low.size:
        out.update(_tail(flat, n, low, lower=True))
    if high.size:
        out.update(_tail(flat, n, high, lower=False))
    return np.array([out[int(r)] for r in ranks], dtype=flat.dtype)


def _tail(flat: np.ndarray, n: int, ranks: np.ndarray, *, lower: bool) -> dict[int, object]:
    """Order statistics near one end, from the voxels beyond a sampled threshold."""
    need = int(ranks.max()) + 1 if lower else n - int(ranks.min())  # values in the tail
    step = max(1, flat.size // _SAMPLE_SIZE)
    sample = flat[::step]
    sample = sample[sample != 0]
    cand = None
    if sample.size:
        frac = need / n
        k = int(frac * sample.size * 1.5 + 4.0 * np.sqrt(frac * sample.size) + 16)
        if k < sample.size:
            kth = k if lower else sample.size - 1 - k
            threshold = np.partition(sample, kth)[kth]
            beyond = flat <= threshold if lower else flat >= threshold
            if n < flat.size:
                beyond &= flat != 0
            cand = flat[beyond]
            if cand.size < need:  # the sample misled us: use every non-zero voxel
                cand = None
    if cand is None:
        cand = flat[flat != 0]
    offset = 0 if lower else n - cand.size  # rank of cand's smallest value
    local = ranks - offset
    cand.partition(np.unique(local))
    return {int(r): cand[int(i)] for r, i in zip(ranks, local, strict=True)}


def window_to_uint8(data: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Map ``data`` (any shape) linearly from [lo, hi] to 0..255, clipped and rounded.

    Output: uint8, same shape and memory order as ``data``.  Contiguous data is windowed
    in chunks through one small float32 buffer (no volume-sized temporary).
    """
    lo, hi = window_bounds(data) if bounds is None else bounds
    if hi <= lo:  # constant non-zero intensities: they become 255, the rest 0
        return ((data >= hi) & (data != 0)).astype(np.uint8) * np.uint8(255)
    scale = np.float32(255.0 / (hi - lo))
    lo32 = np.float32(lo)
    if not (data.flags.c_contiguous or data.flags.f_contiguous):
        out = np.subtract(data, lo32, dtype=np.float32)
        _scale_clip_round(out, scale)
        return out.astype(np.uint8)
    order = "C" if data.flags.c_contiguous else "F"
    result = np.empty(data.shape, dtype=np.uint8, order=order)
    src, dst = data.ravel(order=order), result.ravel(order=order)  # views
    scratch = np.empty(min(_CHUNK, src.size), dtype=np.float32)
    for start in range(0, src.size, _CHUNK):
        stop = min(start + _CHUNK, src.size)
        buf = scratch[: stop - start]
        np.subtract(src[start:stop], lo32, out=buf, dtype=np.float32)
        _scale_clip_round(buf, scale)
        np.copyto(dst[start:stop], buf, casting="unsafe")
    return result


def _scale_clip_round(buf: np.ndarray, scale: np.float32) -> None:
    buf *= scale
    np.clip(buf, 0.0, 255.0, out=buf)
    np.rint(buf, out=buf)
