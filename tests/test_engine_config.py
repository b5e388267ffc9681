"""mmlib.engine.config: presets, files, overrides, the objective rule, the run identity."""

from __future__ import annotations

import json

import pytest

from mmlib.configs.scales import SCALES
from mmlib.engine.config import (
    config_hash,
    diff,
    load_config,
    parse_overrides,
    parse_value,
    resolve_objective,
)


@pytest.mark.parametrize("scale", SCALES)
def test_presets_load_and_name_their_scale(scale: str) -> None:
    cfg = load_config(scale)
    assert cfg["scale"] == scale
    assert cfg["train"]["batch_size"] >= 1 and cfg["schedule"]["epochs"] > 0
    resolve_objective(cfg)  # every preset's objective section is valid


def test_paper_preset_is_the_authors_schedule() -> None:
    cfg = load_config("paper")
    assert cfg["optim"]["lr"] == pytest.approx(3e-4)
    assert cfg["optim"]["weight_decay"] == pytest.approx(1e-5)
    assert cfg["schedule"]["epochs"] == 1500
    assert (cfg["train"]["batch_size"], cfg["train"]["accum"], cfg["data"]["crop_size"]) == (
        3,
        2,
        96,
    )
    obj = resolve_objective(cfg)
    # official: view B warm-up while cur_epoch <= 300 (epochs 0..300), contrastive from 1000
    assert (obj["warmup_epochs"], obj["cl_start_epoch"], obj["block_size"]) == (301, 1000, 8)
    # the official template rule: whole-template min-max, exact autograd, no direct fit, the
    # templates in AdamW at the network's lr and weight decay
    assert (obj["template_scaling"], obj["template_grad"], obj["w_template"]) == (
        "global",
        "exact",
        0.0,
    )
    assert cfg["optim"]["template_lr"] is None
    assert cfg["optim"]["template_weight_decay"] == pytest.approx(1e-5)


def test_values_parse_as_yaml_with_floats_in_e_notation() -> None:
    assert parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("null") is None and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("unet") == "unet"
    assert parse_overrides({"train": {"seed": 3}, "optim.lr": 1}) == {
        "train.seed": 3,
        "optim.lr": 1,
    }


def test_overrides_win_and_unknown_keys_name_the_key() -> None:
    cfg = load_config("smoke", ["train.batch_size=3", "optim.lr=1e-3", "objective.mask_rate=0.5"])
    assert cfg["train"]["batch_size"] == 3 and cfg["optim"]["lr"] == pytest.approx(1e-3)
    assert cfg["objective"]["mask_rate"] == 0.5
    with pytest.raises(ValueError, match="unknown config key 'train.batchsize'"):
        load_config("smoke", ["train.batchsize=3"])
    with pytest.raises(ValueError, match="expected key=value"):
        load_config("smoke", ["train.batch_size"])
    with pytest.raises(ValueError, match="train.accum"):
        load_config("smoke", ["train.accum=0"])
    with pytest.raises(ValueError, match="unknown scale"):
        load_config("smoke", ["scale=huge"])


