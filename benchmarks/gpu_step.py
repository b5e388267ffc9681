"""The paper-scale pre-training step on one GPU: samples/s, memory and model FLOPs utilisation.

One step is what BrainMVP's pre-training does per batch, on the released-size backbones
(``BACKBONE_PRESETS["paper"]``): B studies (paper: 3) of one 96³ single-modality crop, two masked
views each concatenated into a 2B batch, encoder + no-skip decoder, MSE reconstruction of both
views, a symmetric InfoNCE on the flattened deepest features (temperature 1), backward, AdamW
(lr 3e-4, weight decay 1e-5). Each backbone is timed in fp32 (the baseline) and under
``torch.autocast(dtype=torch.bfloat16)``, optionally with ``--channels-last`` / ``--compile``.

Reported per backbone and precision: step time (median), samples/s (studies per second; each
study is two views), peak memory (``torch.cuda.max_memory_allocated``; on CPU the growth of the
peak RSS), model FLOPs per step (``torch.utils.flop_counter`` on one forward+backward, optimizer
excluded), achieved TFLOP/s and MFU against (a) the datasheet dense peak of the chip when known
(H100/H200: bf16 989, fp32 67 TFLOP/s; ``--peak-tflops`` overrides) and (b) a bf16/fp32 matmul
measured in the same run. Each precision is timed in ``--repeats`` runs (default 3) of
``--steps`` steps, interleaved; medians, spreads and the load average are printed
(``harness.py``). Results also go to ``--out`` as JSON. The last line printed is the
ratio bf16-autocast samples/s over fp32 samples/s (geometric mean over the backbones).

GPU run (paper scale): ``python benchmarks/gpu_step.py --out $OUT/gpu_step.json``.
CPU check that it runs end to end: ``python benchmarks/gpu_step.py --device cpu --quick``
(32³, batch 1, 2 steps: a functional check, its numbers mean nothing for a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mmlib.models import BACKBONE_PRESETS, build_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_arguments, check_load, interleave, summarize

DATASHEET_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Best-of-5 TFLOP/s of an ``n``×``n`` matmul in ``dtype`` (the run's own ceiling)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(3):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t) / 3)
    return 2 * n**3 / best / 1e12


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Symmetric InfoNCE of two ``(B, D)`` batches (row i of a and b are positives)."""
    a = F.normalize(a.float(), dim=1)
    b = F.normalize(b.float(), dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def make_step(net, opt, batch: dict, precision: str, device: torch.device, compiled=None):
    """One BrainMVP-shaped training step as a closure."""
    model = compiled or net
    views, target = batch["views"], batch["target"]
    b = target.shape[0]

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            recon, feats = model(views)
            rec_loss = F.mse_loss(recon.float(), target.repeat(2, 1, 1, 1, 1))
            deep = feats[-1].flatten(1)
            loss = 10 * rec_loss + rec_loss + info_nce(deep[:b], deep[b:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def count_flops(net, batch: dict) -> int:
    """Model FLOPs of one forward + backward (optimizer excluded), counted once in fp32."""
    views, target = batch["views"], batch["target"]
    with FlopCounterMode(display=False) as counter:
        recon, _ = net(views)
        F.mse_loss(recon, target.repeat(2, 1, 1, 1, 1)).backward()
    net.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def bench_one(name: str, args: argparse.Namespace, device: torch.device, peaks: dict) -> list[dict]:
    """Both precisions of one backbone: built and warmed up in turn (peak memory of each is its
    own allocations during its warm-up), then timed in ``--repeats`` interleaved runs of
    ``--steps`` steps (a run's figure is its mean step time; the row holds their median)."""
    torch.manual_seed(0)
    size = BACKBONE_PRESETS[args.scale][name]
    shape = (args.batch, 1, args.size, args.size, args.size)
    target = torch.rand(shape, device=device)
    views = torch.cat([target, target]) * (
        torch.rand((2 * args.batch, 1, 1, 1, 1), device=device) > 0.1
    )
    if args.channels_last:
        views = views.contiguous(memory_format=torch.channels_last_3d)
    batch = {"views": views, "target": target}
    flops = None
    built: dict[str, dict] = {}
    for precision in args.precisions:
        net = build_backbone(name, **size).to(device)
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
        if flops is None:
            flops = count_flops(net, batch)
        opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=1e-5)
        compiled = torch.compile(net) if args.compile else None
        step = make_step(net, opt, batch, precision, device, compiled)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            loss = step()
        _sync(device)
        warm_s = time.perf_counter() - t0
        if device.type == "cuda":
            mem_gb = (torch.cuda.max_memory_allocated(device) - before) / 2**30
        else:
            mem_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0) / 1024
        built[precision] = {
            "net": net,
            "step": step,
            "warm_s": warm_s,
            "mem_gb": mem_gb,
            "loss": loss,
        }

    def timed(precision: str):
        def run() -> float:
            step = built[precision]["step"]
            t = time.perf_counter()
            for _ in range(args.steps):
                built[precision]["loss"] = step()
            _sync(device)
            return (time.perf_counter() - t) / args.steps

        return run

    runs = interleave({p: timed(p) for p in args.precisions}, args.repeats)
    rows = []
    for precision in args.precisions:
        b = built[precision]
        step_s = runs[precision].median
        achieved = flops / step_s / 1e12
        rows.append(
            {
                "backbone": name,
                "precision": precision,
                "params_m": b["net"].num_parameters() / 1e6,
                "step_s": step_s,
                "step_s_min": runs[precision].spread[0],
                "step_s_max": runs[precision].spread[1],
                "load": max(runs[precision].loads),
                "warmup_s": b["warm_s"],
                "samples_per_s": args.batch / step_s,
                "peak_mem_gb": b["mem_gb"],
                "model_tflop_per_step": flops / 1e12,
                "achieved_tflops": achieved,
                "mfu_datasheet": achieved / peaks["datasheet"][precision]
                if peaks["datasheet"].get(precision)
                else None,
                "mfu_measured_matmul": achieved / peaks["measured"][precision],
                "loss": float(b["loss"]),
                "runs": runs[precision],
            }
        )
    built.clear()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbones", nargs="+", default=["uniformer", "unet", "swinunetr"])
    parser.add_argument("--scale", default="paper", choices=["smoke", "demo", "paper"])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="channels_last_3d model and input"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="override the bf16 datasheet peak"
    )
    parser.add_argument(
        "--quick", action="store_true", help="32^3, batch 1, 2 steps: checks that it runs"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_step.json"))
    add_arguments(parser)
    args = parser.parse_args()
    check_load(args.busy)
    if args.quick:
        args.size, args.batch, args.steps, args.warmup = 32, 1, 2, 1
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        chip = torch.cuda.get_device_name(device)
    else:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        chip = "cpu"
    datasheet = next((v for k, v in DATASHEET_TFLOPS.items() if k in chip), {})
    if args.peak_tflops:
        datasheet = {**datasheet, "bf16": args.peak_tflops}
    n = 8192 if device.type == "cuda" else 512
    measured = {
        "bf16": measured_matmul_tflops(device, torch.bfloat16, n),
        "fp32": measured_matmul_tflops(device, torch.float32, n),
    }
    peaks = {"datasheet": datasheet, "measured": measured}
    if device.type == "cuda":
        print(
            f"TF32: cudnn convolutions {torch.backends.cudnn.allow_tf32}, matmuls "
            f"{torch.backends.cuda.matmul.allow_tf32} (the fp32 baseline uses PyTorch's defaults)"
        )
    print(
        f"device {chip}; torch {torch.__version__}; {args.size}^3, batch {args.batch} (x2 views), "
        f"{args.scale} sizes; matmul measured bf16 {measured['bf16']:.2f} / "
        f"fp32 {measured['fp32']:.2f} TFLOP/s; "
        f"datasheet {datasheet or 'unknown'}"
    )
    rows = []
    print(
        f"{'backbone':<10} {'prec':<5} {'params':>7} {'step ms':>9} {'samples/s':>10} "
        f"{'mem GB':>7} "
        f"{'TFLOP/step':>10} {'TFLOP/s':>8} {'MFU sheet':>9} {'MFU mm':>7}"
    )
    for name in args.backbones:
        for r in bench_one(name, args, device, peaks):
            rows.append(r)
            sheet = f"{100 * r['mfu_datasheet']:.1f}%" if r["mfu_datasheet"] is not None else "-"
            print(
                f"{name:<10} {r['precision']:<5} {r['params_m']:>6.1f}M {1e3 * r['step_s']:>9.1f} "
                f"{r['samples_per_s']:>10.2f} {r['peak_mem_gb']:>7.2f} "
                f"{r['model_tflop_per_step']:>10.3f} "
                f"{r['achieved_tflops']:>8.2f} {sheet:>9} {100 * r['mfu_measured_matmul']:>6.1f}%"
            )
            print("  " + summarize(f"{name} {r['precision']} step", r["runs"], "ms", 1e3))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "device": chip,
        "torch": torch.__version__,
        "args": {k: str(v) for k, v in vars(args).items()},
        "peaks_tflops": peaks,
        "rows": [{k: v for k, v in r.items() if k != "runs"} for r in rows],
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    ratios = []
    for name in args.backbones:
        by = {r["precision"]: r for r in rows if r["backbone"] == name}
        if "fp32" in by and "bf16" in by:
            ratios.append(by["bf16"]["samples_per_s"] / by["fp32"]["samples_per_s"])
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        loads = [v for r in rows for v in r["runs"].loads]
        print(
            f"ratio of medians bf16 autocast / fp32 samples/s (geomean over {len(ratios)} "
            f"backbones): {geo:.2f}x (load average {min(loads):.1f}-{max(loads):.1f} on "
            f"{os.cpu_count()} cores)"
        )


if __name__ == "__main__":
    main()
