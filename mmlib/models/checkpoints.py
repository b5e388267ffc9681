"""mmlib's checkpoint format: a folder with ``model.safetensors`` and ``meta.json``.

Loading a checkpoint never runs pickled code: weights are safetensors, metadata is JSON, and a
foreign ``.pt`` file goes through :func:`safe_torch_load` (``torch.load(weights_only=True)``),
which refuses a pickle that would execute code with a one-line message.

Pre-training checkpoints (the engine writes them) hold the state keys ``backbone.*`` and
``templates.volumes`` and the meta::

    {"model": {"name": ..., "size": {...}}, "modalities": [...], "template_affine": 4x4,
     "step": int, "config": {...}, "mmlib_version": "..."}

:func:`load_pretrained` rebuilds the backbone from that meta; :func:`export_encoder` writes the
encoder alone for downstream use; :func:`export_templates_nifti` writes the templates as NIfTI
with their true affine, so that they overlay the images.

Examples::

    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> save_checkpoint(f"{d}/ckpt", {"w": torch.ones(2)}, {"step": 3})  # doctest: +ELLIPSIS
    PosixPath('.../ckpt')
    >>> state, meta = load_checkpoint(f"{d}/ckpt")
    >>> meta["step"], state["w"].tolist()
    (3, [1.0, 1.0])
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mmlib.models.base import Backbone
from mmlib.models.registry import build_backbone

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
BACKBONE_PREFIX = "backbone."
TEMPLATES_KEY = "templates.volumes"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def save_checkpoint(
    directory: str | Path, state_dict: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> Path:
    """Write a checkpoint folder atomically (a temporary sibling folder, then a rename).

    Args:
        directory: the checkpoint folder to create; an existing one is replaced.
        state_dict: tensors to store (made contiguous and moved to CPU; shared storage is
            cloned, as safetensors requires).
        meta: JSON-serialisable metadata (numpy arrays and tensors become lists);
            ``mmlib_version`` is added when absent.

    Returns:
        The checkpoint folder.

    Raises:
        ValueError: When a value of ``state_dict`` is not a tensor.
    """
    from mmlib import __version__

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise ValueError(
                f"save_checkpoint({directory}): state_dict[{key!r}] is a "
                f"{type(value).__name__}, not a tensor"
            )
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    meta = dict(_jsonable(dict(meta)))
    meta.setdefault("mmlib_version", __version__)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(old)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint folder: ``(state_dict, meta)``.

    Raises:
        FileNotFoundError: When the folder lacks ``model.safetensors`` or ``meta.json``.
    """
    directory = Path(directory)
    for name in (WEIGHTS_FILE, META_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory}: not an mmlib checkpoint (no {name}); write one with save_checkpoint"
            )
    state = load_file(str(directory / WEIGHTS_FILE), device=str(device))
    meta = json.loads((directory / META_FILE).read_text())
    return state, meta


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A ``.pt`` file that would run code when unpickled."""


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a foreign ``.pt``/``.pth`` file with ``torch.load(weights_only=True)`` only.

    Tensors, dicts, lists, numbers and strings load; anything that needs arbitrary code to
    unpickle (a class, a function, ``os.system``...) is refused.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
        UnsafeCheckpointError: When the pickle would execute code; the one-line message names the
            file and what it tried to load.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = " ".join(str(err).split())
        match = re.search(r"GLOBAL ([\w.]+)", detail)
        what = f" (it imports {match[1]})" if match else ""
        raise UnsafeCheckpointError(
            f"{path}: refused, this pickle would run code when loaded{what}; mmlib loads only "
            "tensors (torch.load weights_only=True): re-save the file's state_dict with torch.save"
        ) from None


def pretrained_state(backbone: Backbone, templates: Tensor | None) -> dict[str, Tensor]:
    """The state dict of a pre-training checkpoint: ``backbone.*`` plus ``templates.volumes``."""
    state = {BACKBONE_PREFIX + k: v for k, v in backbone.state_dict().items()}
    if templates is not None:
        state[TEMPLATES_KEY] = templates
    return state


def pretrained_meta(
    backbone: Backbone,
    modalities: Sequence[str],
    template_affine: np.ndarray | Sequence[Sequence[float]] | None,
    step: int,
    config: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The meta of a pre-training checkpoint (see the module docstring)."""
    from mmlib import __version__

    affine = None if template_affine is None else np.asarray(template_affine, dtype=float).tolist()
    meta = {
        "model": {"name": backbone.name, "size": dict(backbone.size)},
        "modalities": list(modalities),
        "template_affine": affine,
        "step": int(step),
        "config": dict(config or {}),
        "mmlib_version": __version__,
    }
    meta.update(extra)
    return meta


