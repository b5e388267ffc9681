"""``mmlib pretrain``: self-supervised pre-training (:func:`mmlib.engine.pretrain.pretrain`).

Multi-GPU and multi-node jobs start this command under ``torchrun``; every rank runs it and
only rank 0 prints the run folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib pretrain``."""
    parser.add_argument(
        "--config",
        default="demo",
        help="a preset (smoke, demo, paper) or a YAML/JSON file. Default: demo",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. objective=mim train.batch_size=3 schedule.epochs=10",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run folder (default: run.root/run.name, see the docs)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.epilog = (
        "Multi-GPU: torchrun --nproc-per-node N -m mmlib pretrain --config paper "
        "...; multi-node: add --nnodes M --rdzv-backend c10d --rdzv-endpoint "
        "HOST:PORT."
    )


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib pretrain``; print the run folder. Exit 0 on success, 2 on a config error."""
    from mmlib.engine.pretrain import pretrain

    try:
        folder = pretrain(
            args.config, list(args.overrides), run_dir=args.run_dir, progress=not args.no_progress
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"mmlib pretrain: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(folder)
    return 0
