"""Fine-tuning engine on a tiny real store: runs, pairing by seed, reuse, template fill, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from downstream_fixtures import smoke_checkpoint, tiny_store

from mmlib.data.store import Store
from mmlib.engine.config import load_config
from mmlib.engine.finetune import TRAINED, finetune
from mmlib.evaluate.grid import finetune_grid
from mmlib.evaluate.scoring import load_network, score_run
from mmlib.tasks import TASKS, label_subset, resolve_task, split_studies, task_rows

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pre-training checkpoint in the engine's convention (backbone.* and templates.volumes)."""
    return smoke_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=123, step=7)


def test_task_resolution(store: Path) -> None:
    s = Store(store)
    spec = resolve_task("brats_ped", s.manifest, s)
    assert spec.regions is not None and spec.regions.convention == "brats2023"
    cls = resolve_task("hgg_lgg", s.manifest, s)
    assert cls.classes == ("LGG", "HGG")
    splits = split_studies(task_rows(s.manifest, TASKS["brats_ped"]))
    assert len(splits["train"]) == 4 and len(splits["test"]) == 2
    a, b = label_subset(splits["train"], 0.25), label_subset(splits["train"], 0.5)
    assert len(a) == 1 and len(b) == 2 and set(a) <= set(b)
    with pytest.raises(ValueError, match="no study of task"):
        resolve_task("isles", s.manifest, s)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        load_config("smoke", ["train.stepz=3"], kind="finetune")
    with pytest.raises(ValueError, match="label_fraction"):
        load_config("smoke", ["data.label_fraction=0"], kind="finetune")
    with pytest.raises(ValueError, match="unknown task"):
        load_config("smoke", ["task=nope"], kind="finetune")
    assert load_config("smoke", {"train": {"steps": 3}}, kind="finetune")["train"]["steps"] == 3


def test_segmentation_run_pairing_and_reuse(store: Path, checkpoint: Path, tmp_path: Path) -> None:
    over = {
        "data.store": str(store),
        "run.root": str(tmp_path),
        "train.steps": 3,
        "optim.encoder_lr_scale": 0.3,
    }
    scratch = finetune("smoke", {**over, "init": "scratch"}, progress=False)
    pre = finetune("smoke", {**over, "init": str(checkpoint)}, progress=False)
    assert (pre / TRAINED).is_file() and not (pre / "DONE").is_file()  # trained, not yet scored
    score_run(scratch)
    score_run(pre)
    assert scratch != pre
    # the encoder lr scale is for pre-trained encoders; a scratch encoder trains at the full lr
    r_s, r_p = (json.loads((r / "results.json").read_text()) for r in (scratch, pre))
    assert r_s["encoder_lr"] == r_s["lr"] and r_p["encoder_lr"] == pytest.approx(0.3 * r_p["lr"])
    for run in (scratch, pre):
        res = json.loads((run / "results.json").read_text())
        assert res["n_test"] == 2 and res["steps"] == 3
        assert 0.0 <= res["test"]["dice_mean"] <= 1.0
        assert {"dice_TC", "dice_WT", "dice_ET", "hd95_WT"} <= set(res["test"])
        scores = pd.read_csv(run / "test_scores.csv")
        assert len(scores) == 2 and not scores.isna().any().any()
        assert len(pd.read_csv(run / "metrics.csv")) == 3
    assert json.loads((pre / "results.json").read_text())["fill"] == "template"
    # reuse: same config and checkpoint -> same folder, not recomputed
    mtime = (pre / "DONE").stat().st_mtime
    assert finetune("smoke", {**over, "init": str(checkpoint)}, progress=False) == pre
    assert (pre / "DONE").stat().st_mtime == mtime
    # pairing: identical decoder at build time for both inits (same seed)
    net_s, *_ = load_network(scratch)
    from mmlib.engine.initialise import build_network

    cfg = json.loads((scratch / "config.json").read_text())
    spec = net_s and resolve_task("brats_ped", Store(store).manifest, Store(store))
    a, _, _ = build_network(cfg, spec, None)
    b, tpl, _ = build_network(cfg, spec, checkpoint)
    assert tpl is not None and tpl.volumes.shape == (8, 30, 30, 30)
    dec_a = {k: v for k, v in a.state_dict().items() if not k.startswith("backbone.")}
    dec_b = {k: v for k, v in b.state_dict().items() if not k.startswith("backbone.")}
    assert dec_a.keys() == dec_b.keys() and all(torch.equal(dec_a[k], dec_b[k]) for k in dec_a)
    enc_differs = any(
        not torch.equal(a.state_dict()[k], b.state_dict()[k])
        for k in a.state_dict()
        if k.startswith("backbone.")
    )
    assert enc_differs
    c, _, _ = build_network({**cfg, "train": {**cfg["train"], "seed": 1}}, spec, None)
    assert any(not torch.equal(c.state_dict()[k], a.state_dict()[k]) for k in dec_a)


def test_classification_run(store: Path, tmp_path: Path) -> None:
    [run] = finetune_grid(
        "smoke",
        ["scratch"],
        [1.0],
        [0],
        {"data.store": str(store), "run.root": str(tmp_path), "task": "hgg_lgg", "train.steps": 3},
        progress=False,
    )
    res = json.loads((run / "results.json").read_text())
    assert res["kind"] == "classification" and res["n_test"] == 2
    assert 0 <= res["test"]["accuracy"] <= 1 and res["test"]["n"] == 2


def test_cli(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmlib.cli import main

    code = main(
        [
            "finetune",
            "--config",
            "smoke",
            "--init",
            "scratch",
            "--seeds",
            "0",
            "1",
            "--no-progress",
            f"data.store={store}",
            f"run.root={tmp_path}",
            "train.steps=2",
            "eval.hd95=false",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.count("dice_mean=") == 2
    assert main(["finetune", "--config", "smoke", "train.nope=1"]) == 1


def test_mixed_precision_training_and_scoring(store: Path, tmp_path: Path) -> None:
    """train.amp / eval.amp: a bf16 run trains without skipped steps, records its precision,
    and is scored; an unknown mode names its key."""
    over = {"data.store": str(store), "run.root": str(tmp_path), "train.steps": 4}
    run = finetune(
        "smoke",
        {**over, "init": "scratch", "train.amp": "bf16", "eval.amp": "bf16"},
        progress=False,
    )
    score_run(run)
    res = json.loads((run / "results.json").read_text())
    assert res["amp"] == "bf16" and res["skipped_steps"] == 0
    assert 0.0 <= res["test"]["dice_mean"] <= 1.0
    assert pd.read_csv(run / "metrics.csv")["loss"].notna().all()
    for key in ("train.amp", "eval.amp"):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            load_config("smoke", {key: "fp8"}, kind="finetune")


def test_a_non_finite_step_is_skipped(store: Path) -> None:
    """A batch whose loss is NaN leaves the weights as they were (one bad step would make
    every weight NaN) and is counted; the next good step trains."""
    from mmlib.engine.finetune import FinetuneTrainer

    cfg = load_config(
        "smoke", {"data.store": str(store), "init": "scratch", "train.steps": 2}, kind="finetune"
    )
    trainer = FinetuneTrainer(cfg, "scratch", None, progress=False)
    good = next(iter(trainer.loader))
    bad = {**good, "image": torch.full_like(good["image"], float("nan"))}
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    terms = trainer.step(bad)
    assert terms["skipped"] == 1.0
    after = trainer.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.step(good)["skipped"] == 0.0
    assert any(not torch.equal(before[k], trainer.net.state_dict()[k]) for k in before)
