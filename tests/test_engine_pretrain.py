"""mmlib.engine.pretrain end to end at smoke size: exact resume after SIGKILL, a kill during a
checkpoint write, the learning-rate curve read from the log, reuse, samples, the CLI.

The runs train on a small store written here with the store's own writer (8 studies of 2-4
modalities, 24×28×24 voxels at 4 mm), so that these tests do not wait for the cohort.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.ndimage import gaussian_filter

from mmlib.engine import checkpointing as ckpt
from mmlib.engine.pretrain import pretrain
from mmlib.engine.schedule import lr_at
from mmlib.runs import latest_checkpoint, load_run, read_metrics

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def make_store(
    root: Path, n: int = 8, shape: tuple[int, int, int] = (24, 28, 24), spacing: float = 4.0
) -> Path:
    """A tiny curated store: smooth shared anatomy, one contrast per modality, 2-4 modalities."""
    from mmlib.data.store import init_store, write_study

    rng = np.random.default_rng(0)
    init_store(root, spacing)
    names = ["flair", "t1", "t1c", "t2"]
    for i in range(n):
        base = gaussian_filter(rng.standard_normal(shape), 2.0)
        mods = names[: 2 + i % 3]
        images = {
            m: np.clip(
                np.tanh((1 if j % 2 else -1) * base * 4) * 0.5
                + 0.5
                + 0.02 * rng.standard_normal(shape),
                0,
                1,
            )
            for j, m in enumerate(mods)
        }
        affine = np.diag([spacing] * 3 + [1.0])
        affine[:3, 3] = -np.asarray(shape) * spacing / 2
        row = {
            "study": f"s{i:02d}",
            "source": "tiny",
            "modalities": mods,
            "shape": list(shape),
            "spacing": [spacing] * 3,
            "affine": affine.tolist(),
            "center_world": [0.0, 0.0, 0.0],
            "label": False,
            "attrs": {},
            "split": "train",
            "task": None,
        }
        write_study(root, row, images)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("engine") / "store")


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def overrides(store: Path, **extra: object) -> list[str]:
    base = {
        "data.store": str(store),
        "train.max_steps": 10,
        "schedule.epochs": 5,
        "train.accum": 2,
        "checkpoint.every": 3,
        "checkpoint.keep": 2,
        "log.tensorboard": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run) / "model.safetensors"))


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    bad = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not bad, f"weights differ in {bad[:5]}"
    ma, mb = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == list(range(1, 11))
    for key in ("loss", "md", "cmr", "cl", "lr"):
        assert [r[key] for r in ma] == [r[key] for r in mb], key


@pytest.fixture(scope="module")
def reference(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain(
            "smoke",
            overrides(store),
            run_dir=tmp_path_factory.mktemp("ref") / "run",
            progress=False,
        )
    finally:
        torch.set_num_threads(before)


KILL_AT_STEP = """
    import os, signal, sys
    import mmlib.engine.pretrain as P
    kill = int(sys.argv[2])
    P.STEP_HOOK = lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == kill else None
    P.pretrain("smoke", sys.argv[3:], run_dir=sys.argv[1], progress=False)
"""

KILL_IN_WRITE = """
    import os, signal, sys
    import mmlib.engine.checkpointing as C
    import mmlib.engine.pretrain as P
    phase, nth = sys.argv[2], [0]
    def hook(name):
        if name == "weights":
            nth[0] += 1
        if nth[0] == 2 and name == phase:
            os.kill(os.getpid(), signal.SIGKILL)
    C.FAULT_HOOK = hook
    P.pretrain("smoke", sys.argv[3:], run_dir=sys.argv[1], progress=False)
