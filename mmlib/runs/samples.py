"""``samples/step_XXXXXXX.npz``: the views and reconstructions of a few fixed studies.

At every checkpoint (and before the first step) the pre-training engine runs the objective on the
same crops of a few fixed studies and writes, with :func:`write_samples`, the arrays of
:data:`SAMPLE_KEYS` as float16 ``(N, X, Y, Z)`` (a view the objective does not compute, such as
``view_b`` of ``mim``, is left out), the ``study`` and ``modality`` (the target's) string arrays
``(N,)``, and ``step`` and ``epoch``. :func:`load_samples` reads one back as :class:`Samples`
(views as float32); :func:`sample_errors` scores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmlib.runs.checkpoints import step_name, step_of

SAMPLES = "samples"
"""Folder of a run's samples files."""
SAMPLE_KEYS: tuple[str, ...] = ("target", "mask", "view_a", "view_b", "recon_a", "recon_b")
"""Arrays of a proxy-task sample, in display order."""
ERROR_KEYS: tuple[str, ...] = ("view_a", "recon_a", "view_b", "recon_b")
"""Arrays scored against the target by :func:`sample_errors`, in this order."""


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
        for i, (s, m) in enumerate(zip(self.study, self.modality, strict=True)):
            if (study is None or s == study) and (modality is None or m == modality):
                return i
        have = ", ".join(f"{s}/{m}" for s, m in zip(self.study, self.modality, strict=True))
        raise KeyError(
            f"samples: no entry for study={study!r} modality={modality!r}; entries: {have}"
        )

    def entry(self, i: int) -> dict[str, np.ndarray]:
        """The arrays ``(X, Y, Z)`` of entry ``i``."""
        return {k: v[i] for k, v in self.arrays.items()}


def samples_from_views(
    views: Mapping[str, Any], study: list[str], modality: list[str], step: int | None = None
) -> Samples:
    """Samples from the views dict of :class:`mmlib.proxy.brainmvp.BrainMVPObjective`.

    Args:
        views: ``target, mask, view_a, view_b, recon_a, recon_b`` as ``(B, 1, X, Y, Z)`` (numpy
            arrays or tensors, which are detached and moved to the CPU).
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


def samples_file(run_dir: str | Path, step: int) -> Path:
    """``run_dir/samples/step_XXXXXXX.npz`` (whether or not it exists)."""
    return Path(run_dir) / SAMPLES / f"{step_name(step)}.npz"


def list_samples(run_dir: str | Path) -> list[Path]:
    """The samples files of a run folder, oldest step first."""
    return sorted((Path(run_dir) / SAMPLES).glob("step_*.npz"), key=step_of)


def write_samples(run_dir: str | Path, step: int, arrays: Mapping[str, Any]) -> Path:
    """Write ``samples/step_XXXXXXX.npz`` of a run atomically (a temporary file, then a rename).

    Args:
        run_dir: the run folder.
        step: the optimiser step the samples were taken at.
        arrays: the arrays to store (:data:`SAMPLE_KEYS` views ``(N, X, Y, Z)``, ``study``,
            ``modality``, ``step``, ``epoch``), written as they are (uncompressed).

    Returns:
        The samples file.
    """
    path = samples_file(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp.npz"
    payload: dict[str, Any] = dict(arrays)
    np.savez(tmp, **payload)
    tmp.replace(path)
    return path


def load_samples(path: str | Path) -> Samples:
    """Read a ``samples/step_XXXXXXX.npz`` file (views as float32, whatever they were saved as).

    Raises:
        ValueError: When the file lacks the ``study``/``modality`` arrays or every view array.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        if not {"study", "modality"} <= files:
            raise ValueError(
                f"{path}: a samples file needs 'study' and 'modality' arrays; "
                f"it has {sorted(files)}"
            )
        arrays = {k: np.asarray(z[k], dtype=np.float32) for k in SAMPLE_KEYS if k in files}
        if not arrays:
            raise ValueError(f"{path}: no view arrays; expected some of {', '.join(SAMPLE_KEYS)}")
        study = [str(s) for s in z["study"]]
        modality = [str(m) for m in z["modality"]]
        step = int(z["step"]) if "step" in files else None
        spacing = (
            np.asarray(z["spacing"], dtype=np.float64).reshape(len(study), 3)
            if "spacing" in files
            else None
        )
    if step is None:
        try:
            step = step_of(path)
        except ValueError:
            step = None
    return Samples(arrays, study, modality, step, spacing)


def save_samples(path: str | Path, samples: Samples) -> Path:
    """Write :class:`Samples` in the ``samples/step_XXXXXXX.npz`` format (compressed float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        k: np.asarray(v, dtype=np.float32) for k, v in samples.arrays.items()
    }
    payload["study"] = np.asarray(samples.study, dtype=str)
    payload["modality"] = np.asarray(samples.modality, dtype=str)
    if samples.spacing is not None:
        payload["spacing"] = np.asarray(samples.spacing, dtype=np.float32)
    np.savez_compressed(path, **payload)
    return path


def sample_errors(samples: str | Path | Samples) -> dict[str, float]:
    """Mean squared errors over the *masked* voxels of one samples file.

    The one reconstruction error of the book (chapters 3-6 and 11 report it): ``recon_a`` and
    ``recon_b`` (the reconstruction of each view against the target) and ``view_a``/``view_b``
    (the filled input against the target: what copying the input would score), for the views
    present. Over all voxels when the mask is empty.

    Args:
        samples: a ``samples/step_XXXXXXX.npz`` path or :class:`Samples`.

    Returns:
        Key (in :data:`ERROR_KEYS` order) -> mean squared error.
    """
    if not isinstance(samples, Samples):
        with np.load(samples) as z:
            arrays = {k: z[k] for k in ("target", "mask", *ERROR_KEYS) if k in z.files}
    else:
        arrays = samples.arrays
    target = np.asarray(arrays["target"]).astype(np.float32)
    mask = np.asarray(arrays["mask"]).astype(bool)
    out = {}
    for key in ERROR_KEYS:
        if key in arrays:
            err = (np.asarray(arrays[key]).astype(np.float32) - target) ** 2
            out[key] = float(err[mask].mean()) if mask.any() else float(err.mean())
    return out
