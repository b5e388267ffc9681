"""Checks of notebook 12's results.json at smoke scale (run after notebooks 07-10)."""

from __future__ import annotations

import json
import pathlib

HEADLINE = ["task", "init", "baseline", "label_fraction", "seeds", "mean_diff", "ci95"]


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["n_runs"] >= 1 and results["minutes_fine_tuning"] > 0
    if "segmentation" in results:
        for key, v in results["segmentation"].items():
            assert 0.0 <= v["mean"] <= 1.0 and v["n_seeds"] >= 1, key
        assert all(
            k.split("/")[1].split("@")[0] != "scratch"
            for k in results.get("segmentation_paired", {})
        )
        for key, v in results.get("segmentation_paired", {}).items():
            lo, hi = v["ci95"]
            if lo is not None:  # one seed: no interval, never resolved
                assert lo <= v["mean_diff"] <= hi, key
                # the interval alone, then Holm's adjustment over the table's comparisons
                assert v["resolved_unadjusted"] == (lo > 0 or hi < 0), key
                assert v["resolved"] == (v["resolved_unadjusted"] and v["p_holm"] < 0.05), key
                assert v["p_holm"] >= v["p_paired_t"], key
            else:
                assert not v["resolved"], key
    head = results["headline"]
    assert list(head) == HEADLINE
    assert head["init"] == "brainmvp" and head["baseline"] == "scratch"
    assert len(head["seeds"]) >= 2 and len(head["ci95"]) == 2
    assert head["ci95"][0] <= head["mean_diff"] <= head["ci95"][1]
    assert results["headline_power"]["n_seeds"] == len(head["seeds"])
    assert (out_dir / "runs.csv").is_file()
    # the prose states the verdict the numbers give (rendered from results, not written)
    executed = out_dir.parent / "12_results.ipynb"
    if executed.is_file():
        text = "".join(
            "".join(o.get("data", {}).get("text/markdown", ""))
            for c in json.loads(executed.read_text())["cells"]
            for o in c.get("outputs", [])
        )
        resolved = head["ci95"][0] > 0 or head["ci95"][1] < 0
        assert ("**resolved**" in text) == resolved and ("**unresolved**" in text) != resolved