def save_pretrained(
    directory: str | Path,
    backbone: Backbone,
    templates: Tensor | None,
    modalities: Sequence[str],
    template_affine: np.ndarray | Sequence[Sequence[float]] | None,
    step: int = 0,
    config: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write a pre-training checkpoint folder (``backbone.*``, ``templates.volumes``, meta)."""
    meta = pretrained_meta(backbone, modalities, template_affine, step, config, **extra)
    return save_checkpoint(directory, pretrained_state(backbone, templates), meta)


def load_pretrained(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[Backbone, Tensor | None, np.ndarray | None, dict[str, Any]]:
    """Rebuild the backbone of a pre-training checkpoint from its meta and load its weights.

    Returns:
        ``(backbone, templates (K, X, Y, Z) or None, template_affine (4, 4) or None, meta)``;
        the backbone is in ``eval()`` mode on ``device``.

    Raises:
        ValueError: When the meta has no ``model`` entry or the weights do not fit the backbone.
    """
    state, meta = load_checkpoint(directory, device)
    model_meta = meta.get("model")
    if not isinstance(model_meta, Mapping) or "name" not in model_meta:
        raise ValueError(
            f"{directory}: meta.json has no 'model': {{'name', 'size'}}; "
            "not a pre-training checkpoint"
        )
    backbone = build_backbone(model_meta["name"], **dict(model_meta.get("size", {})))
    own = {k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    try:
        backbone.load_state_dict(own, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(
            f"{directory}: weights do not fit {model_meta['name']} {model_meta.get('size')}: "
            + " ".join(first[:2])
        ) from None
    backbone.to(device).eval()
    affine = meta.get("template_affine")
    templates = state.get(TEMPLATES_KEY)
    return (
        backbone,
        # a shipped checkpoint may store them in float16 (mmlib.models.shipped); used in float32
        None if templates is None else templates.float(),
        None if affine is None else np.asarray(affine, dtype=float),
        meta,
    )


def export_encoder(
    backbone: Backbone, directory: str | Path, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write the encoder alone as a checkpoint folder for downstream use.

    State keys are ``encoder.*`` (the backbone's own names, so
    ``backbone.load_state_dict(state, strict=False)`` or :func:`load_encoder` restores them);
    meta holds ``model`` (name, size), ``feature_channels``, ``feature_strides`` and
    ``feature_permutation`` plus ``meta``.
    """
    state = {f"encoder.{k}": v for k, v in backbone.encoder.state_dict().items()}
    info = {
        "kind": "encoder",
        "model": {"name": backbone.name, "size": dict(backbone.size)},
        "feature_channels": list(backbone.feature_channels),
        "feature_strides": list(backbone.feature_strides),
        "feature_permutation": None
        if backbone.feature_permutation is None
        else list(backbone.feature_permutation),
    }
    info.update(dict(meta or {}))
    return save_checkpoint(directory, state, info)


def load_encoder(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[Backbone, dict[str, Any]]:
    """A backbone whose encoder comes from :func:`export_encoder` (decoder freshly initialised)."""
    state, meta = load_checkpoint(directory, device)
    backbone = build_backbone(meta["model"]["name"], **meta["model"]["size"])
    enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    backbone.encoder.load_state_dict(enc, strict=True)
    return backbone.to(device), meta


def export_templates_nifti(
    templates: Tensor | np.ndarray,
    affine: np.ndarray | Sequence[Sequence[float]],
    directory: str | Path,
    modalities: Sequence[str] | None = None,
) -> list[Path]:
    """Write each template ``(K, X, Y, Z)`` as ``<directory>/template_<modality>.nii.gz``.

    Args:
        templates: the template volumes.
        affine: their true voxel-to-world affine (4×4); never the identity by default.
        directory: output folder (created).
        modalities: one name per template; defaults to :data:`mmlib.modalities.MODALITIES`.

    Returns:
        The written files, in template order.

    Raises:
        ValueError: When the number of names does not match the templates.
    """
    import nibabel as nib

    from mmlib.modalities import MODALITIES

    if isinstance(templates, Tensor):
        vols = templates.detach().cpu().float().numpy()
    else:
        vols = np.asarray(templates, np.float32)
    names = list(MODALITIES[: vols.shape[0]]) if modalities is None else list(modalities)
    if len(names) != vols.shape[0]:
        raise ValueError(
            f"export_templates_nifti: {vols.shape[0]} templates but {len(names)} modality names"
        )
    aff = np.asarray(affine, dtype=float)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, vol in zip(names, vols):
        img = nib.Nifti1Image(vol.astype(np.float32), aff)
        img.header.set_xyzt_units("mm")
        img.set_qform(aff, code=1)
        img.set_sform(aff, code=1)
        path = directory / f"template_{name}.nii.gz"
        nib.save(img, str(path))
        paths.append(path)
    return paths


__all__ = [
    "BACKBONE_PREFIX",
    "META_FILE",
    "TEMPLATES_KEY",
    "UnsafeCheckpointError",
    "WEIGHTS_FILE",
    "export_encoder",
    "export_templates_nifti",
    "load_checkpoint",
    "load_encoder",
    "load_pretrained",
    "pretrained_meta",
    "pretrained_state",
    "safe_torch_load",
    "save_checkpoint",
    "save_pretrained",
]
