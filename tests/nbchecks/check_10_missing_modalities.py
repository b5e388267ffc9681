"""Checks of notebook 10's results.json at smoke scale."""

from __future__ import annotations

import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["n_subsets"] == 15
    assert {"brainmvp/template", "brainmvp/zero", "scratch/zero"} <= set(results["dice_full"])
    assert "scratch/template" not in results["dice_full"]  # scratch has no templates
    # with all modalities present, the fill is never used: template and zero must agree
    assert (
        abs(results["dice_full"]["brainmvp/template"] - results["dice_full"]["brainmvp/zero"])
        < 1e-6
    )
    assert all(0.0 <= v <= 1.0 for v in results["dice_mean_over_subsets"].values())
    assert results["template_minus_zero_brainmvp"] is not None
    assert (out_dir / "figures" / "template_fill.png").stat().st_size > 1000
    assert (out_dir / "subsets.csv").is_file()
    # section 4: template-replacement fine-tuning, paired by seed on every subset
    rep = results["replacement"]
    assert rep["template_replacement"] > 0 and len(rep["seeds"]) >= 1
    assert len(rep["dice_with"]) == len(rep["dice_without"]) == 15
    assert all(0.0 <= v <= 1.0 for v in [*rep["dice_with"].values(), *rep["dice_without"].values()])
    assert set(rep["gain_mean_over_subsets_per_seed"]) == {f"s{s}" for s in rep["seeds"]}
    assert len(rep["runs"]) == 2 * len(rep["seeds"])
    assert (out_dir / "figures" / "replacement.png").stat().st_size > 1000
    assert (out_dir / "replacement.csv").is_file()
