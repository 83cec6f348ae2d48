"""Dice from accumulated counts: a table of known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aspects_client import contract
from aspects_export.dice import (
    SIDE_CLASSES,
    class_counts,
    dice_from_counts,
    mean_region_dice,
    region_dice,
    region_side_dice,
    side_labels,
)

CASES = [
    # pred, truth, class, expected Dice
    ([1, 1, 0, 0], [1, 1, 0, 0], 1, 1.0),
    ([1, 1, 0, 0], [1, 0, 0, 0], 1, 2 * 1 / 3),
    ([1, 0, 0, 0], [0, 1, 0, 0], 1, 0.0),
    ([2, 2, 2, 0], [2, 2, 0, 0], 2, 2 * 2 / 5),
    ([0, 0, 0, 0], [0, 0, 0, 0], 3, math.nan),
]


@pytest.mark.parametrize(("pred", "truth", "cls", "expected"), CASES)
def test_dice_table(pred, truth, cls, expected):
    dice = dice_from_counts(class_counts(np.array(pred), np.array(truth)))
    if math.isnan(expected):
        assert math.isnan(dice[cls])
    else:
        assert dice[cls] == pytest.approx(expected)


def test_counts_accumulate_over_slices():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 11, (2, 5, 8, 8))
    whole = class_counts(a, b)
    parts = sum(class_counts(a[i], b[i]) for i in range(5))
    assert np.array_equal(whole, parts) and whole[2].sum() == a.size


def test_region_dice_and_mean_leave_out_background_and_absent_regions():
    pred = np.array([0, 1, 1, 2, 0])
    truth = np.array([0, 1, 0, 2, 2])
    per = region_dice(class_counts(pred, truth))
    assert list(per) == list(contract.REGION_KEYS)
    assert per["m1"] == pytest.approx(2 / 3) and per["m2"] == pytest.approx(2 / 3)
    assert math.isnan(per["ic"])
    assert mean_region_dice(class_counts(pred, truth)) == pytest.approx(2 / 3)


def test_side_labels_split_each_region_by_hemisphere():
    classes = np.array([0, 1, 1, 10, 10, 5])
    hemis = np.array([1, 1, 2, 1, 2, 0])
    labels = side_labels(classes, hemis)
    assert labels.tolist() == [0, 1, 2, 19, 20, 0]
    dice = region_side_dice(class_counts(labels, labels, SIDE_CLASSES))
    assert dice["m1"] == {"r": 1.0, "l": 1.0} and dice["ic"] == {"r": 1.0, "l": 1.0}
    assert math.isnan(dice["m2"]["r"])
