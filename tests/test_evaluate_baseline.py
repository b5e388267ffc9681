"""The linear volume baseline and the bootstrap intervals of classification scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from downstream_fixtures import tiny_store

from mmlib.data.store import Store
from mmlib.evaluate.baseline import regional_fractions, volume_baseline
from mmlib.evaluate.classification import scores_with_intervals
from mmlib.evaluate.stats import accuracy_auc_intervals


def test_regional_fractions_count_each_band_per_box() -> None:
    v = np.zeros((6, 6, 6), np.float32)
    v[:3] = 0.5  # left half GM-like, right half background (below the first band)
    f = regional_fractions(v, boxes=(2, 1, 1))
    assert f.shape == (2 * 3,)
    assert np.allclose(f[:3], [0, 1, 0]) and np.allclose(f[3:], [0, 0, 0])
    with pytest.raises(ValueError, match="cannot be cut"):
        regional_fractions(np.zeros((2, 6, 6)), boxes=(3, 3, 3))


def test_accuracy_auc_intervals_cover_the_estimate_and_shrink_with_n() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200):
        y = np.arange(n) % 2
        p1 = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1)
        prob = np.stack([1 - p1, p1], 1)
        ci = accuracy_auc_intervals(y, prob)
        acc = float(((p1 > 0.5) == y).mean())
        assert ci["accuracy"][0] <= acc <= ci["accuracy"][1]
        widths.append(ci["auc"][1] - ci["auc"][0])
    assert widths[1] < widths[0] / 2
    perfect = accuracy_auc_intervals([0, 1, 0, 1], np.array([[1, 0], [0, 1], [1, 0], [0, 1.0]]))
    assert perfect["auc"] == (1.0, 1.0)  # DeLong: no spread
    assert perfect["accuracy"] == pytest.approx((0.5101, 1.0), abs=1e-4)  # Wilson 4/4
    frame = pd.DataFrame({"target": [0, 1, 1], "p_A": [0.9, 0.2, 0.6], "p_B": [0.1, 0.8, 0.4]})
    s = scores_with_intervals(frame, ["A", "B"], n_boot=200)
    assert s["accuracy"] == pytest.approx(2 / 3) and len(s["auc_ci"]) == 2
    with pytest.raises(ValueError, match="accuracy_auc_intervals"):
        accuracy_auc_intervals([0, 1], np.ones((3, 2)) / 2)


def test_volume_baseline_on_a_store(tmp_path: Path) -> None:
    store = Store(tiny_store(tmp_path / "s"))
    res = volume_baseline(store, "hgg_lgg", n_boot=100)
    assert res["task"] == "hgg_lgg" and res["n_test"] == len(res["predictions"]) >= 2
    assert 0 <= res["accuracy"] <= 1 and res["n_train"] + res["n_test"] == 6
    assert list(res["predictions"].columns) == ["study", "target", "p_LGG", "p_HGG"]
