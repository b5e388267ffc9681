"""mmlib.engine.schedule: warm-up then one cosine, in optimiser steps, never rising again."""

from __future__ import annotations

import pytest
import torch

from mmlib.engine.schedule import WarmupCosine, build_scheduler, lr_at


def test_closed_form_endpoints_and_monotone_decay() -> None:
    total, warm, base, low = 50, 5, 1e-3, 1e-5
    lrs = [lr_at(s, total, base, warm, low) for s in range(total + 20)]
    assert lrs[0] == pytest.approx(base / (warm + 1))
    assert lrs[warm] == pytest.approx(base)
    assert all(b > a for a, b in zip(lrs[:warm], lrs[1 : warm + 1]))
    assert all(b <= a + 1e-15 for a, b in zip(lrs[warm:], lrs[warm + 1 :]))  # never rises again
    assert lrs[total] == pytest.approx(low) and lrs[-1] == pytest.approx(low)
    assert lr_at(warm + (total - warm) // 2, total, base, warm, low) == pytest.approx(
        (base + low) / 2, rel=0.05
    )


def test_scheduler_matches_closed_form_and_survives_state_dict() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = build_scheduler(opt, total=20, warmup=3, min_lr=0.01)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([p], lr=0.1)
    sched2 = build_scheduler(opt2, total=20, warmup=3, min_lr=0.01)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    for _ in range(10, 25):
        seen.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert seen == pytest.approx([lr_at(s, 20, 0.1, 3, 0.01) for s in range(25)])


def test_ill_arguments() -> None:
    with pytest.raises(ValueError, match="total"):
        WarmupCosine(0)


def test_adamw_is_fused_on_cpu_and_steps_like_the_default() -> None:
    import torch

    from mmlib.engine.schedule import adamw

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(50, 7)), torch.nn.Parameter(torch.randn(3))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused = adamw([{"params": a[:1]}, {"params": a[1:], "lr": 1e-2}], lr=1e-3, weight_decay=0.1)
    plain = torch.optim.AdamW(
        [{"params": b[:1]}, {"params": b[1:], "lr": 1e-2}], lr=1e-3, weight_decay=0.1
    )
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    for _ in range(5):
        g = [torch.randn_like(p) for p in a]
        for p, q, gg in zip(a, b, g):
            p.grad, q.grad = gg.clone(), gg.clone()
        fused.step()
        plain.step()
    for p, q in zip(a, b):
        assert torch.allclose(p, q, atol=1e-6)
