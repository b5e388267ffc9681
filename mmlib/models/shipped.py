"""Pre-training checkpoints shipped with mmlib, and the one way to make them.

``mmlib/pretrained/<scale>/<objective>/`` holds a checkpoint folder (``model.safetensors`` +
``meta.json``, :mod:`mmlib.models.checkpoints`' format) made by mmlib's own commands on the
embedded cohort, so that the downstream chapters start from a fixed pre-training instead of
re-running one per build (a fine-tuning config with ``pretrained: shipped`` resolves an
objective ``init`` here: :func:`mmlib.engine.initialise.resolve_init`). Each ``meta.json`` keeps
the pre-training's own meta (config, step, model) and adds ``shipped``:

- ``command``: the commands that regenerate it from a fresh clone;
- ``source_weights``: the digest of the run's checkpoint it was packed from (the ``weights``
  of :func:`mmlib.engine.initialise.checkpoint_identity`, the first 16 hex digits of its
  SHA-256), which evidence measured on that run (``mmlib/evidence/``) names;
- ``dtype``: the stored precision of the backbone and of the templates (rounding the backbone
  to float16 halves the file; loading casts back to float32);
- ``sha256``: of the packed ``model.safetensors``, checked on every use (:func:`verify_shipped`)
  so that a Git LFS pointer or a truncated copy is an error, not a silently different start.

Make one (``mmlib weights pack`` calls :func:`pack_checkpoint`)::

    mmlib pretrain --config demo objective=brainmvp
    mmlib weights pack .mmlib/demo/runs/pretrain/brainmvp-unet-<hash> \\
        --out mmlib/pretrained/demo/brainmvp --dtype float32 --templates float16
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmlib.models.checkpoints import (
    BACKBONE_PREFIX,
    META_FILE,
    TEMPLATES_KEY,
    WEIGHTS_FILE,
    load_checkpoint,
    save_checkpoint,
)

SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"
"""Where the shipped checkpoints live (package data: ``mmlib/pretrained``)."""

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_checkpoint(scale: str, objective: str, root: str | Path | None = None) -> Path | None:
    """The shipped checkpoint folder of ``objective`` at ``scale``, verified, or None.

    Raises:
        ValueError: When the folder exists but its weights do not match their recorded hash.
    """
    folder = Path(root or SHIPPED_ROOT) / scale / objective
    if not (folder / META_FILE).is_file():
        return None
    verify_shipped(folder)
    return folder


def shipped_checkpoints(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per shipped checkpoint: scale, objective, folder, step, epochs, dtypes, size."""
    rows = []
    for meta_path in sorted(Path(root or SHIPPED_ROOT).glob(f"*/*/{META_FILE}")):
        meta = json.loads(meta_path.read_text())
        ship = meta.get("shipped", {})
        cfg = meta.get("config", {})
        rows.append(
            {
                "scale": meta_path.parent.parent.name,
                "objective": meta_path.parent.name,
                "folder": str(meta_path.parent),
                "step": meta.get("step"),
                "epochs": cfg.get("schedule", {}).get("epochs"),
                "backbone_dtype": ship.get("dtype", {}).get("backbone"),
                "templates_dtype": ship.get("dtype", {}).get("templates"),
                "source_weights": ship.get("source_weights"),
                "megabytes": round((meta_path.parent / WEIGHTS_FILE).stat().st_size / 2**20, 1),
            }
        )
    return rows


def verify_shipped(folder: str | Path) -> None:
    """Check a shipped folder's ``model.safetensors`` against the SHA-256 in its meta.

    Raises:
        ValueError: When the meta has no ``shipped.sha256`` or the file does not match it.
    """
    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    want = meta.get("shipped", {}).get("sha256")
    if not want:
        raise ValueError(f"{folder / META_FILE}: no shipped.sha256; make it with pack_checkpoint")
    got = sha256_of(folder / WEIGHTS_FILE)
    if got != want:
        command = " && ".join(meta["shipped"].get("command", [])) or "mmlib weights pack"
        raise ValueError(
            f"{folder / WEIGHTS_FILE}: SHA-256 {got[:16]}... is not the recorded {want[:16]}... "
            f"(a Git LFS pointer or a partial copy?); restore it (git checkout -- {folder}) or "
            f"regenerate it: {command}"
        )


def pack_checkpoint(
    source: str | Path,
    out: str | Path,
    dtype: str = "float16",
    templates: str | None = "float16",
    command: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a pre-training checkpoint folder as a shipped one (see the module docstring).

    Args:
        source: a pre-training checkpoint folder (``backbone.*`` and maybe templates).
        out: the folder to write (replaced when it exists).
        dtype: stored precision of the backbone (``float32``, ``float16``, ``bfloat16``).
        templates: stored precision of the templates, or None to drop them (a downstream
            ``fill: template`` then needs a checkpoint that has them). Defaults to float16.
        command: the commands that regenerate it, recorded in ``shipped.command``.
        extra: more provenance for ``shipped`` (for example the machine). Defaults to None.

    Returns:
        The written folder.

    Raises:
        ValueError: When ``source`` holds no backbone or a dtype is unknown.
    """
    for name in (dtype, templates):
        if name is not None and name not in DTYPES:
            raise ValueError(f"pack_checkpoint: dtype {name!r} is not one of {', '.join(DTYPES)}")
    source = Path(source)
    state, meta = load_checkpoint(source)
    backbone = {k: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    if not backbone:
        raise ValueError(f"{source}: no {BACKBONE_PREFIX}* weights; not a pre-training checkpoint")
    packed = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in backbone.items()}
    if templates is not None and TEMPLATES_KEY in state:
        packed[TEMPLATES_KEY] = state[TEMPLATES_KEY].to(DTYPES[templates])
    shipped = {
        "command": list(command),
        "source": str(source),
        "source_weights": sha256_of(source / WEIGHTS_FILE)[:16],
        "dtype": {"backbone": dtype, "templates": templates if TEMPLATES_KEY in packed else None},
        **dict(extra or {}),
    }
    folder = save_checkpoint(out, packed, {**meta, "shipped": shipped})
    # the hash of the file as written, recorded beside it (a second, small write)
    full = json.loads((folder / META_FILE).read_text())
    full["shipped"]["sha256"] = sha256_of(folder / WEIGHTS_FILE)
    (folder / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return folder
