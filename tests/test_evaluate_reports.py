"""Reports over run folders (paired differences by seed) and the robustness table and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmlib.evaluate.reports import paired_differences, summary_table
from mmlib.evaluate.tables import to_markdown
from mmlib.runs import collect_runs

torch.set_num_threads(1)


def _fake_run(
    root: Path, init: str, seed: int, dice: float, frac: float = 0.2, steps: int = 10
) -> None:
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
                "steps": steps,
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


def _scored_run(
    root: Path, init: str, seed: int, per_study: list[float], frac: float = 0.2
) -> None:
    """A finished segmentation run with a per-study ``test_scores.csv`` (as score_run writes)."""
    _fake_run(root, init, seed, float(np.mean(per_study)), frac)
    d = root / f"{init}-{seed}-{frac}"
    lines = ["study,dice_mean"] + [f"s{i},{v}" for i, v in enumerate(per_study)]
    (d / "test_scores.csv").write_text("\n".join(lines) + "\n")


def test_paired_differences_intervals_and_the_headline(tmp_path: Path) -> None:
    from mmlib.evaluate.reports import compare, headline, verdict
    from mmlib.evaluate.tables import paired_table

    rng = np.random.default_rng(0)
    study = rng.uniform(0.3, 0.7, 4)
    for s in range(3):
        _scored_run(tmp_path, "scratch", s, (study + 0.01 * s).tolist())
        _scored_run(tmp_path, "brainmvp", s, (study + 0.01 * s + [0.05, 0.07, 0.06][s]).tolist())
        _scored_run(tmp_path, "mim", s, (study + 0.01 * s + [0.08, 0.02, 0.05][s]).tolist())
    runs = collect_runs(tmp_path)
    diff = paired_differences(runs, "dice_mean").set_index("init")
    # brainmvp: +0.06 ± 0.01 over three seeds: t interval 0.06 ± 0.0248, resolved
    assert (diff.loc["brainmvp", "ci_lo"], diff.loc["brainmvp", "ci_hi"]) == pytest.approx(
        (0.06 - 0.024841, 0.06 + 0.024841), abs=1e-5
    )
    # mim: mean (0.05) above its sd (0.03), the old criterion, yet the interval includes zero
    assert diff.loc["mim", "mean_diff"] > diff.loc["mim", "sd_diff"]
    assert diff.loc["brainmvp", "resolved"] and not diff.loc["mim", "resolved"]
    # the per-study differences equal the per-seed ones (no study effect): the bootstrap
    # interval lies within the range of the per-seed differences
    assert (
        0.05 - 1e-9
        <= diff.loc["brainmvp", "boot_lo"]
        <= diff.loc["brainmvp", "boot_hi"]
        <= 0.07 + 1e-9
    )
    assert diff.loc["brainmvp", "values"][1] == pytest.approx(study.mean() + 0.01 + 0.07)
    assert diff.loc["brainmvp", "n_test"] == 4
    readable = paired_table(diff.reset_index())
    assert readable["verdict"].tolist() == ["resolved", "unresolved"]
    assert "95 % CI (seeds × studies)" in readable.columns
    head = headline(runs, "brats_ped", label_fraction=0.2)
    assert list(head) == [
        "task",
        "init",
        "baseline",
        "label_fraction",
        "seeds",
        "mean_diff",
        "ci95",
    ]
    assert head["seeds"] == [0, 1, 2] and head["mean_diff"] == pytest.approx(0.06)
    assert head["ci95"] == pytest.approx([0.06 - 0.024841, 0.06 + 0.024841], abs=1e-5)
    assert "**resolved**" in verdict(head) and "better" in verdict(head)
    mim = headline(runs, "brats_ped", init="mim")
    assert "**unresolved**" in verdict(mim)
    cmp, matrix = compare(runs, "brats_ped", "brainmvp")
    assert matrix is not None and matrix.shape == (3, 4) and cmp.resolved
    with pytest.raises(ValueError, match="no finished swin run"):
        compare(runs, "brats_ped", "swin")


def test_tables_and_captions_render_from_the_data(tmp_path: Path) -> None:
    from mmlib.evaluate.figures import (
        label_efficiency_caption,
        paired_caption,
        seeds_and_studies,
        show_figure,
    )
    from mmlib.evaluate.tables import html_table

    for s in range(2):
        for frac in (0.2, 0.4):
            _fake_run(tmp_path, "scratch", s, 0.4 + 0.1 * frac + 0.01 * s, frac)
            _fake_run(tmp_path, "brainmvp", s, 0.45 + 0.1 * frac + 0.02 * s, frac)
    runs = collect_runs(tmp_path)
    diff = paired_differences(runs, "dice_mean")
    html = html_table(diff, caption="paired").to_html()
    assert "<table" in html and "paired" in html and "0: 0.050, 1: 0.060" in html
    assert seeds_and_studies(runs) == "2 seeds (0, 1), 4 test studies per run"
    cap = paired_caption(diff, what="BraTS-PED-like.")
    assert cap.startswith("BraTS-PED-like.") and "Seeds per comparison: 2" in cap
    assert "test studies per run: 4" in cap
    eff = label_efficiency_caption(runs, "brats_ped")
    assert "20 %: 3 studies" in eff and "2 seeds per point" in eff and "10 steps" in eff
    # a budget in passes over the labelled studies: the steps of each point are named
    for s in range(2):
        _fake_run(tmp_path / "epochs", "scratch", s, 0.5, 0.8, steps=40)
    eff = label_efficiency_caption(collect_runs(tmp_path), "brats_ped")
    assert "20 %: 3 studies, 10 steps" in eff and "80 %: 3 studies, 40 steps" in eff
    assert "same number of passes" in eff and "every point trained" not in eff
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    out = show_figure(fig, "a <caption>")
    assert "<figcaption" in out.data and "a &lt;caption&gt;" in out.data
    assert not plt.fignum_exists(fig.number)


def test_classification_intervals(tmp_path: Path) -> None:
    from mmlib.evaluate.reports import classification_intervals
    from mmlib.evaluate.stats import wilson_interval

    d = tmp_path / "run"
    d.mkdir()
    y = [0, 0, 0, 1, 1, 1]
    p1 = [0.2, 0.6, 0.1, 0.9, 0.4, 0.8]
    rows = ["study,target,pred,p_lgg,p_hgg"] + [
        f"s{i},{t},{int(p > 0.5)},{1 - p},{p}" for i, (t, p) in enumerate(zip(y, p1))
    ]
    (d / "test_scores.csv").write_text("\n".join(rows) + "\n")
    runs = pd.DataFrame([{"task": "hgg_lgg", "init": "scratch", "seed": 0, "run": str(d)}])
    tab = classification_intervals(runs)
    row = tab.iloc[0]
    assert row["n_test"] == 6 and row["accuracy"] == pytest.approx(4 / 6)
    assert (row["accuracy_lo"], row["accuracy_hi"]) == pytest.approx(wilson_interval(4, 6))
    assert row["auc"] == pytest.approx(8 / 9) and row["auc_lo"] < row["auc"] <= row["auc_hi"]


def test_ablation_table_and_sentences(tmp_path: Path) -> None:
    from mmlib.evaluate.reports import can_tell, power_sentence
    from mmlib.evaluate.stats import paired_comparison, power_analysis
    from mmlib.evaluate.tables import ablation_table

    for s, base in enumerate((0.50, 0.60, 0.40)):
        _fake_run(tmp_path, "scratch", s, base)
        _fake_run(tmp_path, "brainmvp", s, base + [0.05, 0.07, 0.06][s])
    _fake_run(tmp_path, "cmr_only", 0, 0.52)
    _fake_run(tmp_path, "md_only", 0, 0.49)
    tab = ablation_table(collect_runs(tmp_path))
    assert tab["init"].tolist() == ["scratch", "cmr_only", "brainmvp", "md_only"]
    row = tab.set_index("init")
    assert (
        row.loc["brainmvp", "paper Dice (%)"] == "76.80"
        and row.loc["md_only", "paper Dice (%)"] == "–"
    )
    assert (
        row.loc["brainmvp", "verdict"] == "resolved"
        and row.loc["cmr_only", "verdict"] == "unresolved"
    )
    assert row.loc["cmr_only", "95 % CI"] == "–" and row.loc["cmr_only", "seeds"] == 1
    cmp = paired_comparison({0: 0.55, 1: 0.62, 2: 0.41}, {0: 0.5, 1: 0.6, 2: 0.4})
    text = power_sentence(power_analysis(cmp, np.array([[0.05, 0.04], [0.01, 0.03], [0.0, 0.02]])))
    assert f"**{power_analysis(cmp)['seeds_needed']} seeds**" in text and "test studies" in text
    cls = pd.DataFrame(
        [{"task": "hgg_lgg", "init": "scratch", "test studies": 6, "accuracy CI width": 0.6}]
    )
    small = pd.DataFrame([{"task": "hgg_lgg", "init": "brainmvp", "mean_diff": 0.1}])
    assert "cannot tell" in can_tell(cls, small)
    assert "cannot tell" not in can_tell(cls, small.assign(mean_diff=0.4))
    assert "no interval" in can_tell(cls.assign(**{"accuracy CI width": float("nan")}), small)


def test_template_replacement_runs_are_a_method_of_their_own(tmp_path: Path) -> None:
    """Chapter 10's runs with template replacement (same task, init, fraction, seed and fill as
    chapter 07's, finished later) neither replace the plain runs nor pair with scratch as
    "brainmvp" (the book's headline once compared them)."""
    for s in (0, 1):
        _fake_run(tmp_path, "scratch", s, 0.40)
        _fake_run(tmp_path, "brainmvp", s, 0.45)
    for s in (0, 1):
        d = tmp_path / f"rep-{s}"
        _fake_run(d, "brainmvp", s, 0.20)
        res = json.loads(next(d.rglob("results.json")).read_text())
        res["template_replacement"] = 3
        next(d.rglob("results.json")).write_text(json.dumps(res))
    runs = collect_runs(tmp_path)
    assert len(runs) == 6
    assert set(runs["init"]) == {"scratch", "brainmvp", "brainmvp+replacement"}
    diff = paired_differences(runs, "dice_mean").set_index("init")
    assert diff.loc["brainmvp", "mean_diff"] == pytest.approx(0.05)
    assert diff.loc["brainmvp+replacement", "mean_diff"] == pytest.approx(-0.20)


def test_a_table_of_comparisons_is_adjusted_for_how_many_it_makes(tmp_path: Path) -> None:
    """Two comparisons each with a paired-t p value near 0.04 (95 % intervals that exclude zero
    on their own) are not resolved in one table: Holm's adjustment doubles the smaller p value
    (0.028 -> 0.056); each row keeps what the interval alone said."""
    from mmlib.evaluate.stats import holm, paired_comparison

    assert holm([0.01, 0.04, 0.03, float("nan"), 0.005]) == pytest.approx(
        [0.03, 0.06, 0.06, float("nan"), 0.02], nan_ok=True
    )
    assert np.isnan(holm([float("nan")])).all() and holm([]).shape == (0,)
    study = np.array([0.4, 0.5, 0.6, 0.45])
    gains = {"cmr_only": [0.03, 0.06, 0.05], "md_only": [0.04, 0.06, 0.035]}
    for s in range(3):
        _scored_run(tmp_path, "scratch", s, (study + 0.01 * s).tolist())
        for init, g in gains.items():
            _scored_run(tmp_path, init, s, (study + 0.01 * s + g[s]).tolist())
    diff = paired_differences(collect_runs(tmp_path), "dice_mean").set_index("init")
    for init, g in gains.items():
        alone = paired_comparison(dict(enumerate(np.add(0.5, g))), dict(enumerate([0.5] * 3)))
        assert alone.resolved and 0.01 < alone.p_value < 0.05
        assert diff.loc[init, "resolved_unadjusted"]
    assert diff["p_holm"].tolist() == pytest.approx(holm(diff["p_paired_t"]).tolist())
    assert not diff["resolved"].any() and (diff["p_holm"] >= diff["p_paired_t"]).all()
