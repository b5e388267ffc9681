"""A demo fine-tuning grid run one cell after another (all threads) against ``--workers``
processes side by side (the threads divided between them): wall-clock seconds per grid.

Each repeat trains and scores ``--cells`` demo cells (brats_ped, 20 % labels, scratch, seeds
1000, 1001, ...: never the book's) from nothing, in a fresh run root, so nothing is reused; the
two sides alternate (``harness.interleave``). Both sides run the same code,
:func:`mmlib.evaluate.grid.finetune_grid`, with ``workers=1`` and ``workers=N``. The last line
is the ratio of medians, sequential / parallel (above 1: the parallel grid is faster). Needs a
demo store: ``mmlib curate --scale demo`` (or ``make book``) makes it.

Run: ``python benchmarks/grid.py [--cells 4] [--workers 2] [--steps 150] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_arguments, check_load, interleave, ratio_line, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=4, help="cells per grid (seeds)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150, help="train.steps of each cell")
    parser.add_argument("--store", default=None, help="a demo store (default: the scale's)")
    add_arguments(parser)
    args = parser.parse_args()
    check_load(args.busy)
    from mmlib.evaluate.grid import finetune_grid, shutdown_workers

    over = {"task": "brats_ped", "train.steps": args.steps}
    if args.store:
        over["data.store"] = args.store
    seeds = list(range(1000, 1000 + args.cells))
    scratch = Path(tempfile.mkdtemp(prefix="mmlib-grid-bench-"))
    # workers start once, as in a kernel that runs several grids: not part of a grid's time
    finetune_grid(
        "demo",
        ["scratch"],
        [0.2],
        seeds[:2],
        {**over, "train.steps": 2, "run.root": str(scratch / "warm")},
        progress=False,
        workers=args.workers,
    )

    def grid(workers: int) -> float:
        root = Path(tempfile.mkdtemp(dir=scratch))
        t = time.perf_counter()
        finetune_grid(
            "demo",
            ["scratch"],
            [0.2],
            seeds,
            {**over, "run.root": str(root)},
            progress=False,
            workers=workers,
        )
        seconds = time.perf_counter() - t
        shutil.rmtree(root)
        return seconds

    try:
        runs = interleave(
            {"sequential": lambda: grid(1), f"{args.workers} workers": lambda: grid(args.workers)},
            args.repeats,
        )
    finally:
        shutdown_workers()
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"{args.cells} demo cells of {args.steps} steps (train + score); "
        f"{torch.get_num_threads()} threads in all"
    )
    for name, r in runs.items():
        print("  " + summarize(name, r, "s/grid"))
    print(
        ratio_line(
            f"sequential / {args.workers} workers (a grid)",
            runs["sequential"],
            runs[f"{args.workers} workers"],
        )
    )


if __name__ == "__main__":
    main()
