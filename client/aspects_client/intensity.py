"""The volume-wise intensity window (contract.WINDOW_PERCENTILES) to UINT8.

Nothing here allocates a volume-sized temporary: the data are visited in blocks of at most
``_CHUNK`` voxels (views of the input, in any memory order), so the only volume-sized
array is the uint8 result of ``window_to_uint8``.
"""

from __future__ import annotations

import numpy as np

from . import contract

_SAMPLE_SIZE = 1 << 16  # voxels sampled to pick the tail thresholds
_SAMPLE_SEED = 20240607  # the sample's positions are pseudo-random but fixed
_CHUNK = 1 << 18  # voxels handled at a time (a 1 MiB float32 scratch buffer, 2 MiB float64
# for 64-bit inputs)


def window_bounds(data: np.ndarray) -> tuple[float, float]:
    """(lo, hi) = percentiles of the non-zero voxels of ``data`` (any shape, real dtype).

    Equal to ``np.percentile(data[data != 0], contract.WINDOW_PERCENTILES)`` (method
    'linear'), but only the voxels of the two tails are copied and partitioned: the
    thresholds come from a strided sample and are checked against exact counts.
    Returns (0, 0) for a volume without non-zero voxels.
    """
    blocks = _blocks(data)
    n = sum(int(np.count_nonzero(b)) for b in blocks)
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
    values = _order_statistics(blocks, int(data.size), n, ranks, data.dtype)
    a = values[: len(prev)]
    b = values[len(prev) :]
    diff = b - a  # numpy's _lerp
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe")
    return float(result[0]), float(result[1])


def _blocks(data: np.ndarray) -> list[np.ndarray]:
    """Views covering ``data`` once, each of at most ``_CHUNK`` elements (1-D chunks of a
    contiguous array, else slabs along the leading axes)."""
    if data.flags.c_contiguous or data.flags.f_contiguous:
        data = data.ravel(order="K")  # a view
    return [data[index] for index in _block_index(data.shape)]


