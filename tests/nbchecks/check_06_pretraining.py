"""Checks on what notebooks/06_pretraining.py writes (smoke scale, objective brainmvp)."""

from __future__ import annotations

import json
import math
import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["scale"] == "smoke" and results["objective"] == "brainmvp"
    assert results["steps"] >= 4 and results["studies"] >= results["global_batch"]
    first, final = results["first"], results["final"]
    assert set(final) >= {"loss", "md", "cmr", "cl"}
    assert all(math.isfinite(v) for v in final.values())
    assert final["loss"] < first["loss"], (first, final)
    # view A's masked blocks are reconstructed better after training than before it
    assert results["masked_mse_last"]["recon_a"] < results["masked_mse_first"]["recon_a"]
    assert 0.0 <= results["data_wait_frac"] < 0.5
    # the templates of the pre-training modalities moved away from zero, the others did not
    learned = set(results["templates_learned"])
    assert {"t1", "t2"} <= learned, learned
    assert all(results["template_std"][m] > 0 for m in learned)
    # each learned template's correlation with its modality's mean image (chapter 05's measure)
    assert set(results["template_corr"]) == learned
    assert all(-1.0 <= r <= 1.0 for r in results["template_corr"].values())
    run = pathlib.Path(results["run_dir"])
    assert (run / "DONE").is_file() and (run / "metrics.csv").is_file()
    assert pathlib.Path(results["checkpoint"]).parent == run / "checkpoints"
    assert (
        json.loads((pathlib.Path(results["checkpoint"]) / "meta.json").read_text())["step"]
        == results["steps"]
    )
    assert results["n_samples_files"] >= 2
    for name in ("losses", "lr_throughput", "samples_last", "recon_across_training", "templates"):
        assert (out_dir / "figures" / f"{name}.png").stat().st_size > 5_000, name
