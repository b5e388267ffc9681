"""Forward+backward time and peak memory of each backbone at 64³ on CPU: eager vs variants.

For every backbone (``unet``, ``uniformer``, ``swinunetr``) one training step (forward, MSE loss
on the reconstruction, backward) is timed in three modes, side by side:

- ``eager``: plain PyTorch, contiguous (NCDHW) tensors: the baseline;
- ``channels_last``: model and input in ``torch.channels_last_3d`` memory format;
- ``compile``: ``torch.compile(model)`` (inductor), compile time reported apart.

Each mode runs in a fresh subprocess so that its peak resident memory (growth of ``ru_maxrss``
over the steps) is its own; every (backbone, mode) subprocess runs ``--repeats`` times (default
3), interleaved round by round, each run giving its median step time. Medians of the runs,
their spread and the load average are printed (``harness.py``). The last line printed is the
ratio of medians eager time / best-variant time (geometric mean over the backbones): above 1
means a variant helps.

Run: ``OMP_NUM_THREADS=1 python benchmarks/backbones.py`` (the default is ``--quick``: smoke-size
networks, batch 1, 2 timed steps, and ``torch.compile`` only for the UniFormer, the one backbone
where it helped on CPU: on the U-Net and SwinUNETR inductor took 1-6 minutes to compile and
stepped slower than eager on a 2-core machine); ``--full`` uses the demo-size networks, 5 timed
steps and compiles every backbone; ``--scale paper`` the released sizes (slow on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_arguments, check_load, fmt, interleave, summarize

MODES = ("eager", "channels_last", "compile")
NAMES = ("unet", "uniformer", "swinunetr")
QUICK_COMPILE = ("uniformer",)
"""Backbones compiled in a ``--quick`` run (where compilation paid off on CPU)."""


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(
    name: str, mode: str, scale: str, size: int, batch: int, steps: int, threads: int
) -> dict:
    """Time ``steps`` training steps of one backbone in one mode (run in its own process)."""
    from mmlib.models import BACKBONE_PRESETS, build_backbone

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_backbone(name, **BACKBONE_PRESETS[scale][name])
    x = torch.randn(batch, 1, size, size, size)
    if mode == "channels_last":
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    step_fn = net
    if mode == "compile":
        step_fn = torch.compile(net)

    def step() -> None:
        recon, _ = step_fn(x)
        loss = torch.nn.functional.mse_loss(recon, x)
        loss.backward()
        net.zero_grad(set_to_none=True)

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    step()  # warm-up (and compilation)
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {
        "name": name,
        "mode": mode,
        "step_s": sorted(times)[len(times) // 2],
        "first_step_s": first,
        "peak_mb": _rss_mb() - rss0,
        "params_m": net.num_parameters() / 1e6,
    }


def _run_worker(args: argparse.Namespace, name: str, mode: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        mode,
        "--scale",
        args.scale,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"name": name, "mode": mode, "error": tail[0][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke-size networks, 2 timed steps (the default)"
    )
    parser.add_argument("--full", action="store_true", help="demo-size networks, 5 timed steps")
    parser.add_argument("--scale", default=None, choices=["smoke", "demo", "paper"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--names", nargs="+", default=list(NAMES), choices=NAMES)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    add_arguments(parser)
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale is None:
        args.scale = "demo" if args.full else "smoke"
    if args.steps is None:
        args.steps = 5 if args.full else 2
    if args.worker:
        out = worker(
            args.worker[0],
            args.worker[1],
            args.scale,
            args.size,
            args.batch,
            args.steps,
            args.threads,
        )
        print(json.dumps(out))
        return

    check_load(args.busy)
    print(
        f"forward+backward at {args.size}^3, batch {args.batch}, {args.scale} sizes, "
        f"{args.threads} thread(s), median of {args.steps} steps per run, torch "
        f"{torch.__version__}"
    )
    results: dict[tuple[str, str], list[dict]] = {}

    def side(name: str, mode: str):
        def run() -> float:
            r = _run_worker(args, name, mode)
            results.setdefault((name, mode), []).append(r)
            return r.get("step_s", float("nan"))

        return run

    sides = {
        f"{name} {mode}": side(name, mode)
        for name in args.names
        for mode in args.modes
        if mode != "compile" or args.full or name in QUICK_COMPILE
    }
    runs = interleave(sides, args.repeats)
    ratios = []
    for name in args.names:
        rows = {m: results[(name, m)] for m in args.modes if (name, m) in results}
        for mode, rs in rows.items():
            errors = [r["error"] for r in rs if "error" in r]
            if errors:
                print(f"{name} {mode}: error {errors[0]}")
                continue
            peak = max(r["peak_mb"] for r in rs)
            comp = [r["first_step_s"] - r["step_s"] for r in rs]
            extra = f", compile {fmt(sorted(comp)[len(comp) // 2])} s" if mode == "compile" else ""
            print(
                summarize(
                    f"{name} {mode} ({rs[0]['params_m']:.2f}M params, peak +{peak:.0f} MB{extra})",
                    runs[f"{name} {mode}"],
                    "s/step",
                )
            )
        if "eager" not in rows or any("error" in r for r in rows["eager"]):
            continue
        variants = [
            runs[f"{name} {m}"].median
            for m in rows
            if m != "eager" and not any("error" in r for r in rows[m])
        ]
        if variants:
            ratios.append(runs[f"{name} eager"].median / min(variants))
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        loads = [v for r in runs.values() for v in r.loads]
        print(
            f"ratio of medians eager / best variant step time (geomean over {len(ratios)} "
            f"backbones): {geo:.2f}x (load average {min(loads):.1f}-{max(loads):.1f} on "
            f"{os.cpu_count()} cores)"
        )


if __name__ == "__main__":
    main()
