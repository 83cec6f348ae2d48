"""Quality control on every result: checks a user can act on, reported in the document.

Four checks, thresholds in ``contract`` (``QC_*``) and ``hemisphere``:

0. ``midsagittal_plane``: the plane that splits the patient's right and left was estimated
   from regions labelled on both sides; a fallback plane (head centroid or field-of-view
   centre, ``hemisphere.estimate_plane``) fails the check: review left/right;
1. ``asymmetry``: per region, the left/right volume asymmetry from the document's
   ``summary`` (the patient's hemispheres as already decided by the mid-sagittal plane);
2. ``level_consistency``: ganglionic and supraganglionic regions in one slice and one
   hemisphere (they belong to different ASPECTS levels), from the per-slice ``areas``;
3. ``outside_head``: labelled pixels where the windowed image shows no head.

``quality_control`` assembles them into the document's ``qc`` object::

    {"passed": bool, "flags": [str, ...],
     "checks": {"midsagittal_plane": {...}, "asymmetry": {...},
                "level_consistency": {...}, "outside_head": {...}}}

Each check holds ``passed``, ``value``/``values``, ``threshold`` and ``message`` (what the
user can do).  Flags and messages are plain ASCII (the overlay draws them with OpenCV).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from . import contract, hemisphere
from .errors import NotAHeadImageError

_SIDE_NAME = {contract.HEMISPHERE_RIGHT: "right", contract.HEMISPHERE_LEFT: "left"}
_DECIMALS = 4


def region_label(key: str) -> str:
    """'l' -> 'lentiform nucleus (L)': the region's name and its overlay legend key."""
    return f"{contract.REGION_BY_KEY[key].name} ({key.upper()})"


# --- regions found at all -------------------------------------------------------------


