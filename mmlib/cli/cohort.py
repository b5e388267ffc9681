"""``mmlib cohort``: write the embedded simulated cohort.

Exit statuses: 0 success (made or reused), 1 an impossible spec or an unusable ``--out``
(one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mmlib.configs.scales import SCALES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib cohort``."""
    parser.add_argument(
        "--preset",
        choices=SCALES,
        default="demo",
        help="scale preset: subject counts and grid factor (default: demo)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="cohort root (default: the shared work folder of the preset)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed: same seed, same bytes")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")


def run_cli(args: argparse.Namespace) -> int:
    """Make (or reuse) the cohort; print its root and the time it took."""
    from mmlib.data.phantom import make_cohort
    from mmlib.paths import work_dir

    out = args.out if args.out is not None else work_dir(args.preset) / "cohort"
    start = time.perf_counter()
    try:
        root = make_cohort(args.preset, out, seed=args.seed, workers=args.workers)
    except ValueError as err:
        print(f"mmlib cohort: {err}", file=sys.stderr)
        return 1
    print(f"cohort {args.preset} at {root} ({time.perf_counter() - start:.1f} s)")
    return 0
