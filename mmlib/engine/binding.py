"""Bind a pre-training configuration to this machine and name its run folder.

:func:`resolve` turns what :func:`mmlib.engine.config.load_config` returns into what a run's
``config.json`` holds: the store path made absolute (and the store made when it is null), the
backbone size of the scale's preset, every objective field, the device kind and the
mixed-precision mode. :func:`default_run_dir` names the run folder from the resolved
configuration: ``run.root/run.name``, by default ``work_dir(scale)/runs/pretrain/<objective>-
<backbone>-<hash of the config>``, so that the same resolved configuration finds its run again.
"""

from __future__ import annotations

import contextlib
import json
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmlib.engine import distributed as D
from mmlib.engine.config import config_hash, load_config, resolve_objective

MAX_SKIPPED_IN_A_ROW = 20
"""Optimiser steps with non-finite gradients in a row after which a run (pre-training or
fine-tuning) stops with an error (fp16 with a GradScaler skips a few while it calibrates its
scale)."""


def amp_mode(setting: Any, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)`` for ``train.amp`` on ``device``.

    ``auto``: bf16 on a CUDA device that supports it, fp16 with a scaler on other CUDA devices,
    off elsewhere. ``bf16``/``fp16`` force it (a scaler only for fp16 on CUDA); ``off`` (or
    false) disables it.

    Raises:
        ValueError: When the setting is none of these.
    """
    s = {True: "auto", False: "off", None: "off"}.get(setting, str(setting).lower())
    if s == "off":
        return None, False
    if s == "auto":
        if device.type != "cuda":
            return None, False
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    if s == "bf16":
        return torch.bfloat16, False
    if s == "fp16":
        return torch.float16, device.type == "cuda"
    raise ValueError(f"config key train.amp: unknown mode {setting!r}; use auto, bf16, fp16 or off")


class MixedPrecision:
    """``train.amp`` of a training loop, one home for both trainers: the autocast context, the
    GradScaler, and the skipping of optimiser steps whose gradients are not finite.

    A step with non-finite gradients is skipped, as a GradScaler does for fp16: one bad step
    would otherwise turn every weight into NaN (bf16 autocast on CPU met them in thin 3-D
    convolutions, now run in fp32: :func:`guard_cpu_bf16_convs`, applied to ``module`` here).
    Under DDP the gradients are all-reduced first, so every rank skips the same steps.

    Args:
        setting: ``train.amp`` (see :func:`amp_mode`).
        device: where the module trains.
        module: the module whose convolutions the CPU bf16 guard binds.
    """

    def __init__(self, setting: Any, device: torch.device, module: nn.Module) -> None:
        self.device_type = device.type
        self.dtype, use_scaler = amp_mode(setting, device)
        if self.dtype == torch.bfloat16 and device.type == "cpu":
            guard_cpu_bf16_convs(module)  # oneDNN's thin-input bf16 fault, see there
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.skipped_in_a_row = 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's autocast (a null context when off)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, optimizer: torch.optim.Optimizer, finite: bool, where: str) -> bool:
        """Step ``optimizer`` unless its (unscaled) gradients are not ``finite``; returns
        whether the step was skipped.

        Raises:
            RuntimeError: At :data:`MAX_SKIPPED_IN_A_ROW` skipped steps in a row, naming
                ``where``.
        """
        skipped = not finite
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise RuntimeError(
                f"{where}: non-finite gradients at {self.skipped_in_a_row} optimiser steps in a "
                "row; the data or the loss is broken (see metrics.csv), or mixed precision fails "
                "here: try train.amp=off"
            )
        if self.scaler.is_enabled() or not skipped:
            self.scaler.step(optimizer)  # a GradScaler skips such a step itself
        self.scaler.update()
        return skipped


def _conv3d_fp32_when_thin(self: nn.Conv3d, x: Tensor) -> Tensor:
    """``nn.Conv3d.forward``, in fp32 when CPU bf16 autocast meets an input thinner than the
    kernel (see :func:`guard_cpu_bf16_convs`)."""
    if (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and any(s < k for s, k in zip(x.shape[2:], self.kernel_size))
    ):
        with torch.autocast("cpu", enabled=False):
            return nn.Conv3d.forward(self, x.float())
    return nn.Conv3d.forward(self, x)


def guard_cpu_bf16_convs(model: nn.Module) -> int:
    """Run ``model``'s 3-D convolutions in fp32 where bf16 autocast on CPU would fail them.

    With torch 2.13 on CPU, the bf16 weight gradient of a 3x3x3 convolution (padding 1) whose
    input has depth 2 is non-finite in about one call in five (oneDNN; from finite inputs and
    output gradients, non-deterministic; depth 1, 3 and more, and thin height or width, are
    fine): the U-Net's bottleneck at small crops (smoke: 32³ / 16). Such a convolution — any
    input thinner than its kernel along an axis — runs in fp32 instead; it is tiny, so this
    costs nothing measurable. Other convolutions and devices are untouched. The guard is an
    instance ``forward`` (a bound method: ``copy.deepcopy`` rebinds it to the copy), so weights,
    state dicts and checkpoints are unchanged.

    Args:
        model: any module; its ``nn.Conv3d`` submodules are guarded (once).

    Returns:
        The number of convolutions guarded.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv3d) and "forward" not in vars(m):
            m.forward = types.MethodType(_conv3d_fp32_when_thin, m)  # type: ignore[method-assign]
            n += 1
    return n