def check_regions_found(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Fails when no region holds a single voxel: the network found no head in the image."""
    voxels = sum(int(e.get("voxels", 0)) for by_hemi in summary.values() for e in by_hemi.values())
    passed = voxels > 0
    return {
        "passed": passed,
        "threshold": 1,
        "voxels": voxels,
        "flags": [] if passed else ["no ASPECTS region found"],
        "message": "ASPECTS regions were found." if passed else (
            "No ASPECTS region was found: this is not an image the network can read as a "
            "head (noise, a blank or wrongly scaled image?); send an axial head DWI (the "
            "b≈1000 volume). There is nothing to score."
        ),
    }


def refuse_implausible_head(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]], label: str
) -> None:
    """NotAHeadImageError when the labelled regions total more than contract.MAX_REGIONS_ML
    (wrong voxel sizes in the header: the volumes would be reported as a head's)."""
    total = sum(float(e.get("volume_ml", 0.0)) for h in summary.values() for e in h.values())
    if total > contract.MAX_REGIONS_ML:
        raise NotAHeadImageError(
            f"{label}: the labelled regions total {total:,.0f} mL, but no head holds more than "
            f"{contract.MAX_REGIONS_ML:,.0f} mL of them (a whole brain is about 1,100-1,400 "
            "mL): this is not a head DWI at these voxel sizes; check the voxel sizes in the "
            "header (pixdim) and that this is the DWI volume"
        )


# --- 0. the mid-sagittal plane -----------------------------------------------------------

_PLANE_NAME = {
    hemisphere.METHOD_BILATERAL: "regions labelled on both sides",
    hemisphere.METHOD_HEAD: "head centroid",
    hemisphere.METHOD_FOV: "field-of-view centre",
}


def check_midsagittal_plane(plane: Mapping[str, Any]) -> dict[str, Any]:
    """Fail when the hemispheres were split by a fallback plane, not by the labels.

    plane: the document's ``midsagittal_plane`` ({"normal", "offset_mm", "method"}).
    threshold: ``hemisphere.MIN_HEAD_SIDE_FRACTION``, the share of the head a plane from
    the labels must leave on each side (when the image is known).
    """
    method = str(plane.get("method", ""))
    passed = method == hemisphere.METHOD_BILATERAL
    flags = []
    if passed:
        message = (
            "The patient's right and left were split by the mid-sagittal plane estimated from "
            "regions labelled on both sides."
        )
    else:
        where = f"x = {float(plane.get('offset_mm', 0.0)):.1f} mm (world RAS)"
        name = _PLANE_NAME.get(method, method)
        flags.append(
            f"left/right: hemisphere assignment used the fallback mid-sagittal plane ({name}, "
            f"{where}); review left/right"
        )
        message = (
            "The mid-sagittal plane could not be estimated from regions labelled on both "
            "sides (too few or one-sided labels, or a plane that would not split the head), "
            f"so the patient's right and left were split at the {name}, {where}: check the "
            "head position and review every region's hemisphere (r/l) on the overlay before "
            "using left/right volumes or scores."
        )
    return {
        "passed": passed,
        "method": method,
        "threshold": hemisphere.MIN_HEAD_SIDE_FRACTION,
        "flags": flags,
        "message": message,
    }


# --- 1. left/right asymmetry --------------------------------------------------------------


def asymmetry(volume_r: float, volume_l: float) -> float:
    """|V_r - V_l| / max(V_r, V_l) of two non-negative volumes (any one unit); 0 when both
    are 0; 1 when exactly one side is empty."""
    larger = max(volume_r, volume_l)
    return abs(volume_r - volume_l) / larger if larger > 0 else 0.0


def check_asymmetry(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    max_asymmetry: float = contract.QC_ASYMMETRY_MAX,
    min_volume_ml: float = contract.QC_ASYMMETRY_MIN_VOLUME_ML,
    plane_method: str | None = None,
) -> dict[str, Any]:
    """Flag regions whose patient-right and patient-left volumes differ too much.

    summary: the document's ``summary`` ({region: {"r"|"l": {"voxels", "volume_ml"}}}).
    The ratio is taken on voxel counts (exact; both sides share one voxel volume), the
    minimum on ``volume_ml`` (mL): a region is flagged when asymmetry > max_asymmetry and
    its larger side holds >= min_volume_ml.  A region on one side only has asymmetry 1.
    plane_method: the document's ``midsagittal_plane.method``; a fallback plane (no usable
    bilateral pair: head centroid or field-of-view centre) is mentioned in the message.
    """
    r_key, l_key = contract.HEMISPHERE_RIGHT, contract.HEMISPHERE_LEFT
    values: dict[str, Any] = {}
    flagged: list[str] = []
    flags: list[str] = []
    for key in contract.REGION_KEYS:
        vox, ml = _side_volumes(summary.get(key, {}))
        value = asymmetry(vox[r_key], vox[l_key])
        is_flagged = value > max_asymmetry and max(ml.values()) >= min_volume_ml
        values[key] = {
            "asymmetry": round(value, _DECIMALS),
            "volume_ml": ml,
            "flagged": is_flagged,
        }
        if is_flagged:
            flagged.append(key)
            flags.append(_asymmetry_flag(key, vox, ml, value, max_asymmetry))
    return {
        "passed": not flagged,
        "values": values,
        "threshold": max_asymmetry,
        "min_volume_ml": min_volume_ml,
        "regions": flagged,
        "flags": flags,
        "message": _asymmetry_message(flagged, max_asymmetry, min_volume_ml, plane_method),
    }


def _side_volumes(
    entry: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, int], dict[str, float]]:
    """({hemisphere: voxels}, {hemisphere: volume_ml}) of one region's summary, right first."""
    sides = (contract.HEMISPHERE_RIGHT, contract.HEMISPHERE_LEFT)
    vox = {h: int(entry.get(h, {}).get("voxels", 0)) for h in sides}
    ml = {h: float(entry.get(h, {}).get("volume_ml", 0.0)) for h in sides}
    return vox, ml


def _asymmetry_flag(
    key: str, vox: Mapping[str, int], ml: Mapping[str, float], value: float, max_asymmetry: float
) -> str:
    """The flag of an asymmetric region: on one side only, or its asymmetry and volumes."""
    r_key, l_key = contract.HEMISPHERE_RIGHT, contract.HEMISPHERE_LEFT
    present = [h for h in (r_key, l_key) if vox[h] > 0]
    if len(present) == 1:
        side = present[0]
        other = l_key if side == r_key else r_key
        return (
            f"{region_label(key)}: only in the {_SIDE_NAME[side]} hemisphere "
            f"({ml[side]:.2f} mL), none on the {_SIDE_NAME[other]}"
        )
    return (
        f"{region_label(key)}: left/right volume asymmetry {_pct(value)} "
        f"(> {_pct(max_asymmetry)}; R {ml[r_key]:.2f} mL, L {ml[l_key]:.2f} mL)"
    )


def _asymmetry_message(
    flagged: Sequence[str], max_asymmetry: float, min_volume_ml: float, plane_method: str | None
) -> str:
    """The asymmetry check's message: all within bounds, or what to check and review."""
    if not flagged:
        return (
            f"Every region's left/right volume asymmetry is within {_pct(max_asymmetry)} "
            f"(regions under {min_volume_ml:g} mL on both sides are not judged)."
        )
    message = (
        f"{len(flagged)} region(s) differ between the patient's hemispheres by more than "
        f"{_pct(max_asymmetry)} ({', '.join(k.upper() for k in flagged)}): check the head "
        "position (tilt/rotation, mid-sagittal plane) and the image contrast, then review "
        "these regions on the overlay before using their volumes or scores."
    )
    if plane_method is not None and plane_method != hemisphere.METHOD_BILATERAL:
        message += (
            " The mid-sagittal plane could not be estimated from the labels and was set "
            f"by a fallback ({_PLANE_NAME.get(plane_method, plane_method)}): the "
            "left/right split may be wrong."
        )
    return message


# --- 2. level consistency ---------------------------------------------------------------


def check_levels(
    slices: Sequence[Mapping[str, Any]],
    *,
    min_fraction: float = contract.QC_LEVEL_MIN_FRACTION,
    min_pixels: int = contract.QC_LEVEL_MIN_PIXELS,
    ganglionic: Sequence[str] = contract.QC_GANGLIONIC_KEYS,
    supraganglionic: Sequence[str] = contract.QC_SUPRAGANGLIONIC_KEYS,
) -> dict[str, Any]:
    """Flag slice sides that hold substantial pixels of both ASPECTS levels.

    slices: the document's ``slices`` entries ({"slice_index", "display_index",
    "areas": {region: {"r"|"l": {"pixels"}}}}).  In one slice and one hemisphere, with
    T = that side's labelled pixels, G = ganglionic pixels (m1 m2 m3 i l c ic) and
    S = supraganglionic pixels (m4 m5 m6), the side is flagged when both G and S are
    >= max(min_fraction * T, min_pixels).
    """
    g_keys, s_keys = set(ganglionic), set(supraganglionic)
    values = _mixed_level_sides(slices, min_fraction, min_pixels, g_keys, s_keys)
    slice_list = sorted({v["slice_index"] for v in values})
    flags, message = _levels_flags_and_message(values, slice_list)
    return {
        "passed": not values,
        "values": values,
        "threshold": min_fraction,
        "min_pixels": min_pixels,
        "slices": slice_list,
        "flags": flags,
        "message": message,
    }


def _level_pixels(
    areas: Mapping[str, Mapping[str, Mapping[str, Any]]],
    hemi: str,
    g_keys: set[str],
    s_keys: set[str],
) -> tuple[int, int, int]:
    """(ganglionic, supraganglionic, all labelled) pixels of one slice's hemisphere."""
    g = s = total = 0
    for key, by_hemi in areas.items():
        px = int(by_hemi.get(hemi, {}).get("pixels", 0))
        total += px
        g += px if key in g_keys else 0
        s += px if key in s_keys else 0
    return g, s, total


def _mixed_level_sides(
    slices: Sequence[Mapping[str, Any]],
    min_fraction: float,
    min_pixels: int,
    g_keys: set[str],
    s_keys: set[str],
) -> list[dict[str, Any]]:
    """The check's values: every slice side with both levels above the threshold."""
    values: list[dict[str, Any]] = []
    for entry in slices:
        areas = entry.get("areas", {})
        for hemi in contract.HEMISPHERES:
            g, s, total = _level_pixels(areas, hemi, g_keys, s_keys)
            need = max(min_fraction * total, min_pixels)
            if total and g >= need and s >= need:
                values.append(
                    {
                        "slice_index": int(entry["slice_index"]),
                        "display_index": int(entry["display_index"]),
                        "hemisphere": hemi,
                        "ganglionic_pixels": g,
                        "supraganglionic_pixels": s,
                        "labelled_pixels": total,
                    }
                )
    return values


def _levels_flags_and_message(
    values: Sequence[Mapping[str, Any]], slice_list: Sequence[int]
) -> tuple[list[str], str]:
    """(flags, message) of the level check: the mixed slices and their sides, or none."""
    if not values:
        return [], "No slice side holds substantial ganglionic and supraganglionic regions."
    sides: dict[int, list[str]] = {}
    for v in values:
        sides.setdefault(v["slice_index"], []).append(v["hemisphere"].upper())
    where = ", ".join(f"{i} ({'+'.join(sides[i])})" for i in slice_list)
    flag = f"ganglionic and supraganglionic regions on the same side: slice {where}"
    message = (
        "ASPECTS reads M1-M3, I, L, C and IC at the basal-ganglia level and M4-M6 above "
        f"it, but slice(s) {', '.join(map(str, slice_list))} hold both on one side: check "
        "the head position (strong tilt) and the slice coverage, and review these slices "
        "on the overlay before scoring them."
    )
    return [flag], message


# --- 3. labels outside the head ---------------------------------------------------------


def margin_pixels(margin_mm: float, pixel_spacing_mm: tuple[float, float]) -> int:
    """A margin in mm -> whole display pixels (at the finer in-plane spacing), >= 0."""
    finest = min(float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    return max(0, round(margin_mm / finest)) if finest > 0 else 0


def head_mask(
    image: np.ndarray,
    *,
    level: int = contract.QC_HEAD_LEVEL,
    blur_px: int = contract.QC_HEAD_BLUR_PX,
    margin_px: int = 0,
) -> np.ndarray:
    """bool [H, W] head mask of one windowed uint8 [H, W] slice.

    Gaussian blur (blur_px x blur_px, odd; 0 or 1 = none), pixels >= level, the largest
    8-connected component, its holes (background not 4-connected to the border) filled,
    then dilated by margin_px pixels (elliptical).  An all-dark slice gives all False.
    """
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if blur_px > 1:
        k = blur_px | 1
        img = cv2.GaussianBlur(img, (k, k), 0)
    fg = (img >= level).astype(np.uint8)
    n, cc, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return np.zeros(image.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    h, w = image.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = cc == largest
    cv2.floodFill(padded, None, (0, 0), 2)  # the outside, from the padded border
    head = (padded[1:-1, 1:-1] != 2).astype(np.uint8)
    if margin_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_px + 1,) * 2)
        head = cv2.dilate(head, kernel)
    return head.astype(bool)


def outside_head_counts(
    labels: np.ndarray,
    images: np.ndarray,
    *,
    margin_px: int = 0,
    level: int = contract.QC_HEAD_LEVEL,
    blur_px: int = contract.QC_HEAD_BLUR_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """labels: uint8 [N, H, W] classes; images: uint8 [N, H, W] windowed display slices.

    Returns (outside, labelled): int64 [N] labelled pixels outside ``head_mask`` and all
    labelled pixels, per slice.
    """
    if labels.shape != images.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and images {images.shape} differ")
    n = labels.shape[0]
    outside = np.zeros(n, np.int64)
    labelled = np.zeros(n, np.int64)
    for i in range(n):
        lab = labels[i] != contract.BACKGROUND_INDEX
        labelled[i] = np.count_nonzero(lab)
        if labelled[i]:
            mask = head_mask(images[i], level=level, blur_px=blur_px, margin_px=margin_px)
            outside[i] = np.count_nonzero(lab & ~mask)
    return outside, labelled


def check_outside_head(
    outside: Sequence[int] | np.ndarray,
    labelled: Sequence[int] | np.ndarray,
    slice_indices: Sequence[int],
    *,
    max_fraction: float = contract.QC_OUTSIDE_HEAD_MAX_FRACTION,
) -> dict[str, Any]:
    """Overall and per-slice fraction of labelled pixels outside the head.

    outside, labelled: [N] pixel counts per display slice (``outside_head_counts``);
    slice_indices: [N] the original file's slice index of each display slice.  Fails when
    the overall fraction > max_fraction; slices above it are listed for review.
    """
    out = np.asarray(outside, dtype=np.int64)
    lab = np.asarray(labelled, dtype=np.int64)
    total = int(lab.sum())
    value = float(out.sum()) / total if total else 0.0
    values = _outside_values(out, lab, slice_indices)
    worst = [v for v in values if v["outside_pixels"] / v["labelled_pixels"] > max_fraction]
    worst.sort(key=lambda v: -v["fraction"])
    slice_list = sorted(v["slice_index"] for v in worst)
    flags, message = _outside_flags_and_message(value, worst, slice_list, max_fraction)
    return {
        "passed": value <= max_fraction,
        "value": round(value, _DECIMALS),
        "values": values,
        "threshold": max_fraction,
        "slices": slice_list,
        "flags": flags,
        "message": message,
    }


def _outside_values(
    out: np.ndarray, lab: np.ndarray, slice_indices: Sequence[int]
) -> list[dict[str, Any]]:
    """Per labelled display slice: its pixel counts and the fraction outside the head."""
    values = []
    for n, (o, t) in enumerate(zip(out.tolist(), lab.tolist(), strict=True)):
        if t:
            values.append(
                {
                    "slice_index": int(slice_indices[n]),
                    "display_index": n,
                    "labelled_pixels": t,
                    "outside_pixels": o,
                    "fraction": round(o / t, _DECIMALS),
                }
            )
    return values


def _outside_flags_and_message(
    value: float, worst: Sequence[Mapping[str, Any]], slice_list: Sequence[int], max_fraction: float
) -> tuple[list[str], str]:
    """(flags, message) of the outside-head check; ``worst``: slices above, worst first."""
    if value <= max_fraction:
        message = (
            f"{_pct(value, 2)} of the labelled pixels lie outside the head "
            f"(at most {_pct(max_fraction)})."
        )
        return [], message
    review = ", ".join(map(str, sorted(v["slice_index"] for v in worst[:6])))
    more = f" (+{len(worst) - 6} more)" if len(worst) > 6 else ""
    flag = f"{_pct(value, 1)} of labelled pixels outside the head (> {_pct(max_fraction)})" + (
        f": slice {review}{more}" if review else ""
    )
    message = (
        f"{_pct(value, 1)} of the labelled pixels lie where the image shows no head: check "
        "the image contrast (intensity window, b-value/series) and the head position in the "
        "field of view, and review "
        + (f"slices {', '.join(map(str, slice_list))}." if slice_list else "the overlay.")
    )
    return [flag], message


# --- all of it ----------------------------------------------------------------------------


def quality_control(
    document: Mapping[str, Any],
    labels: np.ndarray,
    images: np.ndarray,
    *,
    pixel_spacing_mm: tuple[float, float],
) -> dict[str, Any]:
    """The document's ``qc`` object.

    document: a contours document (``summary``, ``slices``, ``midsagittal_plane``);
    labels: uint8 [N, H, W] display-stack classes; images: uint8 [N, H, W] the windowed
    display slices the labels belong to; pixel_spacing_mm: (row, col) display spacing.
    """
    slices = document["slices"]
    by_display = {int(s["display_index"]): int(s["slice_index"]) for s in slices}
    slice_indices = [by_display.get(n, n) for n in range(labels.shape[0])]
    margin = margin_pixels(contract.QC_HEAD_MARGIN_MM, pixel_spacing_mm)
    outside, labelled = outside_head_counts(labels, images, margin_px=margin)
    head = check_outside_head(outside, labelled, slice_indices)
    head["head_mask"] = {
        "level": contract.QC_HEAD_LEVEL,
        "blur_px": contract.QC_HEAD_BLUR_PX,
        "margin_mm": contract.QC_HEAD_MARGIN_MM,
    }
    plane = document.get("midsagittal_plane", {})
    checks = {
        "regions_found": check_regions_found(document["summary"]),
        "midsagittal_plane": check_midsagittal_plane(plane),
        "asymmetry": check_asymmetry(document["summary"], plane_method=plane.get("method")),
        "level_consistency": check_levels(slices),
        "outside_head": head,
    }
    return summarise(checks)


def summarise(checks: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """{"passed", "flags", "checks"} from checks that each carry "passed" and "flags"."""
    return {
        "passed": all(c["passed"] for c in checks.values()),
        "flags": [f for c in checks.values() for f in c["flags"]],
        "checks": dict(checks),
    }


def flagged_slices(qc: Mapping[str, Any] | None) -> dict[int, list[str]]:
    """Display index -> short tags ("level", "outside head") for slices of failed checks."""
    out: dict[int, list[str]] = {}
    if not qc:
        return out
    checks = qc.get("checks", {})
    levels = checks.get("level_consistency", {})
    if not levels.get("passed", True):
        for v in levels.get("values", []):
            tags = out.setdefault(int(v["display_index"]), [])
            if "levels" not in tags:
                tags.append("levels")
    head = checks.get("outside_head", {})
    if not head.get("passed", True):
        threshold = float(head.get("threshold", 0.0))
        for v in head.get("values", []):
            if v["outside_pixels"] > threshold * v["labelled_pixels"]:
                out.setdefault(int(v["display_index"]), []).append("outside head")
    return out


def _pct(fraction: float, decimals: int = 0) -> str:
    return f"{100 * fraction:.{decimals}f} %"
