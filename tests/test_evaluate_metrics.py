"""Dice/HD95 edge cases (empty prediction, empty ground truth) and classification metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmlib.evaluate.classification import classification_scores
from mmlib.evaluate.segmentation import dice, hd95, segmentation_scores


def _cube(lo: int, hi: int, n: int = 16) -> torch.Tensor:
    m = torch.zeros(n, n, n)
    m[lo:hi, lo:hi, lo:hi] = 1
    return m


def test_dice_values_and_empty_rules() -> None:
    gt = torch.stack([_cube(2, 6), _cube(2, 6), torch.zeros(16, 16, 16), torch.zeros(16, 16, 16)])
    pr = torch.stack([_cube(2, 6), torch.zeros(16, 16, 16), torch.zeros(16, 16, 16), _cube(0, 1)])
    d = dice(pr[:, None], gt[:, None])[:, 0]
    assert d.tolist() == [1.0, 0.0, 1.0, 0.0]
    half = torch.zeros(16, 16, 16)
    half[2:6, 2:6, 2:4] = 1
    assert dice(half[None, None], _cube(2, 6)[None, None]).item() == pytest.approx(
        2 * 32 / (64 + 32)
    )


def test_hd95_values_and_empty_rules() -> None:
    gt = _cube(2, 6)
    shifted = _cube(4, 8)
    z = torch.zeros(16, 16, 16)
    pr = torch.stack([gt, shifted, z, z, gt])
    tg = torch.stack([gt, gt, gt, z, z])
    h = hd95(pr[:, None], tg[:, None], spacing=2.0)[:, 0]
    assert h[0] == 0.0
    assert 0 < h[1] <= 2.0 * math.sqrt(3 * 2**2) + 1e-4  # at most the shift diagonal, in mm
    diag = math.sqrt(3 * (16 * 2.0) ** 2)
    assert h[2] == pytest.approx(diag)  # empty prediction
    assert h[3] == 0.0  # both empty
    assert h[4] == pytest.approx(diag)  # empty ground truth, something predicted
    assert hd95(z[None, None], gt[None, None], empty_distance=373.13).item() == pytest.approx(
        373.13
    )
    assert not torch.isnan(h).any()


def test_segmentation_scores_records() -> None:
    rows = segmentation_scores(
        _cube(2, 6)[None, None].repeat(1, 2, 1, 1, 1),
        _cube(2, 6)[None, None].repeat(1, 2, 1, 1, 1),
        ["a", "b"],
    )
    assert rows == [{"dice_a": 1.0, "dice_b": 1.0, "dice_mean": 1.0, "hd95_a": 0.0, "hd95_b": 0.0}]
    with pytest.raises(ValueError, match="region names"):
        segmentation_scores(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4), ["a"])
    with pytest.raises(ValueError, match="binary masks"):
        dice(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))


def test_classification_scores() -> None:
    y = [0, 0, 1, 1]
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    s = classification_scores(y, p)
    assert s["accuracy"] == 0.75 and s["balanced_accuracy"] == 0.75 and s["auc"] == 1.0
    assert s["f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    one = classification_scores([1, 1], np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert math.isnan(one["auc"]) and one["accuracy"] == 0.5
    three = classification_scores([0, 1, 2], np.eye(3))
    assert three["auc"] == 1.0 and three["f1"] == 1.0
    with pytest.raises(ValueError, match="should be"):
        classification_scores([0, 1], np.ones((3, 2)) / 2)
