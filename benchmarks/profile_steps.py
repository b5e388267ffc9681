"""Where a demo fine-tuning step, a demo evaluation and a demo pre-training step spend their
time on CPU (a profile, not a benchmark: nothing is compared, no default changes).

Builds the demo fine-tuning trainer (``finetune_demo.yaml``: demo U-Net, 32³ crops, batch 2,
four channels) on a store (``--store``; the smoke store works: the crops are 32³ either way),
then, after ``--warmup`` steps:

- splits ``--steps`` steps into data loading (the loader's next batch) and the optimiser step
  (fill, flips, forward, loss, backward, AdamW), wall time each;
- profiles the same steps with ``torch.profiler`` (CPU, operator totals, the top 15 by self
  time);
- times and profiles the sliding-window prediction of one test volume of demo size
  (``--volume``, default 72 88 76 voxels: a BraTS-PED-like head at 2 mm) as ``score_run`` does
  (``eval.roi: full``, one window);
- with ``--pretrain-store``: profiles ``--steps`` pre-training steps of the demo preset (the
  default BrainMVP objective, batch and accumulation of ``pretrain_demo.yaml``) on one batch
  held in memory, as ``benchmarks/pretrain.py``'s compute-only side does.

Run: ``python benchmarks/profile_steps.py --store PATH/TO/store --pretrain-store PATH/TO/store``.
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
    parser.add_argument(
        "--store", default=None, help="a store with brats_ped studies (fine-tuning)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--volume", type=int, nargs=3, default=[72, 88, 76])
    parser.add_argument("--pretrain-store", default=None, help="also profile pre-training steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    check_load()
    if args.store:
        profile_finetune(args.store, args.steps, args.warmup, args.volume)
    if args.pretrain_store:
        profile_pretrain(args.pretrain_store, args.steps, args.warmup)


def profile_finetune(store: str, steps: int, warmup: int, volume: list[int]) -> None:
    """Profile demo fine-tuning steps and the evaluation of one demo-size volume."""
    from mmlib.engine.config import load_config
    from mmlib.engine.finetune import FinetuneTrainer
    from mmlib.evaluate.inference import predict_volume, window_size

    cfg = load_config(
        "demo",
        {"task": "brats_ped", "data.store": store, "train.steps": warmup + steps},
        kind="finetune",
    )
    trainer = FinetuneTrainer(cfg, "scratch", None, progress=False)
    trainer.net.train()
    it = iter(trainer.loader)
    for _ in range(warmup):
        trainer.step(next(it))
    load_s, step_s, batches = [], [], []
    for _ in range(steps):
        t = time.perf_counter()
        batch = next(it)
        load_s.append(time.perf_counter() - t)
        batches.append(batch)
        t = time.perf_counter()
        trainer.step(batch)
        step_s.append(time.perf_counter() - t)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"fine-tuning: data {med(load_s):.3f} s, step {med(step_s):.3f} s (medians of {steps})")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            trainer.step(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    net = trainer.net.eval()
    x = torch.rand(1, len(trainer.spec.modalities), *volume)
    roi = window_size(cfg)
    ev = cfg["eval"]
    with torch.no_grad():
        predict_volume(net, x, roi, int(ev["sw_batch_size"]), float(ev["overlap"]))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            predict_volume(net, x, roi, int(ev["sw_batch_size"]), float(ev["overlap"]))
            times.append(time.perf_counter() - t)
        print(f"evaluation: one {volume} volume {med(times):.3f} s (median of 3), roi {roi}")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            predict_volume(net, x, roi, int(ev["sw_batch_size"]), float(ev["overlap"]))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def profile_pretrain(store: str, steps: int, warmup: int) -> None:
    """Profile demo pre-training steps on one batch held in memory."""
    import itertools
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    from mmlib.engine import distributed as D
    from mmlib.engine.binding import resolve
    from mmlib.engine.config import load_config
    from mmlib.engine.pretrain import Trainer

    over = [
        f"data.store={store}",
        "data.workers=0",
        "log.tensorboard=false",
        "samples.n=0",
        "device=cpu",
        f"checkpoint.every={10**9}",
    ]
    cfg = resolve(load_config("demo", over))
    info = D.setup("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp), info, progress=False)
        batch = next(iter(trainer._loader(0, 0)))
        params = [p for p in trainer.objective.parameters() if p.requires_grad]
        gb = int(cfg["train"]["batch_size"]) * int(cfg["train"]["accum"])
        clip = cfg["train"]["clip"]
        trainer._t0 = time.perf_counter()

        def step() -> float:
            out = trainer._one_step(itertools.repeat(batch), 0, params, clip, gb)
            return float(out["step_time_s"])

        for _ in range(warmup):
            step()
        times = sorted(step() for _ in range(steps))
        print(
            f"pre-training: step {times[len(times) // 2]:.3f} s (median of {steps}; batch "
            f"{cfg['train']['batch_size']} x accum {cfg['train']['accum']}, crop "
            f"{cfg['data'].get('crop_size')})"
        )
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
