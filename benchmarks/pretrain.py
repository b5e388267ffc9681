"""Pre-training throughput: samples/s, step time and the share of time spent waiting for data.

For each scale (default ``smoke`` and ``demo`` on the CPU) the benchmark runs the real engine
(:class:`mmlib.engine.pretrain.Trainer`: store → sampler → DataLoader → objective → AdamW) for a
few optimiser steps, end to end, and reads samples/s, step time and the data-wait fraction from
the run's ``metrics.csv``. The baseline, in the same run, is the same trainer stepping on one
batch already in memory (no loading at all): the ratio *end-to-end / compute-only throughput*
says how much the data path costs (1.00× = nothing). Both sides run ``--repeats`` times
(default 3), interleaved; medians, spreads and the load average are printed (``harness.py``).
The last line prints the ratio of medians for the last scale.

Run on a CPU::

    OMP_NUM_THREADS=2 python benchmarks/pretrain.py                  # smoke and demo
    python benchmarks/pretrain.py --scales demo --steps 10 --workers 2

On a GPU (paper scale: 96³ crops, UniFormer-S, bf16, batch 3), with a store written here of
``--synthetic-studies`` BraTS-sized 1 mm studies (the arrays are random; the reading cost is
that of real ones), and the paper's schedule costed in GPU-hours::

    python benchmarks/pretrain.py --scales paper --device cuda --synthetic-studies 24 --steps 30
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_arguments, check_load, interleave, ratio_line, summarize

PAPER_EPOCHS = 1500
PAPER_SCANS = 16022
PAPER_STUDIES = 3755


def synthetic_store(
    root: Path, n: int, shape: tuple[int, int, int] = (160, 192, 160), spacing: float = 1.0
) -> Path:
    """``n`` studies of four random 1 mm modalities in mmlib's store format (for GPU timing)."""
    from mmlib.data.store import init_store, write_study

    rng = np.random.default_rng(0)
    init_store(root, spacing)
    for i in range(n):
        mods = ["flair", "t1", "t1c", "t2"]
        images = {m: rng.random(shape, dtype=np.float32) for m in mods}
        affine = np.diag([spacing] * 3 + [1.0])
        affine[:3, 3] = -np.asarray(shape) * spacing / 2
        write_study(
            root,
            {
                "study": f"syn{i:04d}",
                "source": "synthetic",
                "modalities": mods,
                "shape": list(shape),
                "spacing": [spacing] * 3,
                "affine": affine.tolist(),
                "center_world": [0.0, 0.0, 0.0],
                "label": False,
                "attrs": {},
                "split": "train",
                "task": None,
            },
            images,
        )
    return root


