"""npe2 reader: napari opens study folders, NIfTI files, samples files and run folders.

``napari BraTS2021_00000/`` shows every modality and the segmentation; ``napari
runs/pretrain/x/`` shows the newest proxy-task sample (or the newest checkpoint's templates);
``napari samples/step_0000100.npz`` shows its first entry. Qt-free: returns layer data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmlib.proxy.templates import load_templates
from mmlib.runs import RunFolder, is_run_folder
from mmlib.viz.data import Volume, _role, _stem
from mmlib.viz.layers import (
    LayerData,
    image_layer,
    labels_layer,
    sample_layers,
    study_layers,
    template_layers,
)

_NIFTI = (".nii", ".nii.gz")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader for ``path``, or None when mmlib does not read it (napari then asks others)."""
    p = Path(path[0] if isinstance(path, list) else path)
    if p.is_dir():
        if is_run_folder(p):
            return read_run
        shallow = (
            f for pattern in ("*", "*/*", "*/*/*") for f in p.glob(pattern)
        )  # BIDS: sub/ses/anat
        if any(f.name.lower().endswith(_NIFTI) and _role(f) for f in shallow):
            return read_study
        return None
    name = p.name.lower()
    if name.endswith(".npz"):
        with np.load(p) as z:
            return read_samples if {"study", "modality"} <= set(z.files) else None
    if name.endswith(_NIFTI):
        return read_nifti
    return None


def _first(path: str | list[str]) -> Path:
    return Path(path[0] if isinstance(path, list) else path)


def read_study(path: str | list[str]) -> list[LayerData]:
    """Every modality of a NIfTI study folder, and its segmentation."""
    return study_layers(_first(path))


def read_samples(path: str | list[str]) -> list[LayerData]:
    """The first entry of a samples file."""
    return sample_layers(_first(path), index=0)


def read_run(path: str | list[str]) -> list[LayerData]:
    """The newest sample of a run folder, else its newest checkpoint's templates.

    Raises:
        FileNotFoundError: When the run has neither samples nor a checkpoint with templates.
    """
    run = RunFolder(_first(path))
    if run.sample_steps():
        return sample_layers(run.samples(), index=0)
    return template_layers(load_templates(run.checkpoint()))


def read_nifti(path: str | list[str]) -> list[LayerData]:
    """One NIfTI file: a labels layer for ``*seg*`` / ``*label*`` names, else an image."""
    import nibabel as nib

    p = _first(path)
    img = nib.as_closest_canonical(nib.load(p))
    affine = np.asarray(img.affine, dtype=np.float64)
    role = _role(p)
    if role == "label":
        return [
            labels_layer(np.asarray(img.dataobj).astype(np.int32), affine=affine, name=_stem(p))
        ]
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    return [image_layer(Volume(role or _stem(p), data, affine), name=_stem(p))]
