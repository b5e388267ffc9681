"""Checks of notebook 09's results.json at smoke scale."""

from __future__ import annotations

import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert len(results["fractions"]) >= 2 and results["n_seeds"] >= 2
    for f in results["fractions"]:
        assert f"scratch@{f}" in results["dice_mean"] and f"brainmvp@{f}" in results["dice_mean"]
    for a in results["ablations"]:
        key = f"{a}@{results['main_fraction']}"
        assert key in results["paired"] and results["paired"][key]["n_seeds"] == len(
            results["ablation_seeds"]
        )
    assert all(0.0 <= v <= 1.0 for v in results["dice_mean"].values())
    # a budget in passes over the labelled studies: more labels, at least as many steps
    budget = [results["budget"][k] for k in sorted(results["budget"], key=float)]
    assert [b["n_labelled"] for b in budget] == sorted(b["n_labelled"] for b in budget)
    assert [b["steps"] for b in budget] == sorted(b["steps"] for b in budget)
    if results["fraction_epochs"]:
        assert all(b["steps"] >= results["fraction_epochs"] * b["n_labelled"] / 2 for b in budget)
    assert (out_dir / "figures" / "label_efficiency.png").stat().st_size > 1000
    assert (out_dir / "figures" / "paired.png").stat().st_size > 1000
