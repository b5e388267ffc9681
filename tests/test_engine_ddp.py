"""DDP with torchrun: 2 gloo processes on the CPU end with identical weights on both ranks, equal
(within float tolerance) to one process with the same global batch (batch 2 × accumulation 2).
The same job started from Python (:func:`mmlib.engine.pretrain.launch`, what notebook 06 uses,
through :func:`mmlib.engine.distributed.launch`) ends with the same weights, bit for bit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from test_engine_pretrain import ENV, make_store

from mmlib.engine.pretrain import launch, pretrain
from mmlib.runs import latest_checkpoint


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [shutil.which("torchrun") or "torchrun"]


def test_two_gloo_ranks_agree_with_each_other_and_with_one_process(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    common = [
        f"data.store={store}",
        "train.max_steps=6",
        "schedule.epochs=3",
        "checkpoint.every=3",
        "log.tensorboard=false",
        "objective.cl_start_epoch=0",
        "device=cpu",
    ]
    ddp = tmp_path / "ddp"
    proc = subprocess.run(
        [
            *torchrun(),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "mmlib",
            "pretrain",
            "--config",
            "smoke",
            "--no-progress",
            "--run-dir",
            str(ddp),
            "train.batch_size=2",
            "train.accum=1",
            *common,
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(ddp)  # only rank 0 prints
    results = json.loads((ddp / "results.json").read_text())
    assert results["world_size"] == 2 and results["global_batch"] == 4
    digests = results["weights_digest_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]  # bitwise identical replicas

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = pretrain(
            "smoke",
            ["train.batch_size=2", "train.accum=2", *common],
            run_dir=tmp_path / "one",
            progress=False,
        )
    finally:
        torch.set_num_threads(before)
    a, b = (load_file(str(latest_checkpoint(r) / "model.safetensors")) for r in (ddp, one))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    # and the agreement is far tighter than what training moved the weights (steps 3 -> 6)
    mid = load_file(str(one / "checkpoints" / "step_0000003" / "model.safetensors"))
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float((b[k] - mid[k]).abs().max()) for k in a)
    assert gap < 1e-3 * moved, (gap, moved)
    # the library launcher: the same two ranks, no command line
    via = launch(
        2,
        "smoke",
        ["train.batch_size=2", "train.accum=1", *common],
        run_dir=tmp_path / "via",
        timeout=600,
    )
    assert via == tmp_path / "via" and (via / "DONE").is_file()
    c = load_file(str(latest_checkpoint(via) / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)
    launched = json.loads((via / "results.json").read_text())
    assert launched["world_size"] == 2 and launched["weights_digest_per_rank"] == digests
    ra = json.loads((one / "results.json").read_text())
    assert abs(ra["final"]["loss"] - results["final"]["loss"]) < 1e-4 * max(
        1.0, abs(ra["final"]["loss"])
    )
    assert results["final"]["cl"] > 0  # the contrastive term (in-chunk negatives) was on


def test_an_error_on_rank_0_stops_every_rank(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"scale": "smoke", "train": {"seed": 123}}))
    proc = subprocess.run(
        [
            *torchrun(),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "mmlib",
            "pretrain",
            "--config",
            "smoke",
            "--no-progress",
            "--run-dir",
            str(run),
            f"data.store={store}",
            "device=cpu",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=240,
    )
    assert proc.returncode != 0
    assert proc.stderr.count("holds an unfinished run with a different config") == 2, proc.stderr[
        -3000:
    ]
