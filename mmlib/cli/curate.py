"""``mmlib curate``: discover studies, curate them into a crop store, report QC.

Exit statuses: 0 every study curated (or ``--dry-run``), 3 some studies failed (each is printed
with a one-line reason), 2 usage error (bad arguments, nothing found, an unusable ``--out``).
"""

from __future__ import annotations

import argparse
import sys

from mmlib.data.curate import EXIT_OK, EXIT_USAGE, curate, parse_shard
from mmlib.data.layouts import LAYOUTS, discover, source_counts
from mmlib.data.register import REGISTER_MODES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib curate``."""
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="cohort roots (with cohort.json), dataset folders or JSON lists",
    )
    parser.add_argument("--out", required=True, help="the store folder (created if needed)")
    parser.add_argument("--spacing", type=float, default=1.0, help="isotropic mm (default 1)")
    parser.add_argument("--layout", choices=LAYOUTS, help="force a layout (default: detect)")
    parser.add_argument("--pattern", help="path pattern with {subject} and {modality}")
    parser.add_argument("--label-pattern", help="label path pattern with {subject}")
    parser.add_argument("--root", help="dataset root that JSON-list paths are relative to")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--shard", help="I/N: curate only every N-th study starting at I")
    parser.add_argument("--split-file", help="JSON or CSV split file overriding the hash splits")
    parser.add_argument("--margin", type=int, default=2, help="voxels around the head (2)")
    parser.add_argument(
        "--role",
        choices=["pretrain", "downstream"],
        help="role of every study (pre-training samples only 'pretrain' studies "
        "when the store records roles, every study when none); also set on "
        "studies already in the store",
    )
    parser.add_argument(
        "--register",
        choices=REGISTER_MODES,
        default="none",
        help="register each study to the ICBM 2009a template and store it in that space "
        "(rigid or affine; modalities on different grids are first co-registered); the "
        "manifest records the transform that `mmlib predict` inverts (default none)",
    )
    parser.add_argument("--no-qc", action="store_true", help="skip the QC report")
    parser.add_argument(
        "--dry-run", action="store_true", help="only discover and print per-source counts"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib curate``; returns 0 (all curated), 3 (some failed) or 2 (usage error)."""
    try:
        shard = parse_shard(args.shard)
        if args.spacing <= 0:
            raise ValueError(f"--spacing {args.spacing}: must be positive")
        options = {
            k: v
            for k, v in (
                ("pattern", args.pattern),
                ("label_pattern", args.label_pattern),
                ("root", args.root),
            )
            if v
        }
        studies = discover(*args.sources, layout=args.layout, **options)
    except (ValueError, FileNotFoundError) as err:
        print(f"mmlib curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not studies:
        print(f"mmlib curate: no studies found in {', '.join(args.sources)}", file=sys.stderr)
        return EXIT_USAGE
    print(source_counts(studies).to_string())
    if args.dry_run:
        return EXIT_OK
    try:
        report = curate(
            studies,
            args.out,
            args.spacing,
            args.workers,
            shard,
            args.split_file,
            args.margin,
            progress=not args.quiet,
            qc_report=not args.no_qc,
            role=args.role,
            register=args.register,
        )
    except ValueError as err:
        print(f"mmlib curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(report.summary())
    for sid, reason in sorted(report.failed.items()):
        print(f"FAILED {sid}: {reason}")
    return report.status