def amp_name(dtype: torch.dtype | None) -> str:
    """``off``, ``bf16`` or ``fp16``."""
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def resolve(
    cfg: Mapping[str, Any], device: torch.device | None = None, build_store: bool = True
) -> dict[str, Any]:
    """Bind a configuration to this machine: the store path, the backbone size, every objective
    field, the device kind and the mixed-precision mode (what ``config.json`` holds).

    Args:
        cfg: from :func:`mmlib.engine.config.load_config`.
        device: the device trained on. Defaults to None (``cfg["device"]``).
        build_store: make the scale's store when ``data.store`` is null (rank 0 only under
            DDP). Defaults to True.

    Raises:
        ValueError: When ``model.name`` is not a backbone of the scale.
    """
    from mmlib.models import BACKBONE_PRESETS

    out = json.loads(json.dumps(cfg))
    scale = out["scale"]
    if out["data"]["store"] is None:
        from mmlib.data import ensure_store

        store = ensure_store(scale) if build_store else _default_store(scale)
        out["data"]["store"] = str(Path(store).resolve())
    else:
        out["data"]["store"] = str(Path(out["data"]["store"]).expanduser().resolve())
    name = out["model"]["name"]
    if name not in BACKBONE_PRESETS[scale]:
        raise ValueError(
            f"config key model.name: unknown backbone {name!r}; choose one of "
            f"{', '.join(BACKBONE_PRESETS[scale])}"
        )
    out["model"]["size"] = {**BACKBONE_PRESETS[scale][name], **(out["model"]["size"] or {})}
    out["objective"] = resolve_objective(out)
    dev = device or D.pick_device(out["device"])
    out["device"] = dev.type
    out["train"]["amp"] = amp_name(amp_mode(out["train"]["amp"], dev)[0])
    return out


def _default_store(scale: str) -> Path:
    from mmlib.paths import work_dir

    return work_dir(scale) / "store"


def default_run_dir(cfg: Mapping[str, Any]) -> Path:
    """``run.root/run.name`` of a resolved configuration (see the module docstring)."""
    from mmlib.paths import work_dir

    run = cfg["run"]
    root = Path(run["root"]) if run.get("root") else work_dir(cfg["scale"]) / "runs" / "pretrain"
    name = (
        run.get("name") or f"{cfg['objective']['name']}-{cfg['model']['name']}-{config_hash(cfg)}"
    )
    return root / name


def run_dir_for(
    config: str | Path | Mapping[str, Any] = "demo",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> Path:
    """The run folder :func:`mmlib.engine.pretrain.pretrain` would use (nothing is trained)."""
    cfg = resolve(load_config(config, overrides), build_store=True)
    return default_run_dir(cfg)
