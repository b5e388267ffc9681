"""Where a fine-tuning run starts: its initialisation and the network built from a config.

:func:`resolve_init` turns the config's ``init`` into a label and a checkpoint folder (scratch:
none; an objective name of :data:`mmlib.proxy.brainmvp.OBJECTIVES`: the run
:func:`mmlib.engine.pretrain.pretrain` makes or reuses, or with ``pretrained: shipped`` the
checkpoint shipped for the scale, :mod:`mmlib.models.shipped`; else a pre-training run or
checkpoint folder, read with :func:`mmlib.runs.checkpoint_folder`). :func:`checkpoint_identity`
is what a fine-tuning run depends on (path, step, weight hash). :func:`build_network` builds the
encoder (scratch) or loads it (checkpoint), adapts its first layer to the task's channels and puts
the decoder or classifier head on it, each new part under its own seed so that every
initialisation starts with the same decoder at a given ``train.seed``:

==========================  =====================================
``train.seed``              a scratch backbone (``seeded``)
``train.seed + 1``          the first layer's adaptation to C channels
``train.seed + 2``          the decoder or classifier head
==========================  =====================================

(``+ 3`` and ``+ 4`` are the trainer's: modality dropout and the global RNG of dropout.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmlib.models import (
    BACKBONE_PRESETS,
    ClassifierNet,
    SegmentationNet,
    adapt_in_channels,
    build_backbone,
    default_decoder,
    seeded,
)
from mmlib.models.shipped import sha256_of, shipped_checkpoint
from mmlib.proxy.brainmvp import OBJECTIVES
from mmlib.proxy.templates import Templates, scaling_of
from mmlib.runs import checkpoint_folder
from mmlib.tasks import TaskSpec


def _file_hash(path: Path) -> str:
    # the first 16 hex digits of the one file hash (shipped checkpoints record the same digest)
    return sha256_of(path)[:16]


def pretraining_overrides(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides of the pre-training run that ``init=<objective>`` starts.

    ``objective`` and the fine-tuning config's ``pretrain_overrides``. The pre-training store is
    ``pretrain_overrides["data.store"]`` when given, else the pre-training preset's (the
    scale's shared store), and never the fine-tuning store ``data.store``: a task's store holds
    its test studies, and pre-training samples every study of a store without roles.

    Raises:
        ValueError: When ``init`` is not an objective.
    """
    init = str(cfg["init"])
    if init not in OBJECTIVES:
        raise ValueError(f"init {init!r} is not a pre-training objective ({', '.join(OBJECTIVES)})")
    return {"objective": init, **dict(cfg.get("pretrain_overrides") or {})}


def resolve_init(cfg: Mapping[str, Any], progress: bool = True) -> tuple[str, Path | None]:
    """The initialisation's label and checkpoint folder (None for scratch).

    An objective name pre-trains (or reuses) the run ``pretrain(scale, overrides)`` of
    :func:`pretraining_overrides`: on the pre-training store, never on the task's; with
    ``pretrained: shipped`` it is the checkpoint shipped with mmlib for the scale
    (:mod:`mmlib.models.shipped`), checked against its recorded hash.

    Args:
        cfg: a resolved fine-tuning configuration.
        progress: show the pre-training's progress bars. Defaults to True.

    Returns:
        ``(label, folder)``: ``("scratch", None)``, ``(objective, its latest checkpoint)``, or
        (the run's or checkpoint's name, the checkpoint folder).

    Raises:
        FileNotFoundError: When ``init`` is neither scratch, an objective, nor a run or
            checkpoint folder, or no checkpoint is shipped for it (``pretrained: shipped``).
        ValueError: When ``pretrained`` is unknown, or shipped with ``pretrain_overrides``.
    """
    init = str(cfg["init"])
    if init == "scratch":
        return "scratch", None
    if init in OBJECTIVES:
        source = cfg.get("pretrained", "train")
        if source == "shipped":
            return init, _shipped(cfg, init)
        if source != "train":
            raise ValueError(
                f"finetune config: pretrained should be train or shipped, got {source!r}"
            )
        from mmlib.engine.pretrain import pretrain

        run = pretrain(cfg["scale"], pretraining_overrides(cfg), progress=progress)
        return init, checkpoint_folder(run)
    folder = checkpoint_folder(init)
    in_run = folder.parent.name == "checkpoints"
    return (folder.parent.parent.name if in_run else folder.name), folder


