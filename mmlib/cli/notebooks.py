"""``mmlib notebooks {run,sweep,list}``: execute the book's notebooks with papermill.

Examples::

    mmlib notebooks run --scale smoke --out runs/smoke-book
    mmlib notebooks run 03 05_template_distillation -p epochs 2
    mmlib notebooks sweep 03 -p mask_rate 0.6,0.8 -p block_size 4,8 --scale smoke

Exit statuses: 0 every notebook ran, 1 a notebook failed (its cell and traceback on stderr),
2 usage error (unknown notebook or scale, a sweep without ``-p``). The library is
:mod:`mmlib.notebooks`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmlib.configs.scales import SCALES, check_scale
from mmlib.notebooks import NotebookError, list_notebooks, parse_value, run_all, sweep
from mmlib.paths import REPO_ROOT


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``mmlib notebooks {run,sweep,list}``."""
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="execute notebooks in order (all when none named)")
    run.add_argument(
        "names", nargs="*", help="notebooks: 03, 03_cross_modal_reconstruction, or a path"
    )
    sweep_p = sub.add_parser("sweep", help="run one notebook over a grid of parameter values")
    sweep_p.add_argument("name", help="the notebook")
    for p in (run, sweep_p):
        p.add_argument("--scale", default="demo", help=f"one of {', '.join(SCALES)} (default demo)")
        p.add_argument(
            "--out", type=Path, default=None, help="output folder (default runs/notebooks-SCALE)"
        )
        p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="a papermill parameter for every notebook (repeatable)",
    )
    run.add_argument("--keep-going", action="store_true", help="run the rest after a failure")
    sweep_p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "V1,V2,..."),
        help="a parameter and its comma-separated values (repeatable; the grid is their product)",
    )
    sub.add_parser("list", help="list the notebooks in reading order")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib notebooks``; 0 when every notebook ran, 1 when one failed, 2 on usage errors."""
    if args.action == "list":
        for p in list_notebooks():
            print(p.stem)
        return 0
    try:
        check_scale(args.scale)
        out = (args.out or REPO_ROOT / "runs" / f"notebooks-{args.scale}").resolve()
        if args.action == "run":
            params = {k: parse_value(v) for k, v in args.parameter}
            results = run_all(args.names, args.scale, out, params, args.keep_going, args.timeout)
        else:
            grid = {k: [parse_value(x) for x in v.split(",")] for k, v in args.parameter}
            if not grid:
                raise ValueError("sweep needs at least one -p KEY V1,V2,...")
            table, results = sweep(args.name, grid, args.scale, out, args.timeout)
            print(f"sweep table: {table}")
    except (ValueError, NotebookError) as exc:
        print(f"mmlib notebooks: {exc}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(r.error, file=sys.stderr)
    total = sum(r.seconds for r in results)
    print(
        f"{len(results) - len(failed)}/{len(results)} notebooks ok in {total:.1f} s; "
        f"executed notebooks in {out}"
    )
    return 1 if failed else 0
