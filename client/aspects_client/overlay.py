"""Overlay PNG for a person: chosen slices, coloured region contours, R/L marks.

Slices are shown in radiological convention (patient right on the image's left), with
square pixels, and labelled with the original file's slice index.  When the document's QC
(``aspects_client.qc``) failed, a red banner under the title lists its flags and the
slices it names are shown first, framed in red with a "QC" tag.  When the volume was scored
(``aspects_client.scoring.score``), a band under the title gives the ASPECTS score and the
affected regions, the lesion is filled in red, affected regions are hatched, and the
slices with the most lesion are shown first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from . import contract
from .contours import SliceContours
from .geometry import Geometry
from .qc import flagged_slices

TILE_PX = 384
MAX_TILES = 6
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE, _BLACK, _YELLOW = (255, 255, 255), (0, 0, 0), (0, 215, 255)
_QC_RED, _QC_BANNER, _GREEN = (40, 40, 235), (20, 20, 120), (90, 200, 90)  # BGR
MAX_QC_LINES = 6  # banner lines for flags (wrapped); flags beyond them are counted
_LESION_BGR = np.array((30, 30, 255), np.float32)  # red fill
LESION_ALPHA = 0.5
HATCH_PERIOD_PX = 8  # diagonal hatching of affected regions, in tile pixels


def choose_slices(
    contours: Sequence[SliceContours],
    max_tiles: int = MAX_TILES,
    priority: Sequence[int] = (),
) -> list[int]:
    """Display indices to show (ascending), at most max_tiles: the ``priority`` ones first
    (QC-flagged slices, at most half the tiles), then those with the most labelled pixels."""
    labelled = [(sum(sc.pixels.values()), sc.index) for sc in contours]
    known = {i for _, i in labelled}
    chosen = [i for i in dict.fromkeys(priority) if i in known][: max(1, max_tiles // 2)]
    rest = sorted(labelled, key=lambda t: (-t[0], t[1]))
    chosen += [i for count, i in rest if count > 0 and i not in chosen]
    chosen = sorted(chosen[:max_tiles])
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
    qc: Mapping[str, Any] | None = None,
    score: Mapping[str, Any] | None = None,
    lesion: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    hemispheres: np.ndarray | None = None,
) -> bytes:
    """slices: uint8 [N, H, W] display stack -> PNG bytes of a tiled overlay.

    qc: the document's ``qc`` object; when it failed, the header carries a banner with its
    flags and the slices it names are shown (first) with a red frame and a "QC" tag.
    score: the document's ``aspects`` object; lesion: bool [N, H, W]; classes, hemispheres:
    uint8 [N, H, W] (to hatch the affected regions).
    """
    flagged = flagged_slices(qc)
    priority = _priority_slices(flagged, lesion)
    chosen = list(indices) if indices is not None else choose_slices(contours, priority=priority)
    by_index = {sc.index: sc for sc in contours}
    affected = _affected_mask(score, classes, hemispheres)
    tiles = _tiles(slices, by_index, geometry, chosen, flagged, lesion, affected)
    grid = _tile_grid(tiles)
    canvas = np.hstack([grid, _legend(grid.shape[0])])
    header = _header(canvas.shape[1], title, note, qc)
    if score is not None:
        header = np.vstack([header, _score_band(canvas.shape[1], score)])
    canvas = np.vstack([header, canvas])
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError("OpenCV could not encode the overlay PNG")
    return png.tobytes()


def _priority_slices(flagged: Mapping[int, Any], lesion: np.ndarray | None) -> list[int]:
    """Slices to show first: QC-flagged ones, then those with lesion, most lesion first."""
    priority = list(flagged)
    if lesion is not None and lesion.any():
        area = lesion.reshape(len(lesion), -1).sum(axis=1)
        priority += [int(n) for n in np.argsort(-area, kind="stable") if area[n] > 0]
    return priority


def _tiles(
    slices: np.ndarray,
    by_index: Mapping[int, SliceContours],
    geometry: Geometry,
    chosen: Sequence[int],
    flagged: Mapping[int, Sequence[str]],
    lesion: np.ndarray | None,
    affected: np.ndarray | None,
) -> list[np.ndarray]:
    """The BGR tiles of the chosen slices in the stack (one black tile when none)."""
    tiles = [
        _tile(
            slices[n],
            by_index.get(n),
            geometry,
            n,
            flagged.get(n),
            None if lesion is None else lesion[n],
            None if affected is None else affected[n],
        )
        for n in chosen
        if 0 <= n < len(slices)
    ]
    if not tiles:
        tiles = [np.zeros((TILE_PX, TILE_PX, 3), np.uint8)]
    return tiles


def _tile_grid(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """The tiles laid out row by row, at most three per row, in cells of the largest tile."""
    cols = min(3, len(tiles))
    rows = -(-len(tiles) // cols)
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th : r * th + t.shape[0], c * tw : c * tw + t.shape[1]] = t
    return grid


def _tile(
    image: np.ndarray,
    sc: SliceContours | None,
    geometry: Geometry,
    n: int,
    qc_tags: Sequence[str] | None = None,
    lesion: np.ndarray | None = None,
    affected: np.ndarray | None = None,
) -> np.ndarray:
    h, w = image.shape
    row_mm, col_mm = geometry.display_pixel_spacing_mm
    height_mm, width_mm = h * row_mm, w * col_mm
    scale = TILE_PX / max(height_mm, width_mm)
    sy, sx = row_mm * scale, col_mm * scale  # output pixels per input pixel
    out_h, out_w = max(1, round(h * sy)), max(1, round(w * sx))
    radiological = image[:, ::-1]  # patient right to the image's left
    tile = cv2.resize(radiological, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    tile = cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR)
    size = (out_w, out_h)
    if affected is not None and affected.any():
        mask = cv2.resize(affected[:, ::-1].astype(np.uint8), size, cv2.INTER_NEAREST) > 0
        rows, cols = np.indices(mask.shape)
        hatch = mask & (((rows + cols) % HATCH_PERIOD_PX) < 2)
        tile[hatch] = (0, 140, 255)  # orange hatching: an affected region
    if lesion is not None and lesion.any():
        mask = cv2.resize(lesion[:, ::-1].astype(np.uint8), size, cv2.INTER_NEAREST) > 0
        blended = tile[mask].astype(np.float32) * (1 - LESION_ALPHA) + _LESION_BGR * LESION_ALPHA
        tile[mask] = blended.astype(np.uint8)
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
    if qc_tags:
        cv2.rectangle(pad, (2, 2), (TILE_PX - 3, TILE_PX - 3), _QC_RED, 5)
        tag = "QC: " + ", ".join(qc_tags)
        (tw, th), _ = cv2.getTextSize(tag, _FONT, 0.55, 1)
        x0 = TILE_PX - tw - 18
        cv2.rectangle(pad, (x0 - 6, 6), (TILE_PX - 7, 14 + th + 6), _QC_RED, -1)
        _text(pad, tag, (x0, 14 + th), 0.55)
    return pad


def _affected_mask(
    score: Mapping[str, Any] | None, classes: np.ndarray | None, hemispheres: np.ndarray | None
) -> np.ndarray | None:
    """bool [N, H, W]: pixels of the regions the score counts as affected (either side)."""
    if score is None or classes is None or hemispheres is None:
        return None
    mask = np.zeros(classes.shape, bool)
    for hemi, keys in score.get("affected_regions", {}).items():
        code = contract.HEMISPHERE_CODES[hemi]
        for key in keys:
            mask |= (classes == contract.REGION_BY_KEY[key].index) & (hemispheres == code)
    return mask


def _score_band(width: int, score: Mapping[str, Any]) -> np.ndarray:
    """'ASPECTS 7 (left hemisphere) - affected: M2, L, IC' and the per-side counts."""
    side = score.get("affected_hemisphere")
    names = {"r": "right", "l": "left"}
    value = score.get("score")
    head = f"ASPECTS {value}" + (f" ({names[side]} hemisphere)" if side else " (no lesion)")
    if score.get("uncertain"):
        head += "  - UNCERTAIN, review"
    regions = score.get("affected_regions", {})
    detail = "; ".join(
        f"{names[h]}: {', '.join(k.upper() for k in regions.get(h, [])) or 'none'}"
        f" ({score.get('scores', {}).get(h, '?')})"
        for h in ("r", "l")
    )
    method = score.get("method", {}).get("name", "?").upper()
    band = np.full((54, width, 3), (60, 30, 30), np.uint8)
    colour = _YELLOW if score.get("uncertain") else _WHITE
    _text(band, _fit(head, width - 20, 0.65), (10, 22), 0.65, colour)
    text = f"affected regions (hatched) {detail}; lesion (red) from {method}"
    _text(band, _fit(text, width - 20, 0.48), (10, 44), 0.48)
    return band


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


def _header(width: int, title: str, note: str, qc: Mapping[str, Any] | None = None) -> np.ndarray:
    bar = np.full((56 if note else 32, width, 3), 40, np.uint8)
    status = ""
    if qc:
        status = "QC passed" if qc.get("passed") else "QC FAILED"
        (sw, _), _ = cv2.getTextSize(status, _FONT, 0.6, 2)
        colour = _GREEN if qc.get("passed") else _QC_RED
        cv2.putText(bar, status, (width - sw - 12, 22), _FONT, 0.6, colour, 2, cv2.LINE_AA)
    _text(bar, _fit(title, width - 40 - (160 if status else 0), 0.55), (10, 22), 0.55)
    if note:
        _text(bar, _fit(note, width - 20, 0.5), (10, 46), 0.5, (80, 80, 255))
    if not qc or qc.get("passed"):
        return bar
    return np.vstack([bar, _qc_banner(width, list(qc.get("flags", [])))])


def _qc_banner(width: int, flags: list[str]) -> np.ndarray:
    """Dark red band: 'QC FAILED ...', then the flags, word-wrapped to the width; at most
    MAX_QC_LINES flag lines (the rest are counted)."""
    title = "QC FAILED - review before use (details: qc in the contours JSON):"
    lines: list[tuple[str, int, float, tuple[int, int, int]]] = [(title, 14, 0.55, _YELLOW)]
    flag_lines: list[tuple[str, int, float, tuple[int, int, int]]] = []
    shown = 0
    for flag in flags:
        wrapped = _wrap(flag, width - 60, 0.5)
        if len(flag_lines) + len(wrapped) > MAX_QC_LINES:
            break
        flag_lines += [
            (("- " if j == 0 else "  ") + part, 24, 0.5, _WHITE) for j, part in enumerate(wrapped)
        ]
        shown += 1
    lines += flag_lines
    if shown < len(flags):
        lines.append((f"+ {len(flags) - shown} more flag(s) in the JSON", 24, 0.5, _WHITE))
    band = np.full((12 + 24 * len(lines), width, 3), _QC_BANNER, np.uint8)
    for i, (text, x, scale, colour) in enumerate(lines):
        _text(band, _fit(text, width - x - 8, scale), (x, 26 + 24 * i), scale, colour)
    return band


def _wrap(text: str, width_px: int, scale: float) -> list[str]:
    """Greedy word wrap of text into lines of at most width_px at this font scale."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and cv2.getTextSize(candidate, _FONT, scale, 1)[0][0] > width_px:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _fit(text: str, width_px: int, scale: float) -> str:
    """text, cut with '...' so that it fits width_px at this font scale."""
    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width_px:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, 1)[0][0] > width_px:
        text = text[:-1]
    return text + "..."


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=_WHITE) -> None:
    """Legible on any background: a 1-px black halo (same glyph advance), then the text."""
    x, y = org
    for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, -1), (0, 1), (-1, 0), (1, 0)):
        cv2.putText(img, text, (x + dx, y + dy), _FONT, scale, _BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return rgb[2], rgb[1], rgb[0]
