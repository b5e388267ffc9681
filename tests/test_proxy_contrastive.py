"""Tests of mmlib.proxy.contrastive: InfoNCE by hand, and gathered across 2 gloo processes."""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmlib.proxy.contrastive import InfoNCELoss, ProjectionHead, info_nce


def test_info_nce_equals_hand_computed_case():
    za = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # normalised: (0.6, 0.8), (1, 0)
    zb = torch.tensor([[0.0, 2.0], [5.0, 0.0]])  # normalised: (0, 1), (1, 0)
    tau = 0.5
    # similarities a_i . b_j
    s = [[0.8, 0.6], [0.0, 1.0]]

    def ce(row, i):
        return -math.log(math.exp(row[i] / tau) / sum(math.exp(v / tau) for v in row))

    l_ab = (ce(s[0], 0) + ce(s[1], 1)) / 2
    cols = [[s[0][0], s[1][0]], [s[0][1], s[1][1]]]  # b_i . a_j
    l_ba = (ce(cols[0], 0) + ce(cols[1], 1)) / 2
    got = info_nce(za, zb, temperature=tau)
    assert got.item() == pytest.approx((l_ab + l_ba) / 2, rel=1e-6)
    # flattening: (B, C, X, Y, Z) features give the same loss as their flat vectors
    fa, fb = torch.randn(3, 2, 2, 2, 2), torch.randn(3, 2, 2, 2, 2)
    assert torch.allclose(info_nce(fa, fb), info_nce(fa.flatten(1), fb.flatten(1)))
    # identical, well-separated pairs give a lower loss than shuffled ones
    e = torch.eye(4)
    assert info_nce(e, e, 0.1) < info_nce(e, e.roll(1, 0), 0.1)


def test_info_nce_rejects_bad_arguments():
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.ones(2, 3), torch.ones(2, 3), temperature=0.0)


def test_projection_head_is_optional():
    fa, fb = torch.randn(4, 16, 2, 2, 2), torch.randn(4, 16, 2, 2, 2)
    assert torch.allclose(InfoNCELoss()(fa, fb), info_nce(fa, fb))
    head = ProjectionHead(16, hidden=8, out=4)
    assert head(fa).shape == (4, 4)
    loss = InfoNCELoss(projection=head)(fa, fb)
    loss.backward()
    assert head.net[0].weight.grad is not None


def _worker(rank: int, world: int, za: torch.Tensor, zb: torch.Tensor, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a FileStore rendezvous: no port to race for with other tests on the machine
    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=world
    )
    try:
        n = za.shape[0] // world
        a = za[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        b = zb[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        loss = info_nce(a, b, temperature=0.7, gather_distributed=True)
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "ga": a.grad, "gb": b.grad},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        # gloo aborts a rank whose peer tears down its pairs while it still talks to it
        # ("terminate called without an active exception"): leave together
        dist.barrier()
        dist.destroy_process_group()


def test_gathered_info_nce_across_two_gloo_processes_equals_one_process():
    g = torch.Generator().manual_seed(0)
    world, n, d = 2, 3, 5
    za = torch.randn(world * n, d, generator=g)
    zb = za + 0.5 * torch.randn(world * n, d, generator=g)
    a = za.clone().requires_grad_(True)
    b = zb.clone().requires_grad_(True)
    ref = info_nce(a, b, temperature=0.7)
    ref.backward()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, za, zb, tmp), nprocs=world, join=True)
        res = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]
    # the mean of the ranks' losses is the loss of the concatenated batch
    assert torch.stack([r["loss"] for r in res]).mean().item() == pytest.approx(
        ref.item(), rel=1e-5
    )
    # each rank's input gradient holds the gradient of *all* ranks' losses (sum); DDP's
    # averaging over ranks then gives exactly the single-process gradient
    ga = torch.cat([r["ga"] for r in res]) / world
    gb = torch.cat([r["gb"] for r in res]) / world
    assert torch.allclose(ga, a.grad, atol=1e-6) and torch.allclose(gb, b.grad, atol=1e-6)
    # and the negatives really came from the other rank: a local-only loss differs
    local = torch.stack(
        [info_nce(za[r * n : (r + 1) * n], zb[r * n : (r + 1) * n], 0.7) for r in range(world)]
    ).mean()
    assert abs(local.item() - ref.item()) > 1e-3