def test_a_file_is_laid_over_its_scale_preset(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("scale: smoke\ntrain:\n  seed: 7\nobjective: md_only\n")
    cfg = load_config(path)
    assert cfg["train"]["seed"] == 7 and cfg["objective"]["name"] == "md_only"
    assert cfg["data"]["crop_size"] == load_config("smoke")["data"]["crop_size"]
    assert (
        load_config(path, ["scale=demo"])["data"]["crop_size"]
        == load_config("demo")["data"]["crop_size"]
    )
    js = tmp_path / "mine.json"
    js.write_text(json.dumps({"scale": "smoke", "train": {"seed": 9}}))
    assert load_config(js)["train"]["seed"] == 9
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_objective_name_override_keeps_fields_and_scale_defaults_respect_presets() -> None:
    cfg = load_config("demo", ["objective.mask_rate=0.875", "objective=cmr_only"])
    assert cfg["objective"] == {"name": "cmr_only", "mask_rate": 0.875}
    obj = resolve_objective(cfg)
    assert obj["mask_rate"] == 0.875
    assert obj["warmup_epochs"] == 0  # cmr_only's own value survives the scale default
    demo = load_config("demo")["objective_defaults"]
    assert obj["block_size"] == demo["block_size"]
    bmvp = resolve_objective(load_config("demo"))
    assert (
        bmvp["warmup_epochs"] == demo["warmup_epochs"]
        and bmvp["cl_start_epoch"] == demo["cl_start_epoch"]
    )
    explicit = resolve_objective(load_config("demo", ["objective.warmup_epochs=2"]))
    assert explicit["warmup_epochs"] == 2
    with pytest.raises(ValueError, match="unknown objective"):
        resolve_objective(load_config("demo", ["objective=nope"]))
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_objective(load_config("demo", ["objective.colour=red"]))


def test_identity_hash_ignores_run_and_workers_only() -> None:
    base = load_config("smoke")
    h = config_hash(base)
    assert config_hash(load_config("smoke", ["run.name=x", "data.workers=3"])) == h
    assert config_hash(load_config("smoke", ["train.seed=1"])) != h
    assert diff(base, load_config("smoke", ["train.seed=1", "optim.lr=1"])) == [
        "optim.lr",
        "train.seed",
    ]


def test_one_loader_for_finetuning_with_its_own_defaults_and_free_sections() -> None:
    from mmlib.engine.config import FINETUNE_DEFAULTS

    for scale in SCALES:
        cfg = load_config(scale, kind="finetune")
        assert cfg["scale"] == scale and set(cfg) == set(FINETUNE_DEFAULTS)
    smoke = load_config("smoke", ["train.steps=7", "task=hgg_lgg"], kind="finetune")
    assert (
        smoke["train"]["steps"] == 7
        and smoke["data"]["crop_size"] == 16
        and smoke["task"] == "hgg_lgg"
    )
    # free sections stay whole: pretrain_overrides (checked by the pre-training loader), model.size
    cfg = load_config(
        "smoke",
        {"pretrain_overrides": {"train.max_steps": 3}, "model.size": {"width": 4}},
        kind="finetune",
    )
    assert cfg["pretrain_overrides"] == {"train.max_steps": 3} and cfg["model"]["size"] == {
        "width": 4
    }
    with pytest.raises(ValueError, match="unknown config key 'train.stepz'"):
        load_config("smoke", ["train.stepz=3"], kind="finetune")
    with pytest.raises(ValueError, match="unknown config key 'objective'"):  # a pre-training key
        load_config("smoke", ["objective=mim"], kind="finetune")
    with pytest.raises(ValueError, match="unknown config key 'task'"):  # a fine-tuning key
        load_config("smoke", ["task=isles"])
    with pytest.raises(ValueError, match="fill should be"):
        load_config("smoke", ["fill=mean"], kind="finetune")
    with pytest.raises(ValueError, match="config kind should be"):
        load_config("smoke", kind="eval")
    with pytest.raises(FileNotFoundError, match="finetune config .* no such file"):
        load_config("nope.yaml", kind="finetune")


def test_one_identity_hash_names_finetuning_runs_too() -> None:
    import hashlib

    from mmlib.engine.config import identity

    cfg = load_config("smoke", kind="finetune")
    ident = {"path": "/x/step_0000010", "step": 10, "weights": "abc"}
    h = config_hash(cfg, extra={"checkpoint": ident})
    text = json.dumps({"config": identity(cfg), "checkpoint": ident}, sort_keys=True, default=str)
    assert h == hashlib.sha256(text.encode()).hexdigest()[:8]  # the fine-tuning run names kept
    assert (
        config_hash(
            load_config("smoke", ["run.name=x"], kind="finetune"), extra={"checkpoint": ident}
        )
        == h
    )
    assert config_hash(cfg, extra={"checkpoint": {**ident, "step": 11}}) != h
    assert (
        config_hash(
            load_config("smoke", ["train.seed=1"], kind="finetune"), extra={"checkpoint": ident}
        )
        != h
    )


def test_classification_section_applies_to_classification_tasks_only(tmp_path) -> None:
    """A fine-tuning preset's ``classification`` keys are laid over it for classification
    tasks (aliases too), never for segmentation; the user's file and overrides still win."""
    seg = load_config("demo", {"task": "brats_ped"}, kind="finetune")
    for task in ("adni", "atrophy", "hgg_lgg", "abide"):
        cls = load_config("demo", {"task": task}, kind="finetune")
        assert cls["optim"]["lr"] < seg["optim"]["lr"], task
        assert "classification" not in cls
    assert (
        load_config("demo", ["task=adni", "optim.lr=0.01"], kind="finetune")["optim"]["lr"] == 0.01
    )
    mine = tmp_path / "mine.yaml"
    mine.write_text("scale: demo\ntask: adhd200\nclassification:\n  train:\n    steps: 7\n")
    cfg = load_config(mine, kind="finetune")
    assert cfg["train"]["steps"] == 7 and cfg["optim"]["lr"] == cls["optim"]["lr"]
    assert (
        load_config(mine, ["task=isles"], kind="finetune")["train"]["steps"]
        == seg["train"]["steps"]
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("scale: demo\nclassification: 3\n")
    with pytest.raises(ValueError, match="classification should be a mapping"):
        load_config(bad, ["task=adni"], kind="finetune")
    bad.write_text("scale: demo\nclassification:\n  optim:\n    lrr: 1\n")
    with pytest.raises(ValueError, match="lrr"):
        load_config(bad, ["task=adni"], kind="finetune")
