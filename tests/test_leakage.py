"""Downstream test studies stay out of pre-training: the check, roles from curate, the init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from downstream_fixtures import tiny_store
from test_layouts import make_brats2021

from mmlib.cli import main
from mmlib.data.curate import curate
from mmlib.data.layouts import discover
from mmlib.data.store import Store
from mmlib.engine.finetune import finetune_split
from mmlib.engine.initialise import pretraining_overrides, resolve_init
from mmlib.engine.pretrain import pretrain
from mmlib.tasks import check_pretrain_studies, task_test_studies

FAST = {
    "train.max_steps": 1,
    "schedule.epochs": 1,
    "checkpoint.every": 1,
    "samples.n": 1,
    "log.tensorboard": False,
}


@pytest.fixture(scope="module")
def task_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A role-less store (what curate writes for real data) with two tasks' studies."""
    return tiny_store(tmp_path_factory.mktemp("task"), n_seg=5, n_cls=4)


def test_task_test_studies_are_the_fine_tuning_test_splits(task_store: Path) -> None:
    store = Store(task_store)
    tests = task_test_studies(store.manifest)
    assert set(tests) == {"brats_ped", "hgg_lgg"}
    for task, test in tests.items():
        cfg = {"task": task, "data": {"subset_seed": 7, "label_fraction": 1.0, "max_test": None}}
        assert finetune_split(cfg, store).test == test


def test_check_refuses_test_studies_and_says_how_to_fix(task_store: Path) -> None:
    manifest = Store(task_store).manifest
    tests = task_test_studies(manifest)
    train_only = [s for s in manifest["study"] if not any(s in t for t in tests.values())]
    check_pretrain_studies(train_only, manifest)  # training studies of a task are allowed
    with pytest.raises(ValueError) as err:
        check_pretrain_studies(manifest["study"], manifest)
    msg = str(err.value)
    assert "brats_ped" in msg and tests["brats_ped"][0] in msg and "--role pretrain" in msg
    assert "data.studies" in msg


def test_pretraining_a_role_less_task_store_is_refused(task_store: Path, tmp_path: Path) -> None:
    over = {"data.store": str(task_store), "run.root": str(tmp_path), **FAST}
    with pytest.raises(ValueError, match="downstream test splits"):
        pretrain("smoke", over, progress=False)
    # choosing training studies only is the documented way out
    train = task_test_studies(Store(task_store).manifest)
    keep = [s for s in Store(task_store).studies() if not any(s in t for t in train.values())]
    run = pretrain("smoke", {**over, "data.studies": keep}, progress=False)
    assert (run / "DONE").is_file()


def test_curate_role_sets_roles_and_pretraining_then_samples_only_those(tmp_path: Path) -> None:
    src = make_brats2021(tmp_path / "BraTS2021", n=2)
    out = tmp_path / "store"
    with pytest.raises(ValueError, match="choose one of pretrain, downstream"):
        curate(discover(src), out, 4.0, role="finetune", progress=False, qc_report=False)
    assert (
        main(
            [
                "curate",
                str(src),
                "--out",
                str(out),
                "--spacing",
                "4",
                "--quiet",
                "--no-qc",
                "--role",
                "pretrain",
            ]
        )
        == 0
    )
    assert set(Store(out).manifest["role"]) == {"pretrain"}
    # studies already in the store get the new role without being curated again
    first = (out / "studies" / "BraTS2021_00000" / "t1.npy").stat().st_mtime_ns
    report = curate(discover(src), out, 4.0, role="downstream", progress=False, qc_report=False)
    assert len(report.skipped) == 2 and set(Store(out).manifest["role"]) == {"downstream"}
    assert (out / "studies" / "BraTS2021_00000" / "t1.npy").stat().st_mtime_ns == first
    with pytest.raises(SystemExit):
        main(["curate", str(src), "--out", str(out), "--role", "finetune"])


def test_objective_init_pretrains_on_the_pretraining_store(
    task_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``init=<objective>`` with a task store: pre-training uses the scale's shared store."""
    from mmlib.data.ensure import _make_store, _sha1

    monkeypatch.setenv("MMLIB_WORK", str(tmp_path / "work"))
    cohort = tmp_path / "work" / "smoke" / "cohort"
    make_brats2021(cohort / "BraTS2021", n=2)
    (cohort / "cohort.json").write_text(
        json.dumps(
            {
                "sources": [
                    {"name": "b", "path": "BraTS2021", "layout": "brats2021", "role": "pretrain"}
                ]
            }
        )
    )
    (cohort / "DONE").write_text("x")
    shared = tmp_path / "work" / "smoke" / "store"
    _make_store(shared, cohort, _sha1(cohort / "cohort.json"), 4.0, "smoke", progress=False)
    cfg = {
        "scale": "smoke",
        "init": "mim",
        "data": {"store": str(task_store)},
        "pretrain_overrides": {"run.root": str(tmp_path / "pre"), **FAST},
    }
    assert "data.store" not in pretraining_overrides(cfg)
    label, ckpt = resolve_init(cfg, progress=False)
    assert label == "mim" and ckpt is not None
    used = json.loads((ckpt.parent.parent / "config.json").read_text())["data"]["store"]
    assert Path(used) == shared.resolve()
