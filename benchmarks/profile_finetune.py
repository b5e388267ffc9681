"""Where a demo fine-tuning step and a demo evaluation spend their time on CPU (a profile, not
a benchmark: nothing is compared, no default changes).

Builds the demo fine-tuning trainer (``finetune_demo.yaml``: demo U-Net, 32³ crops, batch 2,
four channels) on a store (``--store``; the smoke store works: the crops are 32³ either way),
then, after ``--warmup`` steps:

- splits ``--steps`` steps into data loading (the loader's next batch) and the optimiser step
  (fill, flips, forward, loss, backward, AdamW), wall time each;
- profiles the same steps with ``torch.profiler`` (CPU, operator totals, the top 15 by self
  time);
- times and profiles the sliding-window prediction of one test volume of demo size
  (``--volume``, default 72 88 76 voxels: a BraTS-PED-like head at 2 mm) as ``score_run`` does
  (``eval.roi: full``, one window).

Run: ``MMLIB_WORK=... python benchmarks/profile_finetune.py --store PATH/TO/store --threads 2``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import check_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="a curated store with brats_ped studies")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--volume", type=int, nargs=3, default=[72, 88, 76])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    check_load()
    from mmlib.engine.config import load_config
    from mmlib.engine.finetune import FinetuneTrainer
    from mmlib.evaluate.inference import predict_volume, window_size

    cfg = load_config(
        "demo",
        {"task": "brats_ped", "data.store": args.store, "train.steps": args.warmup + args.steps},
        kind="finetune",
    )
    trainer = FinetuneTrainer(cfg, "scratch", None, progress=False)
    trainer.net.train()
    it = iter(trainer.loader)
    for _ in range(args.warmup):
        trainer.step(next(it))
    load_s, step_s, batches = [], [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        batch = next(it)
        load_s.append(time.perf_counter() - t)
        batches.append(batch)
        t = time.perf_counter()
        trainer.step(batch)
        step_s.append(time.perf_counter() - t)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(
        f"fine-tuning: data {med(load_s):.3f} s, step {med(step_s):.3f} s (medians of {args.steps})"
    )
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            trainer.step(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    net = trainer.net.eval()
    x = torch.rand(1, len(trainer.spec.modalities), *args.volume)
    roi = window_size(cfg)
    ev = cfg["eval"]
    with torch.no_grad():
        predict_volume(net, x, roi, int(ev["sw_batch_size"]), float(ev["overlap"]))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            predict_volume(net, x, roi, int(ev["sw_batch_size"]), float(ev["overlap"]))
            times.append(time.perf_counter() - t)
        print(f"evaluation: one {args.volume} volume {med(times):.3f} s (median of 3), roi {roi}")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            predict_volume(net, x, roi, int(ev["sw_batch_size"]), float(ev["overlap"]))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
