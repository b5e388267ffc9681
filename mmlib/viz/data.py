"""What the viewers show, as plain numpy arrays and affines (no napari, no Qt, no widgets).

Four sources feed the viewers:

- a **study folder** of NIfTI files (one per modality, ``*seg*`` / ``*label*`` for the label map),
  read with nibabel and turned to the closest RAS orientation;
- a **store entry** ``STORE::STUDY`` (:class:`mmlib.data.store.Store`), already RAS, isotropic,
  in [0, 1];
- a **samples file** ``samples/step_XXXXXXX.npz`` written by the pre-training engine
  (:class:`mmlib.runs.Samples`, read with :func:`mmlib.runs.load_samples`);
- a **run folder** ``runs/<kind>/<name>/`` (:class:`mmlib.runs.RunFolder`): its samples, and
  the templates of its checkpoints (:func:`load_templates` of ``run.checkpoint(step)``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmlib.modalities import MODALITIES, canonical

SAMPLE_TITLES: dict[str, str] = {
    "target": "target",
    "mask": "mask",
    "view_a": "view A (template fill)",
    "view_b": "view B (cross-modal fill)",
    "recon_a": "reconstruction of A",
    "recon_b": "reconstruction of B",
}

_NIFTI = (".nii.gz", ".nii")
_LABEL_TOKENS = {"seg", "label", "labels", "mask", "msk", "segmentation", "dseg"}


@dataclass
class Volume:
    """One 3-D array and where it lies in the world.

    Args:
        name: layer name, e.g. a modality.
        data: the array ``(X, Y, Z)``.
        affine: voxel -> world (mm) matrix ``(4, 4)``. Defaults to identity.
        kind: ``"image"`` or ``"labels"``. Defaults to ``"image"``.
    """

    name: str
    data: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    kind: str = "image"

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


@dataclass
class Study:
    """The volumes of one study: images by modality and an optional label map.

    Args:
        name: the study id.
        images: modality -> :class:`Volume`, in display order.
        label: the segmentation, if any.
        scheme: the label scheme name (see :mod:`mmlib.viz.labels`). Defaults to None (guess).
    """

    name: str
    images: dict[str, Volume]
    label: Volume | None = None
    scheme: str | None = None

    @property
    def modalities(self) -> list[str]:
        """The modalities present, in display order."""
        return list(self.images)


def _stem(path: Path) -> str:
    name = path.name
    for ext in _NIFTI:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _role(path: Path) -> str | None:
    """``"label"``, a canonical modality, or None for a NIfTI file name that is neither."""
    tokens = [t for t in re.split(r"[_\-.]", _stem(path)) if t]
    for token in reversed(tokens):
        if token.lower() in _LABEL_TOKENS:
            return "label"
        try:
            return canonical(token)
        except ValueError:
            continue
    return None


def load_study_folder(folder: str | Path, scheme: str | None = None) -> Study:
    """Read a folder of NIfTI files as one study (BraTS, ISLES and IXI style names).

    The modality of each file is the last ``_``/``-``-separated token of its name that is a known
    alias (``BraTS2021_00000_t1ce.nii.gz -> t1c``); ``*_seg*`` files are the label map. Volumes
    are re-oriented to the closest RAS orientation; their affines are kept.

    Raises:
        FileNotFoundError: When the folder holds no NIfTI file with a modality in its name.
    """
    import nibabel as nib

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(_NIFTI))
    images: dict[str, Volume] = {}
    label: Volume | None = None
    for path in files:
        role = _role(path)
        if role is None:
            continue
        img = nib.as_closest_canonical(nib.load(path))
        if role == "label":
            data = np.asarray(img.dataobj).astype(np.int32)
            label = Volume("segmentation", data, np.asarray(img.affine, dtype=np.float64), "labels")
        elif role not in images:
            data = np.asarray(img.dataobj, dtype=np.float32)
            if data.ndim == 4:
                data = data[..., 0]
            images[role] = Volume(role, data, np.asarray(img.affine, dtype=np.float64))
    if not images:
        raise FileNotFoundError(
            f"{folder}: no NIfTI file with a modality in its name (expected e.g. *_t1.nii.gz; "
            f"modalities: {', '.join(MODALITIES)})"
        )
    order = sorted(images, key=lambda m: MODALITIES.index(m))
    return Study(folder.name, {m: images[m] for m in order}, label, scheme)


def with_label(study: Study, path: str | Path) -> Study:
    """``study`` with the label map replaced by a NIfTI file (a prediction of ``mmlib predict``).

    Args:
        study: a study read from its folder (native grids, see :func:`load_study_folder`).
        path: an integer label map on the grid of the study's images.

    Raises:
        ValueError: When the label map's grid (shape and affine, after reorientation to the
            closest RAS) differs from the study's images.
    """
    import dataclasses

    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(path))
    data = np.asarray(img.dataobj)
    affine = np.asarray(img.affine, dtype=np.float64)
    ref = next(iter(study.images.values()))
    if data.shape[:3] != ref.data.shape or not np.allclose(affine, ref.affine, atol=1e-3):
        raise ValueError(
            f"{path}: label grid {data.shape[:3]} does not match {study.name}'s images "
            f"{ref.data.shape} (give a segmentation on the study's own grid, as mmlib predict "
            "writes it)"
        )
    label = Volume("segmentation", data.astype(np.int32), affine, "labels")
    return dataclasses.replace(study, label=label)


def load_store_study(store_root: str | Path, study: str, scheme: str | None = None) -> Study:
    """Read one study of a curated store (:class:`mmlib.data.store.Store`).

    Raises:
        KeyError: When the store has no such study (the message lists a few that exist).
    """
    from mmlib.data.store import (
        Store,  # the data room's reader; imported only when used
    )
    from mmlib.viz.labels import scheme_for_source

    store = Store(Path(store_root))
    names = [str(s) for s in store.manifest["study"]]
    if study not in names:
        raise KeyError(
            f"{store_root}: no study {study!r} in the store; some that exist: "
            f"{', '.join(names[:5])}"
        )
    row = store.row(study)
    affine = np.asarray(_field(row, "affine"), dtype=np.float64).reshape(4, 4)
    modalities = [m.strip("'\"") for m in _as_list(_field(row, "modalities"))]
    images = {
        m: Volume(m, np.asarray(store.image(study, m), dtype=np.float32), affine)
        for m in sorted(modalities, key=lambda m: MODALITIES.index(m))
    }
    label_data = store.label(study)
    label = None
    if label_data is not None:
        label = Volume("segmentation", np.asarray(label_data).astype(np.int32), affine, "labels")
    if scheme is None and label is not None:
        scheme = scheme_for_source(str(_field(row, "source", "")), label.data).name
    return Study(study, images, label, scheme)


def _field(row: Any, key: str, default: Any = None) -> Any:
    """``row[key]`` for a dict or pandas row, ``row.key`` for an object, else ``default``."""
    try:
        return row[key]
    except (KeyError, TypeError, IndexError):
        return getattr(row, key, default)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in re.split(r"[,\s]+", value.strip("[]")) if v.strip("'\"")]
    return [str(v) for v in value]


def as_volume_array(x: Any, index: int = 0) -> np.ndarray:
    """A 3-D numpy array from ``(X, Y, Z)``, ``(N, X, Y, Z)`` or ``(B, 1, X, Y, Z)`` data.

    Accepts numpy arrays and torch tensors (detached, moved to the CPU).

    Raises:
        ValueError: When the array is not 3-, 4- or 5-D (with one channel).
    """
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x)
    if a.ndim == 5:
        if a.shape[1] != 1:
            raise ValueError(f"expected (B, 1, X, Y, Z), got shape {a.shape}; pick a channel first")
        a = a[index, 0]
    elif a.ndim == 4:
        a = a[index]
    elif a.ndim != 3:
        raise ValueError(
            f"expected a 3-D volume, (N, X, Y, Z) or (B, 1, X, Y, Z); got shape {a.shape}"
        )
    return a


def parse_store_entry(spec: str) -> tuple[Path, str] | None:
    """Split ``STORE::STUDY`` into ``(store root, study)``; None when ``spec`` has no ``::``."""
    if "::" not in spec:
        return None
    root, study = spec.rsplit("::", 1)
    return Path(root), study


@functools.lru_cache(maxsize=2)
def mni_study(step: int = 1) -> Study:
    """The ICBM 2009a template (shipped in the nilearn wheel) as a study: T1 and tissue labels.

    Tissue labels follow the embedded cohort: 1 CSF (inside the brain mask, neither grey nor
    white matter), 2 grey matter, 3 white matter, whichever probability is highest.

    Args:
        step: keep every ``step``-th voxel along each axis (1 mm grid ``(197, 233, 189)`` at 1).
            Defaults to 1.

    Returns:
        The study (cached: do not modify its arrays in place).
    """
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    label = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1).astype(np.int32) * brain
    affine = np.asarray(t1.affine, dtype=np.float64).copy()
    affine[:3, :3] *= step
    sl = (slice(None, None, step),) * 3
    image = np.asarray(t1.dataobj, dtype=np.float32)[sl]
    return Study(
        "MNI152_2009a",
        {"t1": Volume("t1", np.ascontiguousarray(image), affine)},
        Volume("segmentation", np.ascontiguousarray(label[sl]), affine, "labels"),
        "tissue",
    )


def pick_store_study(
    store: Any, source: str | None = None, min_modalities: int = 3, need_label: bool = True
) -> str:
    """A study of a :class:`mmlib.data.store.Store` worth looking at: labelled, with many
    modalities.

    Among the studies with a label map (when ``need_label``) and at least ``min_modalities``,
    the first (sorted) of those with the most modalities.

    Raises:
        LookupError: When no study qualifies.
    """
    best: tuple[int, str] | None = None
    for study in store.studies(source=source):
        row = store.row(study)
        n = len(_as_list(row.get("modalities") or []))
        if n < min_modalities or (need_label and store.label(study) is None):
            continue
        if best is None or n > best[0]:
            best = (n, study)
    if best is None:
        raise LookupError(f"{store.root}: no study with a label and >= {min_modalities} modalities")
    return best[1]