def _block_index(shape: tuple[int, ...], limit: int = _CHUNK) -> list[tuple[slice | int, ...]]:
    """Index tuples that split an array of ``shape`` into blocks of <= limit elements."""
    if not shape:
        return [()]
    inner = int(np.prod(shape[1:], dtype=np.int64))
    if inner <= limit or len(shape) == 1:
        step = max(1, limit // max(inner, 1))
        return [(slice(s, s + step),) for s in range(0, shape[0], step)]
    return [(i, *rest) for i in range(shape[0]) for rest in _block_index(shape[1:], limit)]


def _order_statistics(
    blocks: list[np.ndarray], size: int, n: int, ranks: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """The values (dtype) of the non-zero entries of the blocks at the ascending ``ranks``
    (exact); size: all entries, n: the non-zero ones."""
    low, high = ranks[ranks < n // 2], ranks[ranks >= n // 2]
    out = {}
    if low.size:
        out.update(_tail(blocks, size, n, low, lower=True))
    if high.size:
        out.update(_tail(blocks, size, n, high, lower=False))
    return np.array([out[int(r)] for r in ranks], dtype=dtype)


def _tail(
    blocks: list[np.ndarray], size: int, n: int, ranks: np.ndarray, *, lower: bool
) -> dict[int, object]:
    """Order statistics near one end, from the voxels beyond a sampled threshold.

    Only the voxels strictly beyond the threshold are copied; those equal to it are
    counted, so a tail of ties (e.g. a constant background) costs no memory.
    """
    need = int(ranks.max()) + 1 if lower else n - int(ranks.min())  # values in the tail
    sample = _sample(blocks, size)
    sample = sample[sample != 0]
    if sample.size:
        frac = need / n
        k = int(frac * sample.size * 1.5 + 4.0 * np.sqrt(frac * sample.size) + 16)
        if k < sample.size:
            kth = k if lower else sample.size - 1 - k
            threshold = np.partition(sample, kth)[kth]
            beyond, n_equal = _select(blocks, threshold, lower=lower)
            if beyond.size + n_equal >= need:
                return _ranked(beyond, threshold, n, ranks, lower=lower)
    return _ranked(_nonzero(blocks, n), None, n, ranks, lower=lower)  # the sample misled us


def _sample(blocks: list[np.ndarray], size: int) -> np.ndarray:
    """Up to ``_SAMPLE_SIZE`` entries at fixed pseudo-random positions (a regular stride
    can alias with the grid, e.g. sample one image column of background only)."""
    if size <= _SAMPLE_SIZE:
        return np.concatenate([b.reshape(-1) for b in blocks])
    picks = np.sort(np.random.default_rng(_SAMPLE_SEED).integers(0, size, _SAMPLE_SIZE))
    starts = np.cumsum([0] + [b.size for b in blocks])
    bounds = np.searchsorted(picks, starts)
    return np.concatenate(
        [
            b.reshape(-1)[picks[bounds[i] : bounds[i + 1]] - starts[i]]
            for i, b in enumerate(blocks)
            if bounds[i + 1] > bounds[i]
        ]
    )


def _ranked(
    beyond: np.ndarray, threshold: object, n: int, ranks: np.ndarray, *, lower: bool
) -> dict[int, object]:
    """rank -> value, given the m values strictly beyond the threshold (the m smallest when
    lower, else the m largest) and that the next ranks inward all equal the threshold."""
    m = beyond.size
    offset = 0 if lower else n - m  # rank of beyond's smallest value
    local = ranks - offset
    inside = local[(local >= 0) & (local < m)]
    if inside.size:
        beyond.partition(np.unique(inside))
    return {
        int(r): beyond[int(i)] if 0 <= i < m else threshold
        for r, i in zip(ranks, local, strict=True)
    }


def _select(blocks: list[np.ndarray], threshold: object, *, lower: bool) -> tuple[np.ndarray, int]:
    """(1-D copy of the non-zero entries < threshold (lower) or > threshold (upper), count
    of the non-zero entries == threshold), block by block: no volume-sized mask."""
    parts = []
    n_equal = 0
    for b in blocks:
        keep = b != 0
        n_equal += int(np.count_nonzero(keep & (b == threshold)))
        keep &= (b < threshold) if lower else (b > threshold)
        parts.append(b[keep])
    return np.concatenate(parts), n_equal


def _nonzero(blocks: list[np.ndarray], n: int) -> np.ndarray:
    """1-D copy of the n non-zero entries of the blocks, written into one array."""
    out = np.empty(n, dtype=blocks[0].dtype)
    filled = 0
    for b in blocks:
        values = b[b != 0]
        out[filled : filled + values.size] = values
        filled += values.size
    return out


def window_to_uint8(data: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Map ``data`` (any shape, any strides) linearly from [lo, hi] to 0..255, clipped and
    rounded.

    Output: uint8 of the same shape; in the same memory order as contiguous ``data``, else
    C-contiguous (so a reoriented view, e.g. ``geometry.to_display(volume)``, is windowed
    straight into its contiguous display stack).  Work is done in blocks of at most
    ``_CHUNK`` voxels through one small buffer (float32, float64 for 64-bit inputs: no
    volume-sized temporary).
    When hi <= lo (constant non-zero intensities) voxels >= hi become 255, the rest 0.
    """
    lo, hi = window_bounds(data) if bounds is None else bounds
    if data.flags.c_contiguous or data.flags.f_contiguous:
        order = "C" if data.flags.c_contiguous else "F"
        result = np.empty(data.shape, dtype=np.uint8, order=order)
        src, dst = data.ravel(order=order), result.ravel(order=order)  # views
    else:
        result = np.empty(data.shape, dtype=np.uint8)
        src, dst = data, result
    if hi <= lo:
        for index in _block_index(src.shape):
            block = src[index]
            np.multiply((block >= hi) & (block != 0), 255, out=dst[index], casting="unsafe")
        return result
    work = working_dtype(data.dtype, lo, hi)
    scale = work.type(255.0 / (float(hi) - float(lo)))
    lo_w = work.type(lo)
    scratch = np.empty(min(_CHUNK, max(src.size, 1)), dtype=work)
    for index in _block_index(src.shape):
        block = src[index]
        buf = scratch[: block.size].reshape(block.shape)
        np.subtract(block, lo_w, out=buf, dtype=work)
        _scale_clip_round(buf, scale)
        np.copyto(dst[index], buf, casting="unsafe")
    return result


def working_dtype(dtype: np.dtype, lo: float = 0.0, hi: float = 0.0) -> np.dtype:
    """float32, or float64 for 64-bit (and wider) inputs or a window whose span overflows
    float32: the window is computed in the input's own precision (a float64 volume near
    1e300 would overflow float32, and ``1 + 1e-12 x`` would lose its contrast)."""
    wide = np.dtype(dtype).itemsize > 4 or not np.isfinite(float(hi) - float(lo)) or (
        abs(float(hi)) + abs(float(lo)) > float(np.finfo(np.float32).max) / 2)
    return np.dtype(np.float64 if wide else np.float32)


def _scale_clip_round(buf: np.ndarray, scale: np.floating) -> None:
    buf *= scale
    np.clip(buf, 0.0, 255.0, out=buf)
    np.rint(buf, out=buf)
