"""mmlib.engine.distributed.launch: a job of several processes started from Python (no command
line), 2 gloo processes on the CPU: each rank joins the group, the result of rank 0 comes back,
a failing rank is reported, and the ranks tear down cleanly."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from mmlib.engine import distributed as D


def _sum_of_ranks(offset: int) -> dict[str, int]:
    """What each rank runs: join the group, all-reduce, leave the group open for launch."""
    info = D.setup("cpu")
    t = torch.tensor([info.rank + offset], dtype=torch.int64)
    dist.all_reduce(t)
    return {
        "rank": info.rank,
        "world": info.world_size,
        "sum": int(t),
        "local": info.local_rank,
        "backend": info.backend,
        "pid": os.getpid(),
    }


def _fails_on_rank_one() -> None:
    info = D.setup("cpu")
    if info.rank == 1:
        raise ValueError("rank one refuses")
    D.barrier(info)


def test_launch_two_gloo_processes() -> None:
    out = D.launch(_sum_of_ranks, 2, 10, timeout=120)
    assert out["rank"] == 0 and out["world"] == 2 and out["local"] == 0 and out["backend"] == "gloo"
    assert out["sum"] == 10 + 11  # both ranks took part
    assert out["pid"] != os.getpid()  # ran in a spawned process, not here
    assert not dist.is_initialized()  # this process joined nothing


def test_launch_reports_a_failing_rank_and_bad_arguments() -> None:
    with pytest.raises(RuntimeError, match="rank one refuses"):
        D.launch(_fails_on_rank_one, 2, timeout=120)
    with pytest.raises(ValueError, match="nproc must be at least 1"):
        D.launch(_sum_of_ranks, 0, 0)


def test_on_main_runs_once_and_returns_when_alone() -> None:
    info = D.DistInfo(0, 1, 0, torch.device("cpu"), "none")
    assert D.on_main(info, lambda: 42) == 42
    with pytest.raises(FileNotFoundError, match="gone"):
        D.on_main(info, lambda: (_ for _ in ()).throw(FileNotFoundError("gone")))
