"""Scoring a trained fine-tuning run (score_run), the TRAINED/DONE markers, grids that resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from downstream_fixtures import tiny_store

from mmlib.engine.finetune import DONE, TRAINED, finetune
from mmlib.evaluate.grid import finetune_grid
from mmlib.evaluate.scoring import load_network, score_run

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_store(tmp_path_factory.mktemp("store"), n_seg=5, n_cls=0)


def test_score_run_writes_scores_once_and_a_trained_run_is_not_retrained(
    store: Path, tmp_path: Path
) -> None:
    over = {
        "data.store": str(store),
        "run.root": str(tmp_path),
        "train.steps": 2,
        "eval.hd95": False,
    }
    run = finetune("smoke", over, progress=False)
    # trained, not scored: the summary is there, test scores are not
    assert (run / TRAINED).is_file() and not (run / DONE).is_file()
    trained = json.loads((run / "results.json").read_text())
    assert "test" not in trained and trained["steps"] == 2 and trained["n_test"] == 2
    assert not (run / "test_scores.csv").exists()
    # a run killed between training and scoring is scored, not retrained
    weights = (run / "model.safetensors").stat().st_mtime_ns
    assert finetune("smoke", over, progress=False) == run
    assert (run / "model.safetensors").stat().st_mtime_ns == weights
    res = score_run(run)
    assert (run / DONE).is_file()
    assert list(res)[:3] == ["task", "kind", "init"] and list(res)[-2:] == ["test", "seconds"]
    assert set(res["seconds"]) == {"train", "eval", "total", "per_step"}
    scores = pd.read_csv(run / "test_scores.csv")
    assert len(scores) == res["n_test"] == 2
    assert res["test"]["dice_mean"] == pytest.approx(float(scores["dice_mean"].mean()))
    assert res["test"]["dice_WT_sd"] == pytest.approx(float(scores["dice_WT"].std(ddof=0)))
    assert len(list((run / "predictions").glob("*.npz"))) == 1  # eval.n_predictions at smoke
    assert json.loads((run / "results.json").read_text()) == json.loads(
        json.dumps(res, default=str)
    )
    # scored once: a second call reads the folder back
    done = (run / DONE).stat().st_mtime_ns
    assert score_run(run)["test"] == res["test"] and (run / DONE).stat().st_mtime_ns == done
    # the network rebuilt from the folder scores the same
    net, spec, templates, cfg = load_network(run)
    assert spec.name == "brats_ped" and templates is None and not net.training
    assert cfg["train"]["steps"] == 2


def test_grid_trains_and_scores_each_cell_and_reuses_them(store: Path, tmp_path: Path) -> None:
    over = {
        "data.store": str(store),
        "run.root": str(tmp_path),
        "train.steps": 2,
        "eval.hd95": False,
    }
    runs = finetune_grid("smoke", ["scratch"], [0.5, 1.0], [0, 1], over, progress=False)
    assert len(runs) == len(set(runs)) == 4 and all((r / DONE).is_file() for r in runs)
    assert [json.loads((r / "results.json").read_text())["seed"] for r in runs] == [0, 1, 0, 1]
    stamps = [(r / DONE).stat().st_mtime_ns for r in runs]
    assert finetune_grid("smoke", ["scratch"], [0.5, 1.0], [0, 1], over, progress=False) == runs
    assert [(r / DONE).stat().st_mtime_ns for r in runs] == stamps


def test_score_run_and_load_network_need_a_trained_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not trained"):
        score_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a trained fine-tuning run"):
        load_network(tmp_path)


def test_a_grid_in_two_workers_gives_the_runs_of_one_process(store: Path, tmp_path: Path) -> None:
    # the test process runs at 1 thread (above), as does each of the two workers: the same
    # floating-point path, so the same cells must give the same weights and scores
    over = {"data.store": str(store), "train.steps": 2, "eval.hd95": False}
    one, two = (
        finetune_grid(
            "smoke",
            ["scratch"],
            [0.5],
            [0, 1, 2],
            {**over, "run.root": str(tmp_path / name)},
            progress=False,
            workers=workers,
        )
        for name, workers in (("a", 1), ("b", 2))
    )
    assert [r.name for r in two] == [r.name for r in one]  # cells in order, same identities
    for a, b in zip(one, two):
        ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
        assert rb["threads"] == ra["threads"] == 1 and (b / DONE).is_file()
        assert rb["test"]["dice_mean"] == ra["test"]["dice_mean"]
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    # a failing cell names itself; the others are kept
    with pytest.raises(FileNotFoundError) as err:
        finetune_grid(
            "smoke",
            ["scratch", str(tmp_path / "no-such-checkpoint")],
            [0.5],
            [0],
            {**over, "run.root": str(tmp_path / "c")},
            progress=False,
            workers=2,
        )
    assert "no-such-checkpoint" in str(err.value) or any(
        "no-such-checkpoint" in n for n in getattr(err.value, "__notes__", [])
    )


def test_label_efficiency_grid_budgets_passes_and_reuses_runs_of_that_budget(
    store: Path, tmp_path: Path
) -> None:
    from mmlib.evaluate.grid import label_efficiency_grid

    over = {"data.store": str(store), "run.root": str(tmp_path), "eval.hd95": False}
    [main] = finetune_grid("smoke", ["scratch"], [0.5], [0], over, progress=False)
    res = json.loads((main / "results.json").read_text())
    # the epochs that give the main run's steps exactly (batch 2 at smoke)
    epochs = res["steps"] * 2 / res["n_labelled"]
    runs = label_efficiency_grid(
        "smoke", ["scratch"], [0.5, 1.0], [0], over, epochs=epochs, reuse=[main], progress=False
    )
    assert runs[0] == main  # the same budget: not trained again
    full = json.loads((runs[1] / "results.json").read_text())
    assert full["n_labelled"] > res["n_labelled"]
    assert full["steps"] == -(-epochs * full["n_labelled"] // 2)  # ceil: more labels, more steps
    # another budget: the main fraction is trained again under it
    again = label_efficiency_grid(
        "smoke", ["scratch"], [0.5], [0], over, epochs=epochs + 2, reuse=[main], progress=False
    )
    assert (
        again[0] != main
        and json.loads((again[0] / "results.json").read_text())["steps"] > res["steps"]
    )


def test_grid_workers_come_from_the_plan_unless_the_machine_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mmlib.evaluate.grid import grid_workers
    from mmlib.tasks.plan import PLAN

    monkeypatch.delenv("MMLIB_GRID_WORKERS", raising=False)
    assert grid_workers("demo") == PLAN["demo"]["grid_workers"] == 2
    assert grid_workers("smoke") == 1 and grid_workers("my.yaml") == 1
    monkeypatch.setenv("MMLIB_GRID_WORKERS", "1")
    assert grid_workers("demo") == 1
    monkeypatch.setenv("MMLIB_GRID_WORKERS", "two")
    with pytest.raises(ValueError, match="MMLIB_GRID_WORKERS should be a positive integer"):
        grid_workers("demo")


def test_the_other_tasks_train_the_plans_other_steps() -> None:
    """The nine other tasks' one-seed runs: the preset's steps unless the plan sets
    ``other_steps`` (demo), with the task always set; every scale's plan has the key."""
    from mmlib.engine.config import load_config
    from mmlib.tasks.plan import PLAN, other_overrides, plan

    assert all("other_steps" in grid for grid in PLAN.values())
    assert other_overrides(plan("smoke"), "isles") == {"task": "isles"}
    demo = other_overrides(plan("demo"), "vs_seg")
    assert demo == {"task": "vs_seg", "train.steps": PLAN["demo"]["other_steps"]}
    assert load_config("demo", demo, kind="finetune")["train"]["steps"] == 60
