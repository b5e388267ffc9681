"""``mmlib predict RUN_DIR SOURCE... --out DIR``: a fine-tuned model's answer on new studies.

Writes ``DIR/<study>.nii.gz`` (segmentation, on the study's native grid, in the dataset's label
convention) or ``DIR/predictions.csv`` (classification), and ``DIR/predict.json``
(:func:`mmlib.evaluate.predict.predict`). Exit statuses: 0 every study written, 3 some studies
failed (each printed with a one-line reason; the others are written), 2 usage error (no such
run or bundle, no study found, bad arguments).
"""

from __future__ import annotations

import argparse
import sys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib predict``."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a fine-tuning run folder, or a bundle from mmlib export"
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="dataset folders, study folders or lists (what mmlib curate reads)",
    )
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="threads pre-processing studies ahead of inference (default 1)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib predict``; returns 0 (all written), 3 (some failed) or 2 (usage error)."""
    from mmlib.evaluate.predict import EXIT_USAGE, predict

    if args.workers < 1:
        print(f"mmlib predict: --workers {args.workers}: must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = predict(
            args.run_dir,
            args.sources,
            args.out,
            device=args.device,
            workers=args.workers,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"mmlib predict: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    print(report.summary())
    return report.status
