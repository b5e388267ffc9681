"""``mmlib weights``: convert the authors' released BrainMVP checkpoints to mmlib's format.

::

    mmlib weights import brainmvp_uniformer.pt --arch uniformer --out weights/brainmvp_uniformer
    mmlib weights import unet.pt --arch unet --out weights/unet --templates-nifti weights/unet_nii
    mmlib weights map --arch uniformer       # every released key -> its mmlib name, or why dropped
    mmlib weights pack RUN --out mmlib/pretrained/demo/brainmvp --dtype float32
    mmlib weights shipped                    # the checkpoints shipped with mmlib

The output is a pre-training checkpoint folder (``model.safetensors`` + ``meta.json``) that
:func:`mmlib.models.checkpoints.load_pretrained` reads; ``meta.json`` records the import report
(every released key used or dropped, with the reason), ``template_affine`` in mmlib's
head-centred template space (what the proxy tasks and downstream template fill use) and
``template_world_affine``, the SRI24/BraTS world affine that the NIfTI export writes so that the
templates overlay BraTS images. Exit status 0 on success, 1 when the
file cannot be read or does not match the architecture.

``pack`` writes a pre-training run's latest checkpoint (or a checkpoint folder) as a shipped
checkpoint (:mod:`mmlib.models.shipped`: stored precision, provenance, the regenerating
command and a SHA-256 checked on every use); exit status 1 when the source is not a
pre-training checkpoint. ``shipped`` lists the shipped checkpoints and verifies each (exit
status 1 when one does not match its hash).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmlib.modalities import MODALITIES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``import`` sub-command to ``parser``."""
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser(
        "import", help="convert a released .pt checkpoint to an mmlib checkpoint folder"
    )
    imp.add_argument(
        "ckpt", type=Path, help="released checkpoint (.pt/.pth), read with weights_only=True"
    )
    imp.add_argument(
        "--arch", required=True, choices=["unet", "uniformer"], help="released architecture"
    )
    imp.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    imp.add_argument(
        "--templates-nifti",
        type=Path,
        default=None,
        help="also write each template as NIfTI (with its true affine) into this folder",
    )
    pack = sub.add_parser("pack", help="write a pre-training run's checkpoint as a shipped one")
    pack.add_argument("source", type=Path, help="pre-training run folder or checkpoint folder")
    pack.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    pack.add_argument(
        "--dtype",
        default="float16",
        choices=["float32", "float16", "bfloat16"],
        help="stored precision of the backbone (default float16; loading casts to float32)",
    )
    pack.add_argument(
        "--templates",
        default="float16",
        choices=["float32", "float16", "bfloat16", "none"],
        help="stored precision of the templates, or none to drop them (default float16)",
    )
    pack.add_argument(
        "--command",
        action="append",
        default=[],
        help="a command that regenerates the source (repeatable; recorded in meta.json)",
    )
    sub.add_parser("shipped", help="list and verify the checkpoints shipped with mmlib")
    show = sub.add_parser(
        "map", help="print every released key, its shape and its mmlib name (or why it is dropped)"
    )
    show.add_argument(
        "--arch", required=True, choices=["unet", "uniformer"], help="released architecture"
    )


def _print_map(arch: str) -> int:
    from mmlib.models.released import dropped_reason, released_key_map, released_layout

    table = released_key_map(arch)
    for key, shape in released_layout(arch):
        target = table.get(key) or f"(dropped: {dropped_reason(arch, key)})"
        print(f"{key:<60} {list(shape)!s:<22} {target}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib weights import`` or ``mmlib weights map``; returns the exit status."""
    if args.action == "map":
        return _print_map(args.arch)
    if args.action == "pack":
        return _pack(args)
    if args.action == "shipped":
        return _shipped()
    from mmlib.models.checkpoints import (
        UnsafeCheckpointError,
        export_templates_nifti,
        save_pretrained,
    )
    from mmlib.models.released import head_centred_affine, load_released, released_template_affine

    try:
        model, templates, report = load_released(args.ckpt, args.arch)
    except (FileNotFoundError, ValueError, UnsafeCheckpointError) as err:
        print(f"mmlib weights import: {err}", file=sys.stderr)
        return 1
    world = released_template_affine()
    modalities = list(MODALITIES[: templates.shape[0]] if templates is not None else MODALITIES)
    save_pretrained(
        args.out,
        model,
        templates,
        modalities,
        head_centred_affine(templates.shape) if templates is not None else None,
        step=0,
        config={"source": "released BrainMVP checkpoint", "arch": args.arch},
        import_report=report.to_dict(),
        template_world_affine=world.tolist() if templates is not None else None,
        template_space=(
            "template_affine: mmlib's head-centred mm (grid centre = 0, RAS); "
            "template_world_affine: SRI24/BraTS world mm (overlays BraTS images)"
        ),
    )
    print(report.summary())
    print(f"wrote {args.out}")
    if args.templates_nifti is not None and templates is not None:
        paths = export_templates_nifti(templates, world, args.templates_nifti, modalities)
        print(f"wrote {len(paths)} templates to {args.templates_nifti}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from mmlib.models.shipped import pack_checkpoint
    from mmlib.runs import checkpoint_folder

    try:
        folder = pack_checkpoint(
            checkpoint_folder(args.source),
            args.out,
            dtype=args.dtype,
            templates=None if args.templates == "none" else args.templates,
            command=args.command,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"mmlib weights pack: {err}", file=sys.stderr)
        return 1
    size = (folder / "model.safetensors").stat().st_size / 2**20
    print(f"wrote {folder} ({size:.1f} MB)")
    return 0


def _shipped() -> int:
    from mmlib.models.shipped import shipped_checkpoints, verify_shipped

    status = 0
    for row in shipped_checkpoints():
        try:
            verify_shipped(row["folder"])
            ok = "ok"
        except ValueError as err:
            ok, status = f"BAD: {err}", 1
        print(
            f"{row['scale']}/{row['objective']:<14} step {row['step']} ({row['epochs']} epochs), "
            f"backbone {row['backbone_dtype']}, templates {row['templates_dtype']}, "
            f"{row['megabytes']} MB, from weights {row['source_weights']}: {ok}"
        )
    return status


__all__ = ["configure_parser", "run_cli"]
