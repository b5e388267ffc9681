"""Periodic, atomic, keep-last-k checkpoints of a pre-training run, and exact resume.

A checkpoint is ``checkpoints/step_XXXXXXX/`` holding mmlib's safe model checkpoint
(``model.safetensors`` + ``meta.json``, written by :func:`mmlib.models.checkpoints.save_checkpoint`)
and ``train_state.pt``: optimiser, scheduler and grad-scaler states, the RNG states of torch
(CPU and CUDA), numpy and python *of every rank*, the sampler's epoch and position, and the
step. It holds only tensors and plain containers, so it is read back with
``torch.load(weights_only=True)``: loading a run never executes pickled code.

Atomicity: everything is written into ``checkpoints/.step_XXXXXXX.tmp/``, flushed, then renamed
to its final name (a rename within one folder is atomic on POSIX file systems); only then is
``checkpoints/latest`` (the newest folder's name) replaced, itself written to a temporary file
and renamed. A process killed at any moment therefore leaves the previous checkpoint intact
and named by ``latest`` (or, if killed between the two renames, the new one complete and
``latest`` still naming the old one, which :func:`find_latest` then skips past). Older
checkpoints beyond ``keep`` are deleted after the new one is committed.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmlib.runs.checkpoints import (  # noqa: F401  (re-exported: the engine writes through runs)
    LATEST,
    TRAIN_STATE,
    find_latest,
    fsync_dir,
    is_complete,
    list_checkpoints,
    step_name,
    write_text_atomic,
)

FAULT_HOOK: Callable[[str], None] | None = None
"""Called with the name of each phase of a checkpoint write (``weights``, ``state``,
``commit``, ``latest``, ``prune``) just before it; fault-injection tests kill the process
there. None in normal use."""


def _phase(name: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(name)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA when used, numpy, python) as safe values."""
    # the global numpy state is what exact resume must carry (third-party code may draw from it)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save(
    root: Path,
    step: int,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any],
    train_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` atomically and keep only the last ``keep``.

    Args:
        root: the run's ``checkpoints/`` folder.
        step: optimiser steps done.
        state_dict: model weights (``backbone.*``, ``templates.volumes``, ...).
        meta: checkpoint metadata (see :mod:`mmlib.models.checkpoints`).
        train_state: optimiser, scheduler, scaler, RNG, sampler position (safe values only).
        keep: how many checkpoints to keep. Defaults to 2.

    Returns:
        The committed folder ``root/step_XXXXXXX``.
    """
    from mmlib.models.checkpoints import save_checkpoint

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    _phase("weights")
    save_checkpoint(tmp, {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, meta)
    _phase("state")
    with open(tmp / TRAIN_STATE, "wb") as fh:
        torch.save(train_state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(tmp)
    _phase("commit")
    if final.exists():
        old = root / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(root)
    _phase("latest")
    write_text_atomic(root / LATEST, final.name + "\n")
    _phase("prune")
    for old in list_checkpoints(root)[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    clean_stale(root)
    return final


def clean_stale(root: Path) -> list[str]:
    """Remove the temporary folders of interrupted writes (dot-folders ``.step_*``)."""
    removed = []
    for stale in Path(root).glob(".step_*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale.name)
    return removed


def load_train_state(folder: Path) -> dict[str, Any]:
    """Read ``train_state.pt`` of a checkpoint folder (safe: ``weights_only=True``)."""
    return torch.load(Path(folder) / TRAIN_STATE, map_location="cpu", weights_only=True)


def load(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Weights, metadata and training state of one checkpoint folder."""
    from mmlib.models.checkpoints import load_checkpoint

    state, meta = load_checkpoint(folder)
    return state, meta, load_train_state(folder)
