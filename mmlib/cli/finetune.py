"""``mmlib finetune``: fine-tune and score one run or a grid of runs.

``mmlib finetune [--config SCALE|FILE] [--task T] [--init I ...] [--fractions F ...]
[--seeds S ...] [--run-dir DIR] [--no-progress] [key=value ...]`` trains each (init, fraction,
seed) with :func:`mmlib.engine.finetune.finetune`, scores it with
:func:`mmlib.evaluate.scoring.score_run` and prints ``<run folder>\\t<metric>=<value>``
(``dice_mean`` or ``accuracy``). Exit status 0, 1 on an invalid configuration or a missing
input, 2 for usage errors.
"""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib finetune``."""
    parser.add_argument(
        "--config", default="demo", help="scale preset (smoke, demo, paper) or a YAML file"
    )
    parser.add_argument(
        "--task",
        help="task name: segmentation brats_ped, brats_met, upenn_gbm, isles, mrbrains, vs_seg; "
        "classification hgg_lgg, adni (alias atrophy), adhd200, abide",
    )
    parser.add_argument(
        "--init",
        nargs="+",
        help="scratch, an objective (brainmvp, mim, ...) or a run/checkpoint folder",
    )
    parser.add_argument(
        "--fractions", nargs="+", type=float, help="label fractions, e.g. 0.1 0.2 0.4 1.0"
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="fine-tuning seeds")
    parser.add_argument("--run-dir", help="run folder (one run only)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=50")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib finetune``; prints each run folder and its test score.

    Exit 0, or 1 on an error."""
    from mmlib.engine.config import FINETUNE_FREE_SECTIONS, load_config, parse_overrides
    from mmlib.engine.finetune import finetune
    from mmlib.evaluate.scoring import score_run

    try:
        over = parse_overrides(args.overrides, FINETUNE_FREE_SECTIONS)
        if args.task:
            over["task"] = args.task
        cfg = load_config(args.config, over, kind="finetune")
        inits = args.init or [cfg["init"]]
        fractions = args.fractions or [cfg["data"]["label_fraction"]]
        seeds = args.seeds or [cfg["train"]["seed"]]
        if args.run_dir and len(inits) * len(fractions) * len(seeds) > 1:
            print(
                "mmlib finetune: --run-dir takes one run; drop it or give one init, fraction "
                "and seed"
            )
            return 2
        for init in inits:
            for frac in fractions:
                for seed in seeds:
                    cell = {**over, "init": init, "data.label_fraction": frac, "train.seed": seed}
                    run = finetune(
                        args.config, cell, run_dir=args.run_dir, progress=not args.no_progress
                    )
                    res = score_run(run, progress=not args.no_progress)
                    key = "dice_mean" if res["kind"] == "segmentation" else "accuracy"
                    print(f"{run}\t{key}={res['test'][key]:.4f}")
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"mmlib finetune: {err}")
        return 1
    return 0
