"""Shipped evidence (mmlib.evaluate.evidence): runs exported once, read back by notebook 12."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmlib.cli import main
from mmlib.evaluate.evidence import (
    EVIDENCE_DIR,
    EvidenceError,
    evidence_comparison,
    init_name,
    load_evidence,
)
from mmlib.evaluate.stats import paired_comparison

STUDIES = ("PED-1", "PED-2", "PED-3")


def _run(root: Path, init: str, seed: int, scores: list[float], weights: str = "abc") -> None:
    run = root / f"{Path(init).name}-f020-s{seed}"
    run.mkdir(parents=True)
    res = {
        "task": "brats_ped",
        "kind": "segmentation",
        "init": init,
        "label_fraction": 0.2,
        "seed": seed,
        "fill": "template",
        "n_test": len(scores),
        "template_replacement": 0,
        "test": {"dice_mean": float(np.mean(scores))},
    }
    (run / "results.json").write_text(json.dumps(res))
    pd.DataFrame({"study": STUDIES, "dice_mean": scores}).to_csv(run / "test_scores.csv")
    if init != "scratch":
        ident = {"checkpoint": {"path": "x", "step": 1, "weights": weights}, "init": init}
        (run / "identity.json").write_text(json.dumps(ident))
    (run / "DONE").write_text("")


def _tree(root: Path) -> dict[str, dict[int, float]]:
    rng = np.random.default_rng(0)
    means: dict[str, dict[int, float]] = {"scratch": {}, "brainmvp": {}}
    for seed in (20, 21, 22, 23):
        base = rng.uniform(0.2, 0.4, 3)
        for init, scores in (
            ("scratch", base),
            ("/work/runs/pretrain/brainmvp-unet-e3c2ecd9", base + rng.uniform(0.0, 0.1, 3)),
        ):
            _run(root, init, seed, [float(v) for v in scores])
            means[init_name(init)][seed] = float(np.mean(scores))
    _run(root, "scratch", 5, [0.9, 0.9, 0.9])  # another seed: not shipped
    return means


def test_init_name_reads_a_pretraining_folder() -> None:
    assert init_name("/x/runs/pretrain/brainmvp-unet-e3c2ecd9") == "brainmvp"
    assert init_name("md_only-uniformer-0123abcd") == "md_only"
    assert init_name("scratch") == "scratch" and init_name("mim") == "mim"


def test_export_then_compare_gives_the_paired_interval(tmp_path: Path) -> None:
    means = _tree(tmp_path / "runs")
    out = tmp_path / "evidence"
    status = main(
        [
            "evaluate",
            "evidence",
            str(tmp_path / "runs"),
            "--name",
            "h",
            "--task",
            "brats_ped",
            "--fraction",
            "0.2",
            "--seeds",
            "20",
            "21",
            "22",
            "23",
            "--command",
            "mmlib finetune ...",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    runs, studies, prov = load_evidence("h", out)
    assert sorted(runs["seed"].unique()) == [20, 21, 22, 23] and len(runs) == 8
    assert set(runs["init"]) == {"scratch", "brainmvp"} and len(studies) == 24
    assert prov["checkpoint_weights"] == {"brainmvp": ["abc"]}
    assert prov["commands"] == ["mmlib finetune ..."]
    summary, cmp, per_study = evidence_comparison("h", evidence_dir=out)
    want = paired_comparison(means["brainmvp"], means["scratch"])
    assert summary["seeds"] == [20, 21, 22, 23] and summary["mean_diff"] == pytest.approx(
        want.mean_diff
    )
    assert summary["ci95"] == pytest.approx(list(want.ci95))
    assert per_study.shape == (4, 3) and np.allclose(per_study.mean(1), cmp.diffs)
    assert summary["checkpoint_weights"] == ["abc"]


def test_missing_runs_and_files_are_one_line_errors(tmp_path: Path, capsys) -> None:
    _tree(tmp_path / "runs")
    args = ["evaluate", "evidence", str(tmp_path / "runs"), "--name", "h", "--task", "brats_ped"]
    status = main([*args, "--fraction", "0.2", "--seeds", "5", "--out", str(tmp_path / "e")])
    assert status == 1
    assert "brainmvp has no finished run at seeds [5]" in capsys.readouterr().out
    assert not (tmp_path / "e" / "h.csv").exists()  # nothing half-written
    with pytest.raises(EvidenceError, match="no such evidence file"):
        load_evidence("nothing", tmp_path)


@pytest.mark.parametrize(
    "name", ["headline_heldout", "headline_heldout_1thread", "headline_heldout_300steps"]
)
def test_the_shipped_headline_evidence_reads(name: str) -> None:
    """The evidence notebook 12 states is in the package and consistent with itself."""
    summary, cmp, per_study = evidence_comparison(name)
    runs, _, prov = load_evidence(name)
    assert (EVIDENCE_DIR / f"{name}.json").is_file()
    assert summary["task"] == "brats_ped" and summary["seeds"] == prov["seeds"]
    assert len(cmp.seeds) >= 10 and per_study.shape[0] == len(cmp.seeds)
    assert prov["commands"] and prov["checkpoint_weights"]["brainmvp"]
