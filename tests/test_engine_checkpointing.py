"""mmlib.engine.checkpointing: atomic writes survive SIGKILL at every phase; safe, exact state."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mmlib.engine import checkpointing as ckpt

PHASES = ("weights", "state", "commit", "latest", "prune")

CHILD = textwrap.dedent(
    """
    import os, signal, sys, torch
    from mmlib.engine import checkpointing as ckpt
    root, phase = sys.argv[1], sys.argv[2]
    def state(step):
        return {"w": torch.full((64, 64), float(step))}
    for step in (1, 2):
        train = {"step": step, "opt": {"m": torch.ones(3) * step}}
        ckpt.save(root, step, state(step), {"step": step}, train, keep=2)
    def die(name):
        if name == phase:
            os.kill(os.getpid(), signal.SIGKILL)
    ckpt.FAULT_HOOK = die
    ckpt.save(root, 3, state(3), {"step": 3}, {"step": 3, "opt": {"m": torch.ones(3) * 3}}, keep=2)
    """
)


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_during_a_write_leaves_a_loadable_checkpoint(tmp_path: Path, phase: str) -> None:
    root = tmp_path / "checkpoints"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), phase], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr  # really killed, mid-write
    latest = ckpt.find_latest(root)
    assert latest is not None
    state, meta, train = ckpt.load(latest)
    step = int(latest.name[5:])
    # before the commit rename the previous checkpoint is the newest; from then on the new one
    assert step == (2 if phase in ("weights", "state", "commit") else 3)
    assert meta["step"] == step and train["step"] == step
    assert torch.equal(state["w"], torch.full((64, 64), float(step)))
    assert torch.equal(train["opt"]["m"], torch.ones(3) * step)
    # the next write cleans up what the killed one left behind
    ckpt.save(root, 4, {"w": torch.zeros(1)}, {"step": 4}, {"step": 4}, keep=2)
    names = sorted(p.name for p in root.iterdir())
    assert [n for n in names if n.startswith(".")] == []
    assert ckpt.find_latest(root).name == "step_0000004"
    assert len(ckpt.list_checkpoints(root)) == 2


def test_keep_last_k_and_latest_pointer(tmp_path: Path) -> None:
    for step in range(1, 6):
        ckpt.save(
            tmp_path,
            step,
            {"w": torch.tensor([float(step)])},
            {"step": step},
            {"step": step},
            keep=3,
        )
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        ckpt.step_name(s) for s in (3, 4, 5)
    ]
    assert (tmp_path / "latest").read_text().strip() == "step_0000005"


def test_rng_states_round_trip_through_a_safe_file(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    saved = ckpt.rng_state()
    ckpt.save(tmp_path, 1, {"w": torch.zeros(1)}, {}, {"step": 1, "rng": [saved]}, keep=1)
    expect = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    train = ckpt.load_train_state(tmp_path / "step_0000001")  # torch.load(weights_only=True)
    ckpt.set_rng_state(train["rng"][0])
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(expect[0], got[0])
    assert np.array_equal(expect[1], got[1])
    assert expect[2] == got[2]


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "step_0000001"
    ckpt.save(tmp_path, 1, {"w": torch.zeros(1)}, {}, {"step": 1}, keep=1)
    torch.save({"step": 1, "x": Evil()}, folder / ckpt.TRAIN_STATE)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        ckpt.load_train_state(folder)
