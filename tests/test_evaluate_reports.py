"""Reports over run folders (paired differences by seed) and the robustness table and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmlib.evaluate.reports import paired_differences, summary_table, to_markdown
from mmlib.runs import collect_runs

torch.set_num_threads(1)


def _fake_run(root: Path, init: str, seed: int, dice: float, frac: float = 0.2) -> None:
    """A run folder as finetune writes it (results.json + DONE), with given numbers."""
    d = root / f"{init}-{seed}-{frac}"
    d.mkdir(parents=True)
    (d / "results.json").write_text(
        json.dumps(
            {
                "task": "brats_ped",
                "kind": "segmentation",
                "init": init,
                "label_fraction": frac,
                "seed": seed,
                "fill": "zero",
                "n_labelled": 3,
                "n_test": 4,
                "steps": 10,
                "test": {"dice_mean": dice},
                "seconds": {"train": 1.0, "per_step": 0.1},
            }
        )
    )
    (d / "DONE").write_text("x")


def test_summary_and_paired(tmp_path: Path) -> None:
    base = {0: 0.50, 1: 0.60, 2: 0.40}
    gain = {0: 0.05, 1: 0.07, 2: 0.06}
    for s in base:
        _fake_run(tmp_path, "scratch", s, base[s])
        _fake_run(tmp_path, "brainmvp", s, base[s] + gain[s])
        _fake_run(tmp_path, "mim", s, base[s] + (0.1 if s == 0 else -0.1))
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "results.json").write_text("{}")
    runs = collect_runs(tmp_path)
    assert len(runs) == 9
    tab = summary_table(runs, "dice_mean")
    row = tab[tab["init"] == "scratch"].iloc[0]
    assert (
        row["mean"] == pytest.approx(0.5)
        and row["sd"] == pytest.approx(0.1)
        and row["n_seeds"] == 3
    )
    diff = paired_differences(runs, "dice_mean").set_index("init")
    # the seed spread of scratch (0.1) is large, but the paired differences are tight
    assert diff.loc["brainmvp", "mean_diff"] == pytest.approx(0.06)
    assert diff.loc["brainmvp", "sd_diff"] == pytest.approx(0.01)
    assert diff.loc["brainmvp", "resolved"] and diff.loc["brainmvp", "wins"] == 3
    assert diff.loc["brainmvp", "p_paired_t"] < 0.05
    assert not diff.loc["mim", "resolved"] and diff.loc["mim", "wins"] == 1
    assert diff.loc["brainmvp", "diffs"] == pytest.approx({0: 0.05, 1: 0.07, 2: 0.06})
    assert "brainmvp" in to_markdown(tab)
    with pytest.raises(ValueError, match="not in the runs"):
        summary_table(runs, "accuracy")


def test_robustness_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from downstream_fixtures import tiny_store

    from mmlib.cli import main
    from mmlib.engine.finetune import finetune
    from mmlib.evaluate.robustness import subset_robustness
    from mmlib.evaluate.scoring import score_run

    store = tiny_store(tmp_path / "store", n_seg=5, n_cls=0)
    run = finetune(
        "smoke",
        {
            "data.store": str(store),
            "run.root": str(tmp_path / "runs"),
            "train.steps": 2,
            "eval.hd95": False,
        },
        progress=False,
    )
    score_run(run)
    table = subset_robustness(run, progress=False)
    assert len(table) == 15 and set(table["fill"]) == {"zero"}  # scratch has no templates
    assert table["n_modalities"].tolist()[0] == 4 and np.isfinite(table["dice_mean"]).all()
    full = json.loads((run / "results.json").read_text())["test"]["dice_mean"]
    assert table.iloc[0]["dice_mean"] == pytest.approx(
        full, abs=1e-6
    )  # all four = the plain test score
    assert (run / "robustness.csv").is_file()
    assert main(["evaluate", "report", str(tmp_path / "runs")]) == 0
    assert "mean ± sd" in capsys.readouterr().out
    assert main(["evaluate", "report", str(tmp_path / "nothing")]) == 1
