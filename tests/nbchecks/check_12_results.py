"""Checks of notebook 12's results.json at smoke scale (run after notebooks 07-10)."""

from __future__ import annotations

import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["n_runs"] >= 1 and results["minutes_fine_tuning"] > 0
    if "segmentation" in results:
        for key, v in results["segmentation"].items():
            assert 0.0 <= v["mean"] <= 1.0 and v["n_seeds"] >= 1, key
        assert all(
            k.split("/")[1].split("@")[0] != "scratch"
            for k in results.get("segmentation_paired", {})
        )
    assert (out_dir / "runs.csv").is_file()
