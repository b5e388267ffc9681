"""Checks of notebook 04's results.json at smoke scale."""

from __future__ import annotations

import math
import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert math.isclose(results["info_nce_by_hand"], results["info_nce_lib"], rel_tol=1e-5)
    assert results["temperature"] == 1.0 and results["steps"] >= 2
    n = results["n_studies"]
    assert n >= 4 and math.isclose(results["chance_top1"], 1 / n)
    # InfoNCE at temperature 1 lies between its floor for perfect pairs and a bit above log(B)
    lo = -math.log(math.e / (math.e + (n - 1) / math.e))
    for name, r in results["retrieval"].items():
        assert 0.0 <= r["top1"] <= 1.0, name
        assert -1.0 <= r["neg_cos"] <= 1.0 and -1.0 <= r["pos_cos"] <= 1.0, name
        assert lo - 1e-6 <= r["info_nce"] <= math.log(n) + 2.0, name
    # contrastive training separates the positive pairs more than the untrained encoder does
    assert results["retrieval"]["cl_only"]["gap"] > results["retrieval"]["untrained"]["gap"]
    assert (
        results["retrieval"]["cl_only"]["info_nce"] < results["retrieval"]["untrained"]["info_nce"]
    )
    for run in results["run_dirs"].values():
        assert pathlib.Path(run, "DONE").is_file()
    for name in ("views.png", "loss.png", "similarity.png", "reconstruction.png"):
        assert (out_dir / "figures" / name).stat().st_size > 1000, name
