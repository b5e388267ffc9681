"""Build a backbone by name, with size presets per scale.

``BACKBONE_PRESETS[scale][name]`` holds the size keyword arguments: ``paper`` is the released
architectures exactly (UniFormer-S, the 32-channel U-Net) and MONAI's SwinUNETR at its usual
size; ``demo`` and ``smoke`` are small versions of the same code, fast on a 2-core CPU at 32³.

Examples::

    >>> from mmlib.models import BACKBONE_PRESETS, build_backbone
    >>> net = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    >>> net.feature_strides
    [2, 4, 8, 8]
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mmlib.configs.scales import SCALES, check_scale
from mmlib.models.base import Backbone

BACKBONES: dict[str, str] = {
    "unet": "mmlib.models.unet:UNetBackbone",
    "uniformer": "mmlib.models.uniformer:UniFormerBackbone",
    "swinunetr": "mmlib.models.swin:SwinUNETRBackbone",
}
"""Registry name -> ``module:class`` of each backbone."""

BACKBONE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "unet": {"base_channels": 32, "num_groups": 8, "encoder_blocks": [1, 2, 2, 4]},
        "uniformer": {
            "widths": [64, 128, 320, 512],
            "depths": [3, 4, 8, 3],
            "head_dim": 64,
            "mlp_ratio": 4.0,
        },
        "swinunetr": {"feature_size": 48, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24]},
    },
    "demo": {
        "unet": {"base_channels": 16, "num_groups": 8, "encoder_blocks": [1, 1, 1, 2]},
        "uniformer": {
            "widths": [32, 64, 128, 256],
            "depths": [1, 1, 2, 1],
            "head_dim": 32,
            "mlp_ratio": 4.0,
        },
        "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8]},
    },
    "smoke": {
        "unet": {"base_channels": 8, "num_groups": 8, "encoder_blocks": [1, 1, 1, 1]},
        "uniformer": {
            "widths": [16, 32, 64, 128],
            "depths": [1, 1, 1, 1],
            "head_dim": 16,
            "mlp_ratio": 2.0,
        },
        "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]},
    },
}
assert set(BACKBONE_PRESETS) == set(SCALES)


def backbone_class(name: str) -> type[Backbone]:
    """The class registered under ``name``.

    Raises:
        ValueError: When ``name`` is not one of :data:`BACKBONES`.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_backbone(name: str, in_channels: int = 1, out_channels: int = 1, **size: Any) -> Backbone:
    """Build the backbone ``name`` (``unet``, ``uniformer`` or ``swinunetr``).

    Args:
        name: registry name.
        in_channels: input channels. Defaults to 1.
        out_channels: reconstruction channels. Defaults to 1.
        **size: size keyword arguments, e.g. ``**BACKBONE_PRESETS[scale][name]``; the built
            backbone's ``size`` attribute holds them all (defaults filled in), so
            ``build_backbone(net.name, **net.size)`` rebuilds it.

    Returns:
        The backbone, in training mode, randomly initialised.

    Raises:
        ValueError: When ``name`` is unknown or a size argument is not accepted.
    """
    # Backbone's own __init__ takes no arguments; every registered subclass takes these
    cls: Callable[..., Backbone] = backbone_class(name)
    try:
        return cls(in_channels=in_channels, out_channels=out_channels, **size)
    except TypeError as err:
        raise ValueError(
            f"build_backbone({name!r}): {err}; see BACKBONE_PRESETS for valid sizes"
        ) from err


def preset(scale: str, name: str) -> dict[str, Any]:
    """A copy of ``BACKBONE_PRESETS[scale][name]`` (checked scale and name)."""
    check_scale(scale)
    backbone_class(name)
    return dict(BACKBONE_PRESETS[scale][name])


__all__ = ["BACKBONES", "BACKBONE_PRESETS", "backbone_class", "build_backbone", "preset"]