def measure(
    scale: str,
    steps: int,
    workers: int | None,
    device: str,
    store: str | None,
    tmp: Path,
    repeats: int,
) -> dict:
    """End-to-end and compute-only throughput of ``steps`` optimiser steps at ``scale``."""
    from mmlib.engine import distributed as D
    from mmlib.engine.binding import resolve
    from mmlib.engine.config import load_config
    from mmlib.engine.pretrain import Trainer
    from mmlib.runs import read_metrics

    over = [
        f"train.max_steps={steps + 1}",
        "log.tensorboard=false",
        f"checkpoint.every={10**9}",
        "samples.n=0",
        f"device={device}",
        f"schedule.epochs={10**6}",
    ]
    if workers is not None:
        over.append(f"data.workers={workers}")
    if store:
        over.append(f"data.store={store}")
    cfg = resolve(load_config(scale, over))
    info = D.setup(device)
    gb = int(cfg["train"]["batch_size"]) * int(cfg["train"]["accum"])
    e2e_rows: list[dict[str, float]] = []

    def end_to_end() -> float:
        run = tmp / f"{scale}-e2e-{len(e2e_rows)}"
        run.mkdir(parents=True)
        Trainer(cfg, run, info, progress=False).train()
        rows = read_metrics(run / "metrics.csv")[1:]  # the first step warms up (workers)
        e2e_rows.append(
            {
                k: float(np.mean([r[k] for r in rows]))
                for k in ("samples_per_s", "step_time_s", "data_wait_frac")
            }
            | {"peak_mem_mb": max(r["mem_mb"] for r in rows)}
        )
        return e2e_rows[-1]["samples_per_s"]

    base = Trainer(cfg, tmp / f"{scale}-mem", info, progress=False)
    batch = next(iter(base._loader(0, 0)))
    params = [p for p in base.objective.parameters() if p.requires_grad]

    def in_memory() -> float:
        base._t0 = time.perf_counter()
        times = [
            base._one_step(itertools.repeat(batch), 0, params, cfg["train"]["clip"], gb)[
                "step_time_s"
            ]
            for _ in range(steps + 1)
        ]
        return gb / float(np.mean(times[1:]))

    runs = interleave({"e2e": end_to_end, "memory": in_memory}, repeats)
    med = {k: float(np.median([r[k] for r in e2e_rows])) for k in e2e_rows[0]}
    out = {
        "scale": scale,
        "device": info.device.type,
        "amp": cfg["train"]["amp"],
        "threads": torch.get_num_threads(),
        "workers": int(cfg["data"]["workers"]),
        "crop": cfg["data"]["crop_size"],
        "k": cfg["data"]["k"],
        "batch": gb,
        "model": cfg["model"]["name"],
        "objective": cfg["objective"]["name"],
        "steps": steps,
        "e2e_samples_per_s": runs["e2e"].median,
        "e2e_step_time_s": med["step_time_s"],
        "data_wait_frac": med["data_wait_frac"],
        "memory_step_time_s": gb / runs["memory"].median,
        "memory_samples_per_s": runs["memory"].median,
        "peak_mem_mb": max(r["peak_mem_mb"] for r in e2e_rows),
        "runs": runs,
    }
    out["ratio"] = out["e2e_samples_per_s"] / out["memory_samples_per_s"]
    if info.device.type == "cuda":
        sps = out["e2e_samples_per_s"]
        out["paper_gpu_hours_per_gpu_scans"] = PAPER_EPOCHS * PAPER_SCANS / sps / 3600
        out["paper_gpu_hours_per_gpu_studies"] = PAPER_EPOCHS * PAPER_STUDIES / sps / 3600
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--scales", default="smoke,demo", help="comma-separated presets. Default: smoke,demo"
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed optimiser steps (default smoke 20, demo 6, paper 20)",
    )
    ap.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: the preset's)"
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto. Default: cpu")
    ap.add_argument(
        "--store", default=None, help="a store folder (default: the scale's embedded-cohort store)"
    )
    ap.add_argument(
        "--synthetic-studies",
        type=int,
        default=0,
        help="write a synthetic 1 mm store of N studies and use it",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    add_arguments(ap)
    args = ap.parse_args()
    check_load(args.busy)
    default_steps = {"smoke": 20, "demo": 6, "paper": 20}
    results = []
    with tempfile.TemporaryDirectory(prefix="mmlib-bench-pretrain-") as tmp:
        store = args.store
        if args.synthetic_studies:
            store = str(synthetic_store(Path(tmp) / "store", args.synthetic_studies))
        for scale in args.scales.split(","):
            r = measure(
                scale,
                args.steps or default_steps.get(scale, 10),
                args.workers,
                args.device,
                store,
                Path(tmp),
                args.repeats,
            )
            results.append(r)
    print()
    for r in results:
        print(summarize(f"{r['scale']} end-to-end", r["runs"]["e2e"], "samples/s"))
        print(summarize(f"{r['scale']} one batch in memory", r["runs"]["memory"], "samples/s"))
    print(
        f"{'scale':<6} {'device':<6} {'amp':<5} {'batch':>5} {'crop':>5} {'workers':>7} "
        f"{'samples/s':>10} "
        f"{'step s':>8} {'data wait':>9} {'in-memory samples/s':>20} {'peak MB':>8}"
    )
    for r in results:
        print(
            f"{r['scale']:<6} {r['device']:<6} {r['amp']:<5} {r['batch']:>5} {r['crop']!s:>5} "
            f"{r['workers']:>7} "
            f"{r['e2e_samples_per_s']:>10.2f} {r['e2e_step_time_s']:>8.3f} "
            f"{100 * r['data_wait_frac']:>8.1f}% "
            f"{r['memory_samples_per_s']:>20.2f} {r['peak_mem_mb']:>8.0f}"
        )
        if "paper_gpu_hours_per_gpu_scans" in r:
            h = r["paper_gpu_hours_per_gpu_scans"]
            print(
                f"  paper schedule ({PAPER_EPOCHS} epochs x {PAPER_SCANS} scans) at "
                f"{r['e2e_samples_per_s']:.1f} "
                f"samples/s: {h:,.0f} GPU-hours ({h / 8 / 24:,.1f} days on 8 GPUs at linear "
                f"scaling); {r['paper_gpu_hours_per_gpu_studies']:,.0f} GPU-hours if an epoch is "
                f"{PAPER_STUDIES} studies"
            )
    if args.json:
        args.json.write_text(
            json.dumps([{k: v for k, v in r.items() if k != "runs"} for r in results], indent=2)
        )
    last = results[-1]
    assert math.isfinite(last["ratio"])
    print(
        ratio_line(
            f"end-to-end / in-memory throughput ({last['scale']}, data wait "
            f"{100 * last['data_wait_frac']:.1f}%)",
            last["runs"]["e2e"],
            last["runs"]["memory"],
        )
    )


if __name__ == "__main__":
    main()
