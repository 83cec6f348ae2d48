"""Dice from accumulated pixel counts (NumPy; used by training, the demo and the accuracy
benchmark).  Counts add up over slices and volumes, so a Dice is per dataset, not a mean of
per-slice Dice."""

from __future__ import annotations

import numpy as np

from aspects_client import contract


def class_counts(
    pred: np.ndarray, truth: np.ndarray, num_classes: int = contract.NUM_CLASSES
) -> np.ndarray:
    """Integer label arrays of one shape → int64 [3, C]: (intersection, predicted, true)."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    truth = np.asarray(truth).reshape(-1).astype(np.int64)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth differ in size: {pred.size} vs {truth.size}")
    inter = np.bincount(truth[pred == truth], minlength=num_classes)[:num_classes]
    return np.stack(
        [
            inter,
            np.bincount(pred, minlength=num_classes)[:num_classes],
            np.bincount(truth, minlength=num_classes)[:num_classes],
        ]
    )


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """int [3, C] → float64 Dice [C] = 2·I / (P + T); NaN where P + T = 0."""
    c = np.asarray(counts, dtype=np.float64)
    denom = c[1] + c[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * c[0] / denom, np.nan)


def region_dice(counts: np.ndarray) -> dict[str, float]:
    """Dice per region key (m1 … ic); background left out."""
    dice = dice_from_counts(counts)
    return {r.key: float(dice[r.index]) for r in contract.REGIONS}


def mean_region_dice(counts: np.ndarray) -> float:
    """Mean Dice over the regions present in prediction or truth (NaN if none)."""
    values = np.array(list(region_dice(counts).values()))
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def side_labels(classes: np.ndarray, hemispheres: np.ndarray) -> np.ndarray:
    """Classes 0..10 and hemisphere codes (contract.HEMISPHERE_CODES, 0 none) → one label per
    (region, side): ``(class - 1) * 2 + code`` for labelled pixels (1..20), else 0."""
    classes = np.asarray(classes).astype(np.int64)
    codes = np.asarray(hemispheres).astype(np.int64)
    out = (classes - 1) * 2 + codes
    return np.where((classes > 0) & (codes > 0), out, 0)


SIDE_CLASSES = 1 + 2 * len(contract.REGIONS)  # background + region × {r, l}


def region_side_dice(counts: np.ndarray) -> dict[str, dict[str, float]]:
    """Counts over ``side_labels`` (int [3, 21]) → {region key: {"r": Dice, "l": Dice}}."""
    dice = dice_from_counts(counts)
    out: dict[str, dict[str, float]] = {}
    for r in contract.REGIONS:
        out[r.key] = {
            side: float(dice[(r.index - 1) * 2 + code])
            for side, code in contract.HEMISPHERE_CODES.items()
        }
    return out
