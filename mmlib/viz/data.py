"""What the viewers show, as plain numpy arrays and affines (no napari, no Qt, no widgets).

Four sources feed the viewers:

- a **study folder** of NIfTI files (one per modality, ``*seg*`` / ``*label*`` for the label map),
  read with nibabel and turned to the closest RAS orientation;
- a **store entry** ``STORE::STUDY`` (:class:`mmlib.data.store.Store`), already RAS, isotropic,
  in [0, 1];
- a **samples file** ``samples/step_XXXXXXX.npz`` written by the pre-training engine: arrays
  ``target, mask, view_a, view_b, recon_a, recon_b`` of shape ``(N, X, Y, Z)`` plus ``study``
  and ``modality`` string arrays ``(N,)``;
- a **run folder** ``runs/<kind>/<name>/`` with ``config.json``, ``metrics.csv``,
  ``checkpoints/step_XXXXXXX/`` (``model.safetensors`` + ``meta.json``) and ``samples/``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmlib.modalities import MODALITIES, canonical
from mmlib.proxy.templates import Templates, load_templates

SAMPLE_KEYS: tuple[str, ...] = ("target", "mask", "view_a", "view_b", "recon_a", "recon_b")
"""Arrays of a proxy-task sample, in display order."""

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
_STEP = re.compile(r"step_(\d+)")


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


def load_store_study(store_root: str | Path, study: str, scheme: str | None = None) -> Study:
    """Read one study of a curated store (:class:`mmlib.data.store.Store`).

    Raises:
        KeyError: When the store has no such study (the message lists a few that exist).
    """
    from mmlib.data.store import Store  # the data room's reader; imported only when used

    from mmlib.viz.labels import scheme_for_source

    store = Store(Path(store_root))
    names = [str(s) for s in store.manifest["study"]]
    if study not in names:
        raise KeyError(f"{store_root}: no study {study!r} in the store; some that exist: {', '.join(names[:5])}")
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


@dataclass
class Samples:
    """The proxy-task samples of one checkpoint step.

    Args:
        arrays: key (see :data:`SAMPLE_KEYS`) -> ``(N, X, Y, Z)``.
        study: study id of each entry ``(N,)``.
        modality: target modality of each entry ``(N,)``.
        step: the training step. Defaults to None.
        spacing: mm per voxel of each entry's crop ``(N, 3)``, when the file records it
            (optional ``spacing`` array). Defaults to None.
    """

    arrays: dict[str, np.ndarray]
    study: list[str]
    modality: list[str]
    step: int | None = None
    spacing: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.study)

    def index(self, study: str | None = None, modality: str | None = None) -> int:
        """The first entry matching ``study`` and ``modality`` (either may be None).

        Raises:
            KeyError: When no entry matches; the message lists the entries.
        """
        for i, (s, m) in enumerate(zip(self.study, self.modality)):
            if (study is None or s == study) and (modality is None or m == modality):
                return i
        have = ", ".join(f"{s}/{m}" for s, m in zip(self.study, self.modality))
        raise KeyError(f"samples: no entry for study={study!r} modality={modality!r}; entries: {have}")

    def entry(self, i: int) -> dict[str, np.ndarray]:
        """The arrays ``(X, Y, Z)`` of entry ``i``."""
        return {k: v[i] for k, v in self.arrays.items()}


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
        raise ValueError(f"expected a 3-D volume, (N, X, Y, Z) or (B, 1, X, Y, Z); got shape {a.shape}")
    return a


def samples_from_views(views: Mapping[str, Any], study: list[str], modality: list[str], step: int | None = None) -> Samples:
    """Samples from the views dict of :class:`mmlib.proxy.brainmvp.BrainMVPObjective`.

    Args:
        views: ``target, mask, view_a, view_b, recon_a, recon_b`` as ``(B, 1, X, Y, Z)``.
        study: study id of each batch item.
        modality: target modality of each batch item.
        step: the training step. Defaults to None.
    """
    arrays = {}
    for key in SAMPLE_KEYS:
        if key in views:
            x = views[key]
            if hasattr(x, "detach"):
                x = x.detach().float().cpu().numpy()
            x = np.asarray(x)
            arrays[key] = x[:, 0] if x.ndim == 5 else x
    return Samples(arrays, list(study), list(modality), step)


def load_samples(path: str | Path) -> Samples:
    """Read a ``samples/step_XXXXXXX.npz`` file (views as float32, whatever they were saved as).

    Raises:
        ValueError: When the file lacks the ``study``/``modality`` arrays or every view array.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        if not {"study", "modality"} <= files:
            raise ValueError(f"{path}: a samples file needs 'study' and 'modality' arrays; it has {sorted(files)}")
        arrays = {k: np.asarray(z[k], dtype=np.float32) for k in SAMPLE_KEYS if k in files}
        if not arrays:
            raise ValueError(f"{path}: no view arrays; expected some of {', '.join(SAMPLE_KEYS)}")
        study = [str(s) for s in z["study"]]
        modality = [str(m) for m in z["modality"]]
        step = int(z["step"]) if "step" in files else None
        spacing = np.asarray(z["spacing"], dtype=np.float64).reshape(len(study), 3) if "spacing" in files else None
    m = _STEP.search(path.name)
    if step is None and m:
        step = int(m.group(1))
    return Samples(arrays, study, modality, step, spacing)


