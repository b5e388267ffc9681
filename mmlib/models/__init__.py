"""mmlib.models: backbones behind one encoder/decoder interface, released weights, checkpoints.

- :func:`build_backbone` / :data:`BACKBONE_PRESETS`: ``unet`` (BrainMVP's residual GroupNorm
  U-Net), ``uniformer`` (BrainMVP's 3D UniFormer-S), ``swinunetr`` (MONAI's SwinUNETR encoder
  with a no-skip decoder), each a :class:`Backbone` with ``encode``, ``decode``, ``forward``.
"""

from __future__ import annotations

from mmlib.models.base import Backbone
from mmlib.models.registry import BACKBONE_PRESETS, BACKBONES, build_backbone, preset

__all__ = ["BACKBONES", "BACKBONE_PRESETS", "Backbone", "build_backbone", "preset"]