def _shipped(cfg: Mapping[str, Any], init: str) -> Path:
    """The checkpoint shipped for ``init`` at the config's scale (``pretrained: shipped``)."""
    from mmlib.models.shipped import shipped_checkpoints

    if cfg.get("pretrain_overrides"):
        raise ValueError(
            f"finetune config: pretrain_overrides {dict(cfg['pretrain_overrides'])} ask for a "
            "pre-training of their own; set pretrained=train with them"
        )
    folder = shipped_checkpoint(str(cfg["scale"]), init)
    if folder is None:
        have = [f"{r['scale']}/{r['objective']}" for r in shipped_checkpoints()]
        raise FileNotFoundError(
            f"init {init!r}: no checkpoint is shipped for scale {cfg['scale']!r} (shipped: "
            f"{', '.join(have) or 'none'}); set pretrained=train to pre-train it"
        )
    return folder


def checkpoint_identity(folder: Path | None) -> dict[str, Any]:
    """Path, step and weight hash of a checkpoint (what a fine-tuning run depends on)."""
    if folder is None:
        return {"init": "scratch"}
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return {
        "path": str(folder.resolve()),
        "step": meta.get("step"),
        "weights": _file_hash(folder / "model.safetensors"),
    }


def build_network(
    cfg: Mapping[str, Any], spec: TaskSpec, ckpt: Path | None
) -> tuple[nn.Module, Templates | None, dict[str, Any]]:
    """The downstream network, the checkpoint's templates (or None), and a description.

    Args:
        cfg: a resolved fine-tuning configuration (``model.*``, ``train.seed``, ``scale``).
        spec: the resolved task (modalities in channel order; regions or classes).
        ckpt: a pre-training checkpoint folder, or None for a scratch encoder.

    Returns:
        ``(net, templates, desc)``: a :class:`~mmlib.models.SegmentationNet` or
        :class:`~mmlib.models.ClassifierNet` taking C = ``len(spec.modalities)`` channels
        ``(B, C, X, Y, Z)``; the checkpoint's :class:`~mmlib.proxy.templates.Templates` (None
        for scratch or a checkpoint without them); ``desc`` (backbone, size, decoder, source,
        parameter count).

    Raises:
        ValueError: When ``model.head_prior`` is outside (0, 1).
    """
    from mmlib.models.checkpoints import load_pretrained

    seed = int(cfg["train"]["seed"])
    c = len(spec.modalities)
    templates = None
    if ckpt is None:
        name = cfg["model"]["name"]
        size = dict(cfg["model"]["size"] or BACKBONE_PRESETS[cfg["scale"]][name])
        with seeded(seed):
            backbone = build_backbone(name, in_channels=1, **size)
        source = "scratch"
    else:
        backbone, volumes, affine, meta = load_pretrained(ckpt)
        if volumes is not None:
            templates = Templates.from_volumes(
                volumes, np.eye(4) if affine is None else affine, scaling=scaling_of(meta)
            )
            templates.volumes.requires_grad_(False)  # a fill input, never trained downstream
        name = backbone.name
        source = str(ckpt)
    adapt_in_channels(
        backbone, c, mode=cfg["model"]["adapt"], generator=torch.Generator().manual_seed(seed + 1)
    )
    decoder = cfg["model"]["decoder"]
    if decoder == "auto":
        decoder = default_decoder(name)
    if spec.kind == "segmentation":
        assert spec.regions is not None
        prior = cfg["model"].get("head_prior")
        head_bias = None
        if prior is not None and spec.regions.sigmoid:
            if not 0 < float(prior) < 1:
                raise ValueError(
                    f"finetune config: model.head_prior should be in (0, 1) or null, got {prior}"
                )
            head_bias = math.log(float(prior) / (1 - float(prior)))
        net: nn.Module = SegmentationNet(
            backbone,
            c,
            spec.regions.out_channels,
            decoder=decoder,
            deep_supervision=bool(cfg["model"]["deep_supervision"]),
            seed=seed + 2,
            head_bias=head_bias,
        )
    else:
        net = ClassifierNet(
            backbone,
            len(spec.classes),
            hidden=int(cfg["model"]["hidden"]),
            dropout=float(cfg["model"]["dropout"]),
            seed=seed + 2,
        )
    desc = {
        "backbone": name,
        "size": getattr(backbone, "size", {}),
        "decoder": decoder if spec.kind == "segmentation" else "mlp",
        "encoder_from": source,
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }
    return net, templates, desc
