"""``mmlib view PATH``: open a study folder, a store entry, a samples file or a run folder
in napari.

PATH is one of

- a folder of NIfTI files (one study: every modality and the segmentation);
- ``STORE::STUDY``, a study of a curated store (``.mmlib/demo/store::BraTS2021_00000``);
- a run folder ``runs/<kind>/<name>/`` (docks the run browser at the newest step);
- a samples file ``samples/step_XXXXXXX.npz`` or a single NIfTI file.

``--screenshot FILE`` saves the canvas as PNG and exits instead of opening the window for
interaction (it starts a private Xvfb when there is no display). Exit statuses: 0 success,
1 nothing to open at PATH or no display, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mmlib.runs import is_run_folder
from mmlib.viz.data import parse_store_entry
from mmlib.viz.labels import SCHEMES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib view``."""
    parser.add_argument(
        "path", help="study folder, STORE::STUDY, run folder, samples .npz or NIfTI file"
    )
    parser.add_argument(
        "--plane",
        choices=["axial", "coronal", "sagittal"],
        default="axial",
        help="slice plane (default: axial)",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="one grid cell per modality (studies; samples and runs always use a grid)",
    )
    parser.add_argument(
        "--step", type=int, default=None, help="run folder: checkpoint step (default: newest)"
    )
    parser.add_argument(
        "--study", default=None, help="run folder or samples file: the study to show"
    )
    parser.add_argument(
        "--modality", default=None, help="run folder or samples file: the target modality"
    )
    parser.add_argument(
        "--templates",
        action="store_true",
        help="run folder: show the step's templates instead of the views",
    )
    parser.add_argument(
        "--scheme",
        choices=list(SCHEMES),
        default=None,
        help="label colours and names (default: from the source, else guessed)",
    )
    parser.add_argument(
        "--label",
        type=Path,
        default=None,
        metavar="NIFTI",
        help="study folder: show this label map instead of the study's own (e.g. a prediction "
        "of mmlib predict, on the study's grid)",
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        default=None,
        metavar="PNG",
        help="save a screenshot to PNG and exit",
    )


def _kind(spec: str) -> str:
    if parse_store_entry(spec) is not None:
        return "store"
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(
            f"mmlib view: {spec}: no such file or folder (give a study folder, STORE::STUDY "
            "or a run folder)"
        )
    if p.is_dir():
        return "run" if is_run_folder(p) else "study"
    if p.name.lower().endswith(".npz"):
        return "samples"
    if p.name.lower().endswith((".nii", ".nii.gz")):
        return "nifti"
    raise ValueError(
        f"mmlib view: {spec}: not a study folder, store entry, run folder, .npz or NIfTI file"
    )


def open_path(viewer: Any, args: argparse.Namespace) -> Any:
    """Open ``args.path`` in ``viewer``; returns the run browser for run folders, else None."""
    from mmlib.viz import napari as mv

    kind = _kind(args.path)
    if getattr(args, "label", None) is not None and kind != "study":
        raise ValueError(
            f"mmlib view: --label takes a study folder (native grid); {args.path} is a {kind}"
        )
    if kind in ("store", "study"):
        study: Any = args.path
        if getattr(args, "label", None) is not None:
            from mmlib.viz.data import load_study_folder, with_label

            study = with_label(load_study_folder(args.path, args.scheme), args.label)
        mv.open_study(study, viewer, scheme=args.scheme, grid=args.grid, plane=args.plane)
    elif kind == "samples":
        mv.open_sample(
            args.path, viewer, study=args.study, modality=args.modality, plane=args.plane
        )
    elif kind == "nifti":
        from mmlib.viz._reader import read_nifti

        mv.add_layers(viewer, read_nifti(args.path))
        mv.set_plane(viewer, args.plane)
    else:
        from mmlib.viz._widget import TEMPLATES, VIEWS, RunBrowser

        browser = RunBrowser(viewer, run_dir=args.path)
        viewer.window.add_dock_widget(browser, name="mmlib run browser", area="right")
        browser.select(
            step=args.step,
            study=args.study,
            modality=args.modality,
            what=TEMPLATES if args.templates else VIEWS,
        )
        browser._plane.value = args.plane
        return browser
    return None


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib view``; see the module docstring for the exit statuses."""
    try:
        _kind(args.path)
    except (FileNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    from mmlib.viz.display import ensure_display, no_display_reason

    if not ensure_display(start=args.screenshot is not None):
        print(
            f"mmlib view: {no_display_reason()}; use --screenshot PNG or run under xvfb-run",
            file=sys.stderr,
        )
        return 1
    from mmlib.viz import napari as mv

    viewer = mv.new_viewer(title=f"mmlib view {args.path}", size=(1400, 900))
    try:
        browser = open_path(viewer, args)
    except (FileNotFoundError, KeyError, ValueError, IndexError, NotADirectoryError) as err:
        print(f"mmlib view: {err}", file=sys.stderr)
        viewer.close()
        return 1
    if args.screenshot is not None:
        image = mv.screenshot(viewer, args.screenshot)
        extra = f" ({browser.info})" if browser is not None else ""
        print(
            f"{args.screenshot}: {image.shape[1]}x{image.shape[0]} pixels, "
            f"std {mv.pixel_std(image):.1f}{extra}"
        )
        viewer.close()
        return 0
    import napari

    napari.run()
    return 0