"""


def test_sigkill_at_a_random_step_then_resume_is_bitwise_equal(
    store, reference, tmp_path, one_thread
) -> None:
    kill = random.randint(2, 9)
    run = tmp_path / "run"
    proc = child(KILL_AT_STEP, str(run), str(kill), *overrides(store))
    assert proc.returncode == -9, f"kill at step {kill}: {proc.stderr[-2000:]}"
    assert not (run / "DONE").exists()
    resumed_from = ckpt.find_latest(run / "checkpoints")
    expected = (kill - 1) // 3 * 3  # the checkpoint of a step is written after its hook
    assert (0 if resumed_from is None else int(resumed_from.name[5:])) == expected, (
        f"kill at step {kill}"
    )
    assert pretrain("smoke", overrides(store), run_dir=run, progress=False) == run
    assert (run / "DONE").is_file()
    assert_same_run(reference, run)


@pytest.mark.parametrize("phase", ["state", "latest"])
def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(
    store, reference, tmp_path, phase, one_thread
) -> None:
    run = tmp_path / "run"
    proc = child(KILL_IN_WRITE, str(run), phase, *overrides(store))
    assert proc.returncode == -9, proc.stderr[-2000:]
    latest = ckpt.find_latest(run / "checkpoints")
    # killed while writing step 6: before the commit rename step 3 stays the newest
    assert latest is not None and latest.name == (
        "step_0000003" if phase == "state" else "step_0000006"
    )
    state, meta, train = ckpt.load(latest)
    assert meta["step"] == train["step"] == int(latest.name[5:]) and "templates.volumes" in state
    pretrain("smoke", overrides(store), run_dir=run, progress=False)
    assert_same_run(reference, run)


def test_learning_rate_follows_the_configured_curve(reference) -> None:
    cfg = json.loads((reference / "config.json").read_text())
    rows = read_metrics(reference / "metrics.csv")
    total, o = len(rows), cfg["optim"]
    want = [lr_at(int(r["step"]) - 1, total, o["lr"], o["warmup_steps"], o["min_lr"]) for r in rows]
    assert [r["lr"] for r in rows] == pytest.approx(want, rel=1e-9)
    assert max(r["lr"] for r in rows) == pytest.approx(o["lr"])
    assert rows[-1]["lr"] < rows[o["warmup_steps"]]["lr"]


def test_run_folder_contract_and_reuse(store, reference) -> None:
    info = load_run(reference)
    assert info["done"] and info["results"]["steps"] == 10
    res = info["results"]
    assert set(res["final"]) >= {"loss", "md", "cmr", "cl"}
    assert 0.0 <= res["data_wait_frac"] < 1.0 and res["samples_per_s"] > 0
    assert res["final"]["loss"] < res["first"]["loss"]
    # keep=2 of checkpoints at steps 3, 6, 9, 10; samples at each and before the first step
    assert [p.name for p in ckpt.list_checkpoints(reference / "checkpoints")] == [
        "step_0000009",
        "step_0000010",
    ]
    assert [p.name for p in info["samples"]] == [f"step_{s:07d}.npz" for s in (0, 3, 6, 9, 10)]
    first, last = (np.load(p) for p in (info["samples"][0], info["samples"][-1]))
    for key in ("target", "mask", "view_a", "view_b", "recon_a", "recon_b"):
        assert last[key].dtype == np.float16 and last[key].shape == (2, 16, 16, 16), key
    assert list(first["study"]) == list(last["study"]) and last["modality"][0] in (
        "flair",
        "t1",
        "t1c",
        "t2",
    )
    assert np.array_equal(
        first["target"], last["target"]
    )  # a fixed crop, followed through training
    assert not np.array_equal(first["recon_a"], last["recon_a"])
    from mmlib.runs import sample_errors

    before, after = sample_errors(info["samples"][0]), sample_errors(info["samples"][-1])
    assert after["recon_a"] < before["recon_a"]  # training reconstructs the masked blocks better
    meta = json.loads((latest_checkpoint(reference) / "meta.json").read_text())
    assert meta["model"]["name"] == "unet" and meta["step"] == 10 and len(meta["modalities"]) == 8
    assert np.asarray(meta["template_affine"]).shape == (4, 4)
    # the same resolved config returns the finished run at once; another config is refused
    stamp = (reference / "DONE").stat().st_mtime_ns
    assert pretrain("smoke", overrides(store), run_dir=reference, progress=False) == reference
    assert (reference / "DONE").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="different config.*train.seed"):
        pretrain("smoke", overrides(store, **{"train.seed": 1}), run_dir=reference, progress=False)


def test_cli_trains_and_reports_config_errors(store, tmp_path) -> None:
    from mmlib.cli import main

    assert main(["pretrain", "--config", "smoke", "--no-progress", "trian.seed=1"]) == 2
    root = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmlib",
            "pretrain",
            "--config",
            "smoke",
            "--no-progress",
            f"data.store={store}",
            f"run.root={root}",
            "train.max_steps=2",
            "objective=mim",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = Path(proc.stdout.strip().splitlines()[-1])
    assert run.parent == root and run.name.startswith("mim-unet-") and (run / "DONE").is_file()
    samples = np.load(sorted((run / "samples").glob("*.npz"))[-1])
    assert "view_b" not in samples and samples["recon_a"].shape[0] == 2  # mim has one view


def test_loader_workers_do_not_change_the_weights(store, reference, tmp_path, one_thread) -> None:
    run = pretrain(
        "smoke", overrides(store, **{"data.workers": 2}), run_dir=tmp_path / "run", progress=False
    )
    assert_same_run(reference, run)


def test_mixed_precision_modes(store, tmp_path) -> None:
    from mmlib.engine.binding import amp_mode

    cpu = torch.device("cpu")
    assert amp_mode("auto", cpu) == (None, False) and amp_mode(False, cpu) == (None, False)
    assert amp_mode("bf16", cpu) == (torch.bfloat16, False)
    assert amp_mode("fp16", torch.device("cuda")) == (
        torch.float16,
        True,
    )  # fp16 always with a grad scaler
    with pytest.raises(ValueError, match="train.amp"):
        amp_mode("fp8", cpu)
    run = pretrain(
        "smoke",
        overrides(store, **{"train.amp": "bf16", "train.max_steps": 2, "train.accum": 1}),
        run_dir=tmp_path / "bf16",
        progress=False,
    )
    res = json.loads((run / "results.json").read_text())
    assert res["amp"] == "bf16" and all(np.isfinite(v) for v in res["final"].values())
    # the bottleneck's thin convolutions run in fp32 (guard_cpu_bf16_convs): before, about one
    # step in four was skipped for non-finite gradients here
    assert res["skipped_steps"] == 0


def test_thin_convolutions_run_in_fp32_under_cpu_bf16() -> None:
    """oneDNN's bf16 weight gradient of a 3x3x3 convolution on a depth-2 input is non-finite in
    about one call in five (torch 2.13, CPU); guarded convolutions run such inputs in fp32 and
    leave the others, the weights and the state dict as they were."""
    import copy

    from mmlib.engine.binding import guard_cpu_bf16_convs

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(64, 64, 3, padding=1), torch.nn.ReLU())
    keys = list(net.state_dict())
    assert guard_cpu_bf16_convs(net) == 1 and guard_cpu_bf16_convs(net) == 0  # once
    assert list(net.state_dict()) == keys
    twin = copy.deepcopy(net)
    assert twin[0].forward.__self__ is twin[0]  # the copy's guard runs the copy's weights
    for _ in range(30):
        x = torch.randn(4, 64, 2, 4, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
            thick = net(torch.randn(1, 64, 4, 4, 4))
        assert y.dtype == torch.float32 and thick.dtype == torch.bfloat16
        y.square().mean().backward()
        assert torch.isfinite(net[0].weight.grad).all()
        net.zero_grad()
    plain = torch.nn.functional.conv3d(x, net[0].weight, net[0].bias, padding=1)
    assert torch.equal(net[0](x), plain)  # no autocast: the plain convolution


def test_to_device_turns_the_float16_transport_into_the_float32_batch(store) -> None:
    from mmlib.data.sampler import PretrainDataset
    from mmlib.engine.pretrain import _to_device

    half = PretrainDataset(store, 16, k=4, image_dtype=torch.float16)
    full = PretrainDataset(store, 16, k=4)
    a = _to_device(half.collate(half.__getitems__([0, 3])), torch.device("cpu"))
    b = _to_device(full.collate(full.__getitems__([0, 3])), torch.device("cpu"))
    assert a["image"].dtype == torch.float32 and torch.equal(a["image"], b["image"])
    assert all(
        torch.equal(a[k], b[k]) for k in ("present", "modality", "template_origin", "spacing")
    )


def test_a_step_with_non_finite_gradients_is_skipped_and_counted(
    store, tmp_path, monkeypatch
) -> None:
    """One poisoned gradient (as bf16 on CPU sometimes gives) skips that update, not the run."""
    import mmlib.engine.pretrain as P

    real = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def poison_second_step(params, max_norm, *args, **kwargs):
        params = list(params)
        calls["n"] += 1
        if calls["n"] == 2:
            params[0].grad.fill_(float("inf"))
        return real(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(P.torch.nn.utils, "clip_grad_norm_", poison_second_step)
    run = pretrain(
        "smoke",
        overrides(store, **{"train.max_steps": 3, "train.accum": 1, "checkpoint.every": 10}),
        run_dir=tmp_path / "poisoned",
        progress=False,
    )
    res = json.loads((run / "results.json").read_text())
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    skipped = [float(r.split(",")[header.index("skipped")]) for r in rows[1:]]
    assert skipped == [0.0, 1.0, 0.0] and res["skipped_steps"] == 1
    assert all(np.isfinite(v) for v in res["final"].values())
    from mmlib.engine import checkpointing as ckpt
    from mmlib.runs import latest_checkpoint

    weights, _, _ = ckpt.load(latest_checkpoint(run))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_a_run_of_non_finite_steps_stops_with_a_clear_error(store, tmp_path, monkeypatch) -> None:
    import mmlib.engine.pretrain as P

    real = torch.nn.utils.clip_grad_norm_

    def poison(params, max_norm, *args, **kwargs):
        params = list(params)
        params[0].grad.fill_(float("nan"))
        return real(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(P.torch.nn.utils, "clip_grad_norm_", poison)
    from mmlib.engine import binding

    monkeypatch.setattr(binding, "MAX_SKIPPED_IN_A_ROW", 2)  # MixedPrecision.step's limit
    with pytest.raises(RuntimeError, match="non-finite gradients at 2 optimiser steps in a row"):
        pretrain(
            "smoke",
            overrides(store, **{"train.max_steps": 3, "train.accum": 1}),
            run_dir=tmp_path / "broken",
            progress=False,
        )


def test_template_volumes_have_their_own_group() -> None:
    """``optim.template_lr`` and ``optim.template_weight_decay`` for the template volumes only."""
    from mmlib.engine.config import load_config
    from mmlib.engine.pretrain import optimizer_groups
    from mmlib.models import build_backbone, preset
    from mmlib.proxy.brainmvp import BrainMVPObjective
    from mmlib.proxy.templates import Templates

    cfg = load_config("smoke", ["optim.template_lr=0.05"])
    assert cfg["optim"]["template_weight_decay"] == 0.0 and cfg["train"]["clip_templates"] is False
    obj = BrainMVPObjective(
        build_backbone("unet", **preset("smoke", "unet")), Templates(spacing=4.0), "brainmvp"
    )
    net, tpl = optimizer_groups(obj, cfg["optim"])
    assert tpl["params"] == [obj.templates.volumes] and tpl["lr"] == 0.05
    assert tpl["weight_decay"] == 0.0 and net["weight_decay"] == cfg["optim"]["weight_decay"]
    assert net["lr"] == cfg["optim"]["lr"] and len(net["params"]) == len(
        list(obj.backbone.parameters())
    )
    same = optimizer_groups(obj, {**cfg["optim"], "template_lr": None})
    assert same[1]["lr"] == cfg["optim"]["lr"]
    with pytest.raises(ValueError, match="optim.template_lr"):
        load_config("smoke", ["optim.template_lr=-1"])


def test_templates_stay_out_of_the_gradient_clip(store, tmp_path, one_thread) -> None:
    """With a tiny clip, a shared clip shrinks the templates' gradient below AdamW's epsilon and
    they barely move; left out of it (the default) they move at their learning rate."""
    moved = {}
    for shared in (False, True):
        extra = {
            "train.max_steps": 2,
            "train.clip": 1e-9,
            "train.clip_templates": shared,
            "optim.warmup_steps": 0,
            "optim.template_lr": 0.01,
            "objective": "md_only",
        }
        run = pretrain(
            "smoke", overrides(store, **extra), run_dir=tmp_path / str(shared), progress=False
        )
        moved[shared] = float(final_weights(run)["templates.volumes"].abs().max())
        rows = read_metrics(run / "metrics.csv")
        assert all(r["template_grad_norm"] > 0 for r in rows)
    assert moved[False] > 0.005 and moved[True] < 0.2 * moved[False]
