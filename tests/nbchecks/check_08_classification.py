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
    assert all(pathlib.Path(r, "DONE").is_file() for r in results["runs"])
