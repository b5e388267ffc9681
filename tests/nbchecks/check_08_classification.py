"""Checks of notebook 08's results.json at smoke scale."""

from __future__ import annotations

import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["tasks"], "no classification task ran"
    for t in results["tasks"]:
        for init in results["inits"]:
            acc = results["accuracy"][f"{t}/{init}"]
            assert 0.0 <= acc <= 1.0
        assert results["n_test"][t] >= 1
    assert results["seconds_train"] > 0
    assert set(results["tasks"]) == {"hgg_lgg", "adni", "adhd200", "abide"}
    for t in ("adni", "adhd200", "abide"):  # the T1 tasks: a linear baseline with intervals
        lo, hi = results["baseline"][t]["auc_ci"]
        assert 0.0 <= results["baseline"][t]["accuracy"] <= 1.0
        # DeLong's interval needs two test studies of each class: none (null) otherwise
        assert (lo is None and hi is None) or 0.0 <= lo <= hi <= 1.0, (t, lo, hi)
        acc_lo, acc_hi = results["baseline"][t]["accuracy_ci"]
        assert 0.0 <= acc_lo <= results["baseline"][t]["accuracy"] <= acc_hi <= 1.0
    assert len(results["intervals"]) == len(results["runs"])
    assert len(results["reader_problems"]) == 0  # the default cohort writes no unusable entries
    assert all(pathlib.Path(r, "DONE").is_file() for r in results["runs"])
