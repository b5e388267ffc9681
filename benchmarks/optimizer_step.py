"""The AdamW step of demo pre-training on CPU: PyTorch's default (per-tensor loop) vs
``foreach=True`` vs ``fused=True``, side by side.

The profile of a demo pre-training step (``benchmarks/profile_steps.py``) puts about a fifth of
its CPU time in AdamW's element-wise operations (sqrt, mul_, add_, div, lerp_, addcmul_,
addcdiv_): the optimiser updates every parameter, including the eight learnable template volumes,
at every step. This benchmark times ``optimizer.step()`` alone on the real parameters of the demo
objective (``pretrain_demo.yaml``; the store only builds the objective) with fixed random
gradients, the three implementations interleaved (``harness.py``). The last line: default /
fused median step time (above 1: fused is faster).

Run: ``python benchmarks/optimizer_step.py --store PATH/TO/demo/store --threads 2``.

Measured 2026-12-02 on the shared 2-core machine at load 24.6-25.3 (busy: the absolute times are
inflated, the sides interleaved): 81 tensors, 11.06 M values; default 949 ms (791-1104), foreach
1239 ms (1081-1367), fused 197 ms (182-285) per step; the parameters agree after the same steps
(atol 1e-6); default / fused 4.8x. Since then the default of both engines
(:func:`mmlib.engine.schedule.adamw`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_arguments, check_load, interleave, ratio_line, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="the demo store (builds the objective)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="optimiser steps per measurement")
    add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    check_load(args.busy)
    from mmlib.engine import distributed as D
    from mmlib.engine.binding import resolve
    from mmlib.engine.config import load_config
    from mmlib.engine.pretrain import Trainer

    cfg = resolve(load_config("demo", [f"data.store={args.store}", "data.workers=0", "device=cpu"]))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp), D.setup("cpu"), progress=False)
        params = [p for p in trainer.objective.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    print(f"{len(params)} parameter tensors, {n / 1e6:.2f} M values")
    lr, wd = float(cfg["optim"]["lr"]), float(cfg["optim"]["weight_decay"])
    betas = (float(cfg["optim"]["betas"][0]), float(cfg["optim"]["betas"][1]))

    def side(**kw: bool) -> tuple[list[torch.nn.Parameter], torch.optim.AdamW]:
        copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
        gen = torch.Generator().manual_seed(0)
        for c in copies:
            c.grad = torch.randn(c.shape, generator=gen) * 1e-3
        return copies, torch.optim.AdamW(copies, lr=lr, betas=betas, weight_decay=wd, **kw)

    sides = {"default": side(), "foreach": side(foreach=True), "fused": side(fused=True)}

    def timer(opt: torch.optim.AdamW):
        def run() -> float:
            t = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            return (time.perf_counter() - t) / args.steps

        return run

    runs = interleave({k: timer(o) for k, (_, o) in sides.items()}, args.repeats, warmup=True)
    for name, r in runs.items():
        print(summarize(name, r, "ms per step", scale=1000))
    a, b, c = (sides[k][0] for k in ("default", "foreach", "fused"))
    same = all(
        torch.allclose(x, y, atol=1e-6) and torch.allclose(x, z, atol=1e-6)
        for x, y, z in zip(a, b, c)
    )
    print(f"parameters after the same steps agree (atol 1e-6): {same}")
    print(ratio_line("default / fused", runs["default"], runs["fused"]))


if __name__ == "__main__":
    main()
