"""Where a run keeps its checkpoints, and which one is the latest *complete* one.

The one reader of a run's checkpoint folders: the engine writes ``checkpoints/step_XXXXXXX/``
and ``checkpoints/latest`` (see :mod:`mmlib.engine.checkpointing`), and everything that loads a
run (fine-tuning, evaluation, the viewers, the notebooks) finds the folder here. A checkpoint
folder is complete when it holds ``model.safetensors``, ``meta.json`` and ``train_state.pt``;
an imported checkpoint (released weights, ``mmlib weights import``) has no training state and is
complete with the first two.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TRAIN_STATE = "train_state.pt"
"""Optimiser, scheduler, RNG and sampler state of a training checkpoint."""
LATEST = "latest"
"""``checkpoints/latest``: the name of the newest committed checkpoint folder."""
STEP_RE = re.compile(r"step_(\d+)")
"""``step_<digits>`` in a checkpoint folder or samples file name."""
_FOLDER_RE = re.compile(r"^step_(\d{7,})$")


def step_name(step: int) -> str:
    """Folder name of the checkpoint taken after optimiser step ``step``: ``step_0000042``."""
    return f"step_{int(step):07d}"


def step_of(path: str | Path) -> int:
    """The step number in a ``step_XXXXXXX`` file or folder name.

    Raises:
        ValueError: When the name has no ``step_<digits>``.
    """
    m = STEP_RE.search(Path(path).name)
    if not m:
        raise ValueError(f"{path}: not a step_XXXXXXX name")
    return int(m.group(1))


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk where the platform allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def is_complete(folder: Path, train_state: bool = True) -> bool:
    """Whether ``folder`` holds a whole checkpoint.

    Args:
        folder: a checkpoint folder.
        train_state: also require ``train_state.pt`` (a training checkpoint). Defaults to True.
    """
    names = ("model.safetensors", "meta.json") + ((TRAIN_STATE,) if train_state else ())
    return all((Path(folder) / f).is_file() for f in names)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under ``root`` (a run's ``checkpoints/``), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and _FOLDER_RE.match(p.name) and is_complete(p)
    ]
    return sorted(found, key=step_of)


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``latest`` first, else by step), or None.

    A process killed between committing a folder and updating ``latest`` leaves a newer complete
    folder than the one ``latest`` names; the newer one wins.
    """
    root = Path(root)
    pointer = root / LATEST
    named: Path | None = None
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if cand.is_dir() and is_complete(cand):
            named = cand
    found = list_checkpoints(root)
    if found and (named is None or step_of(found[-1]) > step_of(named)):
        return found[-1]
    return named


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete checkpoint folder of a run folder.

    Raises:
        FileNotFoundError: When the run has no complete checkpoint.
    """
    found = find_latest(Path(run_dir) / "checkpoints")
    if found is None:
        raise FileNotFoundError(
            f"{run_dir}: no complete checkpoint under checkpoints/; run "
            "mmlib pretrain first (or wait until it writes its first "
            "checkpoint)"
        )
    return found


def checkpoint_at(run_dir: str | Path, step: int | None = None) -> Path:
    """The complete checkpoint of ``step`` in a run folder (the latest complete one when None).

    Raises:
        FileNotFoundError: When there is no complete checkpoint of that step.
    """
    if step is None:
        return latest_checkpoint(run_dir)
    path = Path(run_dir) / "checkpoints" / step_name(step)
    if not is_complete(path):
        have = [step_of(p) for p in list_checkpoints(Path(run_dir) / "checkpoints")]
        raise FileNotFoundError(f"{path}: no complete checkpoint for step {step}; complete: {have}")
    return path


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint folder meant by ``path``: a checkpoint folder, or a run folder's latest.

    Args:
        path: a checkpoint folder (``model.safetensors`` + ``meta.json``) or a run folder.

    Raises:
        FileNotFoundError: When ``path`` is neither, or the run has no complete checkpoint.
    """
    p = Path(path)
    if is_complete(p, train_state=False):
        return p
    if (p / "checkpoints").is_dir():
        return latest_checkpoint(p)
    raise FileNotFoundError(
        f"{p}: neither a checkpoint folder (model.safetensors + meta.json) "
        "nor a run folder (checkpoints/); give a pre-training run or "
        "checkpoint folder"
    )