def save_samples(path: str | Path, samples: Samples) -> Path:
    """Write samples in the engine's ``samples/step_XXXXXXX.npz`` format (compressed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if samples.spacing is None else {"spacing": np.asarray(samples.spacing, dtype=np.float32)}
    np.savez_compressed(
        path,
        **{k: np.asarray(v, dtype=np.float32) for k, v in samples.arrays.items()},
        study=np.asarray(samples.study, dtype=str),
        modality=np.asarray(samples.modality, dtype=str),
        **extra,
    )
    return path


def step_of(path: str | Path) -> int:
    """The step number in a ``step_XXXXXXX`` file or folder name.

    Raises:
        ValueError: When the name has no ``step_<digits>``.
    """
    m = _STEP.search(Path(path).name)
    if not m:
        raise ValueError(f"{path}: not a step_XXXXXXX name")
    return int(m.group(1))


class RunFolder:
    """A run folder ``runs/<kind>/<name>/`` as written by :mod:`mmlib.engine`.

    Args:
        path: the folder.

    Raises:
        NotADirectoryError: When ``path`` is not a run folder (no config.json, metrics.csv,
            checkpoints/ or samples/).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not is_run_folder(self.path):
            raise NotADirectoryError(
                f"{self.path}: not a run folder (expected config.json, metrics.csv, checkpoints/ or samples/)"
            )

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, steps={self.steps()})"

    @property
    def name(self) -> str:
        """``<kind>/<name>``."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config (empty when there is no config.json)."""
        f = self.path / "config.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    def metrics(self) -> Any:
        """``metrics.csv`` as a pandas DataFrame (empty when missing)."""
        import pandas as pd

        f = self.path / "metrics.csv"
        return pd.read_csv(f) if f.is_file() and f.stat().st_size else pd.DataFrame()

    def sample_steps(self) -> list[int]:
        """Steps that have a ``samples/step_XXXXXXX.npz`` file."""
        return sorted(step_of(p) for p in (self.path / "samples").glob("step_*.npz"))

    def checkpoint_steps(self) -> list[int]:
        """Steps that have a ``checkpoints/step_XXXXXXX/`` folder."""
        return sorted(step_of(p) for p in (self.path / "checkpoints").glob("step_*") if p.is_dir())

    def steps(self) -> list[int]:
        """Every step with samples or a checkpoint, ascending."""
        return sorted(set(self.sample_steps()) | set(self.checkpoint_steps()))

    def samples_path(self, step: int | None = None) -> Path:
        """The samples file of ``step`` (the newest when None).

        Raises:
            FileNotFoundError: When the run has no samples for that step.
        """
        steps = self.sample_steps()
        if not steps:
            raise FileNotFoundError(f"{self.path}: no samples/step_*.npz yet (the engine writes them at each checkpoint)")
        step = steps[-1] if step is None else step
        path = self.path / "samples" / f"step_{step:07d}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no samples for step {step}; steps with samples: {steps}")
        return path

    def samples(self, step: int | None = None) -> Samples:
        """The samples of ``step`` (the newest when None)."""
        return load_samples(self.samples_path(step))

    def checkpoint(self, step: int | None = None) -> Path:
        """The checkpoint folder of ``step`` (``checkpoints/latest`` or the newest when None).

        Raises:
            FileNotFoundError: When there is no such checkpoint.
        """
        ckpts = self.path / "checkpoints"
        if step is None:
            latest = ckpts / "latest"
            if latest.is_file():
                cand = ckpts / latest.read_text().strip()
                if cand.is_dir():
                    return cand
            steps = self.checkpoint_steps()
            if not steps:
                raise FileNotFoundError(f"{self.path}: no checkpoints/step_* folders")
            step = steps[-1]
        path = ckpts / f"step_{step:07d}"
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no checkpoint for step {step}; checkpoints: {self.checkpoint_steps()}")
        return path

    def templates(self, step: int | None = None) -> Templates:
        """The learned templates saved in the checkpoint of ``step``."""
        return load_templates(self.checkpoint(step))


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like a run folder (config.json, metrics.csv, checkpoints/ or samples/)."""
    p = Path(path)
    return p.is_dir() and any((p / n).exists() for n in ("config.json", "metrics.csv", "checkpoints", "samples"))


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


def find_runs(root: str | Path, need_samples: bool = True) -> list[RunFolder]:
    """Run folders under ``root`` (e.g. ``work_dir(scale) / "runs" / "pretrain"``), newest first.

    Args:
        root: a folder of run folders (searched two levels deep: ``<kind>/<name>`` or ``<name>``).
        need_samples: keep only runs with a samples file. Defaults to True.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [p for p in list(root.glob("*")) + list(root.glob("*/*")) if p.is_dir() and (p / "checkpoints").is_dir()]
    runs = [RunFolder(p) for p in folders]
    if need_samples:
        runs = [r for r in runs if r.sample_steps()]
    return sorted(runs, key=lambda r: max((p.stat().st_mtime for p in r.path.glob("samples/*.npz")), default=r.path.stat().st_mtime), reverse=True)


def pick_store_study(store: Any, source: str | None = None, min_modalities: int = 3, need_label: bool = True) -> str:
    """A study of a :class:`mmlib.data.store.Store` worth looking at: labelled, with many modalities.

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
