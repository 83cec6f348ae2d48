"""Overlay PNG for a person: chosen slices, coloured region contours, R/L marks.

Slices are shown in radiological convention (patient right on the image's left), with
square pixels, and labelled with the original file's slice index.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from . import contract
from .contours import SliceContours
from .geometry import Geometry

TILE_PX = 384
MAX_TILES = 6
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE, _BLACK, _YELLOW = (255, 255, 255), (0, 0, 0), (0, 215, 255)


def choose_slices(contours: Sequence[SliceContours], max_tiles: int = MAX_TILES) -> list[int]:
    """The display indices with the most labelled pixels (ascending), at most max_tiles."""
    labelled = [(sum(sc.pixels.values()), sc.index) for sc in contours]
    best = sorted(labelled, key=lambda t: (-t[0], t[1]))[:max_tiles]
    chosen = sorted(i for count, i in best if count > 0)
    if not chosen and contours:
        chosen = [contours[len(contours) // 2].index]
    return chosen


def render_overlay(
    slices: np.ndarray,
    contours: Sequence[SliceContours],
    geometry: Geometry,
    *,
    title: str = "",
    note: str = "",
    indices: Sequence[int] | None = None,
) -> bytes:
    """slices: uint8 [N, H, W] display stack -> PNG bytes of a tiled overlay."""
    chosen = list(indices) if indices is not None else choose_slices(contours)
    by_index = {sc.index: sc for sc in contours}
    tiles = [_tile(slices[n], by_index.get(n), geometry, n) for n in chosen if 0 <= n < len(slices)]
    if not tiles:
        tiles = [np.zeros((TILE_PX, TILE_PX, 3), np.uint8)]
    cols = min(3, len(tiles))
    rows = -(-len(tiles) // cols)
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th : r * th + t.shape[0], c * tw : c * tw + t.shape[1]] = t
    canvas = np.hstack([grid, _legend(grid.shape[0])])
    canvas = np.vstack([_header(canvas.shape[1], title, note), canvas])
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError("OpenCV could not encode the overlay PNG")
    return png.tobytes()


def _tile(image: np.ndarray, sc: SliceContours | None, geometry: Geometry, n: int) -> np.ndarray:
    h, w = image.shape
    row_mm, col_mm = geometry.display_pixel_spacing_mm
    height_mm, width_mm = h * row_mm, w * col_mm
    scale = TILE_PX / max(height_mm, width_mm)
    sy, sx = row_mm * scale, col_mm * scale  # output pixels per input pixel
    out_h, out_w = max(1, round(h * sy)), max(1, round(w * sx))
    radiological = image[:, ::-1]  # patient right to the image's left
    tile = cv2.resize(radiological, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    tile = cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR)
    if sc is not None:
        for (key, _hemi), polys in sc.polygons.items():
            colour = _bgr(contract.REGION_BY_KEY[key].colour_rgb)
            for poly in polys:
                for ring in (poly.outer, *poly.holes):
                    pts = np.empty((len(ring), 1, 2), np.int32)
                    pts[:, 0, 0] = np.rint(((w - 1 - ring[:, 0]) + 0.5) * sx - 0.5)
                    pts[:, 0, 1] = np.rint((ring[:, 1] + 0.5) * sy - 0.5)
                    cv2.polylines(tile, [pts], True, colour, 2, cv2.LINE_AA)
    _text(tile, "R", (6, out_h // 2 + 10), 0.9)
    _text(tile, "L", (out_w - 24, out_h // 2 + 10), 0.9)
    _text(tile, "A", (out_w // 2 - 8, 24), 0.6)
    _text(tile, "P", (out_w // 2 - 8, out_h - 8), 0.6)
    slice_no = geometry.original_slice_index(n)
    _text(tile, f"slice {slice_no}", (6, 22), 0.55, _YELLOW)
    pad = np.zeros((TILE_PX, TILE_PX, 3), np.uint8)
    pad[: min(out_h, TILE_PX), : min(out_w, TILE_PX)] = tile[:TILE_PX, :TILE_PX]
    cv2.rectangle(pad, (0, 0), (TILE_PX - 1, TILE_PX - 1), (60, 60, 60), 1)
    return pad


def _legend(height: int) -> np.ndarray:
    panel = np.full((height, 300, 3), 24, np.uint8)
    y = 28
    _text(panel, "ASPECTS regions", (10, y), 0.55)
    for region in contract.REGIONS:
        y += 26
        if y > height - 6:
            break
        cv2.rectangle(panel, (10, y - 14), (30, y + 2), _bgr(region.colour_rgb), -1)
        _text(panel, region.key.upper(), (38, y), 0.42)
        _text(panel, region.name[:30], (72, y), 0.42)
    if y + 40 < height:
        _text(panel, "radiological view:", (10, y + 34), 0.42)
        _text(panel, "patient R on image left", (10, y + 54), 0.42)
    return panel


def _header(width: int, title: str, note: str) -> np.ndarray:
    bar = np.full((56 if note else 32, width, 3), 40, np.uint8)
    _text(bar, title[:110], (10, 22), 0.55)
    if note:
        _text(bar, note[:120], (10, 46), 0.5, (80, 80, 255))
    return bar


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=_WHITE) -> None:
    """Legible on any background: a 1-px black halo (same glyph advance), then the text."""
    x, y = org
    for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, -1), (0, 1), (-1, 0), (1, 0)):
        cv2.putText(img, text, (x + dx, y + dy), _FONT, scale, _BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return rgb[2], rgb[1], rgb[0]
