"""Lesion-wise metrics (panoptica with the official BraTS parameters) on hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import label as cc_label
from scipy.optimize import linear_sum_assignment

from mmlib.evaluate.lesions import lesion_scores, region_lesion_scores

SHAPE = (40, 40, 40)


def _box(mask: np.ndarray, *ranges: tuple[int, int]) -> None:
    mask[tuple(slice(a, b) for a, b in ranges)] = True


def _official(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The official definition, written independently: 26-connected components, a one-to-one
    matching of maximal summed Dice among overlapping pairs, Dice of the matched pairs averaged,
    F1 = tp / (tp + fp/2 + fn/2); zero matches give 0 (NaN when neither has a lesion)."""
    full = np.ones((3, 3, 3))
    lp, n_p = cc_label(pred, structure=full)
    lr, n_r = cc_label(ref, structure=full)
    dsc = np.zeros((n_p, n_r))
    for i in range(1, n_p + 1):
        for j in range(1, n_r + 1):
            a, b = lp == i, lr == j
            dsc[i - 1, j - 1] = 2 * (a & b).sum() / (a.sum() + b.sum())
    rows, cols = linear_sum_assignment(-dsc) if dsc.size else ([], [])
    matched = [dsc[i, j] for i, j in zip(rows, cols) if dsc[i, j] > 1e-6]
    tp = len(matched)
    fp, fn = n_p - tp, n_r - tp
    if tp == 0:
        nan = n_p + n_r == 0
        return {
            "lesion_dice": math.nan if nan else 0.0,
            "lesion_f1": math.nan if nan else 0.0,
            "tp": 0,
            "fp": fp,
            "fn": fn,
        }
    return {
        "lesion_dice": float(np.mean(matched)),
        "lesion_f1": tp / (tp + fp / 2 + fn / 2),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _same(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(want) <= set(got)
    for k, v in want.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(got[k]), (k, got[k])
        else:
            assert got[k] == pytest.approx(v, abs=1e-9), (k, got[k], v)


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray, dict[str, float]]]:
    z = np.zeros(SHAPE, bool)
    cases = {}
    # split: one reference lesion predicted as two pieces; the larger piece is matched
    ref, pred = z.copy(), z.copy()
    _box(ref, (2, 10), (2, 10), (2, 10))
    _box(pred, (2, 10), (2, 10), (2, 5))
    _box(pred, (2, 10), (2, 10), (6, 10))
    cases["split"] = (
        pred,
        ref,
        {"tp": 1, "fp": 1, "fn": 0, "lesion_dice": 2 * 256 / (256 + 512), "lesion_f1": 1 / 1.5},
    )
    # merged: two reference lesions covered by one predicted lesion; one to one, so one is missed
    ref, pred = z.copy(), z.copy()
    _box(ref, (20, 24), (2, 6), (2, 6))
    _box(ref, (26, 30), (2, 6), (2, 6))
    _box(pred, (20, 30), (2, 6), (2, 6))
    cases["merged"] = (
        pred,
        ref,
        {"tp": 1, "fp": 0, "fn": 1, "lesion_dice": 2 * 64 / (160 + 64), "lesion_f1": 1 / 1.5},
    )
    # missed and false lesions next to a perfect one
    ref, pred = z.copy(), z.copy()
    _box(ref, (2, 6), (30, 34), (2, 6))
    _box(pred, (2, 6), (30, 34), (2, 6))
    _box(ref, (30, 34), (30, 34), (30, 34))
    _box(pred, (12, 15), (20, 23), (30, 33))
    cases["missed_false"] = (
        pred,
        ref,
        {"tp": 1, "fp": 1, "fn": 1, "lesion_dice": 1.0, "lesion_f1": 0.5},
    )
    # everything at once: lesion Dice is the mean over matched pairs, F1 counts all lesions
    ref = cases["split"][1] | cases["merged"][1] | cases["missed_false"][1]
    pred = cases["split"][0] | cases["merged"][0] | cases["missed_false"][0]
    cases["all"] = (
        pred,
        ref,
        {
            "tp": 3,
            "fp": 2,
            "fn": 2,
            "lesion_dice": (2 / 3 + 4 / 7 + 1.0) / 3,
            "lesion_f1": 3 / (3 + 1 + 1),
        },
    )
    one = z.copy()
    _box(one, (5, 9), (5, 9), (5, 9))
    two = one.copy()
    _box(two, (20, 25), (20, 25), (20, 25))
    cases["empty_reference"] = (
        one,
        z,
        {"tp": 0, "fp": 1, "fn": 0, "lesion_dice": 0.0, "lesion_f1": 0.0},
    )
    cases["empty_prediction"] = (
        z,
        two,
        {"tp": 0, "fp": 0, "fn": 2, "lesion_dice": 0.0, "lesion_f1": 0.0},
    )
    cases["both_empty"] = (
        z,
        z,
        {"tp": 0, "fp": 0, "fn": 0, "lesion_dice": math.nan, "lesion_f1": math.nan},
    )
    return cases


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_hand_built_cases_match_the_official_definitions(name: str) -> None:
    pred, ref, want = CASES[name]
    got = lesion_scores(pred, ref, (1.0, 1.0, 1.0))
    _same(got, want)  # the numbers worked out by hand
    _same(got, _official(pred, ref))  # and an independent implementation of the definition


def test_random_lesions_match_the_independent_implementation() -> None:
    rng = np.random.default_rng(3)
    for _ in range(4):
        ref = np.zeros((24, 24, 24), bool)
        pred = np.zeros_like(ref)
        for mask in (ref, pred):
            for _ in range(rng.integers(0, 5)):
                c = rng.integers(2, 20, 3)
                r = rng.integers(1, 4, 3)
                _box(mask, *[(int(a - b), int(a + b)) for a, b in zip(c, r)])
        _same(lesion_scores(pred, ref), _official(pred, ref))


def test_region_scores_and_empty_reference_flag() -> None:
    pred, ref, _ = CASES["split"]
    z = np.zeros_like(ref)
    out = region_lesion_scores(np.stack([pred, pred]), np.stack([ref, z]), ["et", "tc"])
    assert out["tp_et"] == 1 and out["reference_empty_et"] == 0
    assert out["reference_empty_tc"] == 1 and out["fp_tc"] == 2 and out["lesion_dice_tc"] == 0.0
    with pytest.raises(ValueError, match="names"):
        region_lesion_scores(np.stack([pred]), np.stack([ref]), ["et", "tc"])
    with pytest.raises(ValueError, match="should both be"):
        lesion_scores(pred, ref[:-1])
