"""``mmlib book``: build the HTML book from the notebooks ``mmlib notebooks run`` executed.

Example::

    mmlib book --executed runs/notebooks-demo --out .

Exit statuses: 0 built (the path of ``index.html`` is printed), 1 staging or the Sphinx build
failed (the reason and the build log on stderr), 2 usage error. The library is :mod:`mmlib.book`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmlib.book import BookError, build_book
from mmlib.paths import REPO_ROOT


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib book``."""
    parser.add_argument("--executed", type=Path, required=True, help="folder of executed notebooks")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT, help="build root (HTML in OUT/_build/html)"
    )
    parser.add_argument("--no-strict", action="store_true", help="do not treat warnings as errors")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib book``; returns 0 when the book was built, 1 when it could not be."""
    try:
        index = build_book(args.executed, args.out, strict=not args.no_strict)
    except BookError as exc:
        print(f"book: {exc}", file=sys.stderr)
        return 1
    print(f"book built: {index}")
    return 0
