"""Checks of notebook 07's results.json at smoke scale."""

from __future__ import annotations

import math
import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["n_seeds"] >= 2 and results["n_test"] >= 1 and results["n_labelled"] >= 1
    assert set(results["dice_mean"]) == set(results["inits"]) and "scratch" in results["dice_mean"]
    for v in results["dice_mean"].values():
        assert 0.0 <= v <= 1.0
    for init, p in results["paired"].items():
        assert init != "scratch" and p["n_seeds"] == results["n_seeds"]
        assert (
            math.isfinite(p["mean_diff"])
            and -1.0 <= p["mean_diff"] <= 1.0
            and 0 <= p["wins"] <= p["n_seeds"]
        )
    assert results["seconds_train"] > 0
    for task in ("isles", "mrbrains", "brats_met", "upenn_gbm", "vs_seg"):  # the other five
        for init in ("scratch", "brainmvp"):
            assert 0.0 <= results["other_tasks"][f"{task}/{init}"] <= 1.0, (task, init)
    assert all(pathlib.Path(r, "DONE").is_file() for r in results["runs"])
    for name in ("regions.png", "loss.png", "paired.png", "qualitative.png"):
        assert (out_dir / "figures" / name).stat().st_size > 1000, name
