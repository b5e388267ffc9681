"""``mmlib export RUN_DIR --bundle DIR``: a fine-tuned segmentation model as a MONAI Bundle.

:func:`mmlib.evaluate.export.export_bundle` writes the bundle; MONAI's runner then segments
studies with ``python -m monai.bundle run --config_file DIR/configs/inference.json
--bundle_root DIR --dataset_dir STUDIES --output_dir OUT``. Exit statuses: 0 written, 1 when the
network cannot be exported, 2 usage error (not a trained segmentation run, unusable --bundle).
"""

from __future__ import annotations

import argparse
import sys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib export``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained fine-tuning run folder")
    parser.add_argument("--bundle", required=True, help="the bundle folder to write")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib export``; prints the bundle folder and how to run it."""
    from mmlib.evaluate.export import export_bundle

    try:
        bundle = export_bundle(args.run_dir, args.bundle)
    except (FileNotFoundError, ValueError) as err:
        print(f"mmlib export: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"mmlib export: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    print(bundle)
    print(
        f"run it: python -m monai.bundle run --config_file {bundle}/configs/inference.json "
        f"--bundle_root {bundle} --dataset_dir STUDIES --output_dir OUT"
    )
    return 0
