"""A demo fine-tuning run on CPU in fp32 and in bf16: training steps and scoring, side by side.

Two measurements, each side run ``--repeats`` times, interleaved (``harness``), on the store's
brats_ped task with the demo preset (``finetune_demo.yaml``):

1. **Training** (``train.amp``): ``--steps`` optimiser steps of one demo trainer (scratch,
   batch 2, 32³ crops) on batches loaded beforehand, fp32 against bf16 autocast (thin
   convolutions kept in fp32: ``mmlib.engine.binding.guard_cpu_bf16_convs``); seconds per step.
2. **Scoring** (``eval.amp``): the sliding-window logits of ``--volumes`` test volumes, fp32
   against bf16; seconds per volume, and the share of voxels whose predicted region labels
   differ between the two.

Then the time of a demo run (``train.steps`` steps and the task's test volumes, from the
medians) at each precision; the last line is its ratio of medians, fp32 / bf16. Needs a demo
store: ``mmlib curate --scale demo`` (or ``make book``) makes it. Whether bf16 changes what a
run learns is a question for paired seeds, not for this benchmark (see the note on issue 18).

Run: ``python benchmarks/finetune_step.py [--store PATH] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Runs, add_arguments, check_load, interleave, ratio_line, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default=None, help="a demo store (default: the scale's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--volumes", type=int, default=3, help="test volumes per repeat")
    add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    check_load(args.busy)
    from mmlib.data.labelled import Volumes
    from mmlib.engine.config import load_config
    from mmlib.engine.finetune import FinetuneTrainer
    from mmlib.evaluate.inference import predict_volume, window_size
    from mmlib.evaluate.scoring import _test_input

    over = {"task": "brats_ped", "data.label_fraction": 0.2, "train.steps": args.steps + 2}
    if args.store:
        over["data.store"] = args.store
    trainers = {}
    for amp in ("off", "bf16"):
        cfg = load_config("demo", {**over, "train.amp": amp}, kind="finetune")
        trainers[amp] = FinetuneTrainer(cfg, "scratch", None, progress=False)
    batches = list(trainers["off"].loader)
    for tr in trainers.values():  # warm-up: the first steps allocate
        tr.net.train()
        for b in batches[:2]:
            tr.step(b)

    def train(amp: str) -> float:
        t = time.perf_counter()
        for b in batches[2:]:
            trainers[amp].step(b)
        return (time.perf_counter() - t) / len(batches[2:])

    steps = interleave({"fp32": lambda: train("off"), "bf16": lambda: train("bf16")}, args.repeats)
    print(f"training: {len(batches) - 2} steps per repeat, batch {cfg['train']['batch_size']}")
    for name, r in steps.items():
        print("  " + summarize(f"train.amp {name}", r, "s/step"))
    print("  " + ratio_line("fp32 / bf16 (training step)", steps["fp32"], steps["bf16"]))

    tr = trainers["off"]
    net, spec = tr.net.eval(), tr.spec
    ds = Volumes(tr.store, tr.split.test[: args.volumes], spec.modalities)
    images = [_test_input(ds[i], spec, "zero", None, None, "cpu") for i in range(len(ds))]
    roi = window_size(cfg)

    def score(amp: str) -> float:
        t = time.perf_counter()
        for x in images:
            predict_volume(net, x, roi, amp=amp)
        return (time.perf_counter() - t) / len(images)

    vols = interleave({"fp32": lambda: score("off"), "bf16": lambda: score("bf16")}, args.repeats)
    shapes = ", ".join("x".join(str(s) for s in x.shape[2:]) for x in images)
    print(f"scoring: {len(images)} test volumes ({shapes}), roi {roi}")
    for name, r in vols.items():
        print("  " + summarize(f"eval.amp {name}", r, "s/volume"))
    changed = []
    for x in images:
        a = spec.regions.predict(predict_volume(net, x, roi, amp="off"))
        b = spec.regions.predict(predict_volume(net, x, roi, amp="bf16"))
        changed.append(float((a != b).float().mean()))
    print(f"  voxel labels that differ, bf16 vs fp32: {100 * max(changed):.3f} % at most")
    print("  " + ratio_line("fp32 / bf16 (scoring)", vols["fp32"], vols["bf16"]))

    n_steps = int(load_config("demo", kind="finetune")["train"]["steps"])
    n_test = len(tr.split.test)
    run = {
        k: Runs(
            [n_steps * s + n_test * v for s, v in zip(steps[k].values, vols[k].values)],
            steps[k].loads + vols[k].loads,
        )
        for k in ("fp32", "bf16")
    }
    print(
        f"a demo run ({n_steps} steps, {n_test} test volumes; data, setup and metrics not counted)"
    )
    for name, r in run.items():
        print("  " + summarize(name, r, "s/run"))
    print(ratio_line("fp32 / bf16 (a demo run)", run["fp32"], run["bf16"]))


if __name__ == "__main__":
    main()
