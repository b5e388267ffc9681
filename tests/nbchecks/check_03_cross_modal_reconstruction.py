"""Checks of notebook 03's results.json at smoke scale."""

from __future__ import annotations

import math
import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    # exactly floor(n_blocks * (1 - rate)) blocks kept in every study
    expected = math.floor(results["n_blocks"] * (1 - results["mask_rate"]) + 1e-9)
    assert results["n_kept_rule"] == expected
    assert results["n_kept_per_study"] and all(k == expected for k in results["n_kept_per_study"])
    assert results["n_blocks"] == (results["crop_size"] // results["block_size"]) ** 3
    assert results["steps"] >= 2
    # training the task alone lowers the reconstruction error of the masked region
    assert 0 < results["masked_mse_after"] < results["masked_mse_before"]
    assert results["cmr_final"] < results["cmr_first"]
    assert 0 < results["masked_mse_copy"] < 1
    assert pathlib.Path(results["run_dir"], "DONE").is_file()
    for name in ("modalities.png", "loss.png", "reconstruction.png", "views_rate0.8.png"):
        assert (out_dir / "figures" / name).stat().st_size > 1000, name
