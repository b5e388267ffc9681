"""mmlib.models: backbones behind one encoder/decoder interface, released weights, checkpoints.

- :func:`build_backbone` / :data:`BACKBONE_PRESETS`: ``unet`` (BrainMVP's residual GroupNorm
  U-Net), ``uniformer`` (BrainMVP's 3D UniFormer-S), ``swinunetr`` (MONAI's SwinUNETR encoder
  with a no-skip decoder), each a :class:`Backbone` with ``encode``, ``decode``, ``forward``,
  ``feature_channels``, ``feature_strides``, ``name`` and ``size``.
- :func:`load_released` / :func:`released_key_map`: the authors' released checkpoints, loaded
  key by key with a report of every key used or dropped.
- :func:`adapt_in_channels`: 1 -> C input channels (inflate or re-initialise).
- :mod:`mmlib.models.checkpoints`: safetensors + JSON checkpoint folders, ``safe_torch_load``,
  ``load_pretrained``, ``export_encoder``, ``export_templates_nifti``.
"""

from __future__ import annotations

from mmlib.models.adapt import ADAPT_MODES, adapt_in_channels
from mmlib.models.base import Backbone
from mmlib.models.checkpoints import (
    UnsafeCheckpointError,
    export_encoder,
    export_templates_nifti,
    load_checkpoint,
    load_encoder,
    load_pretrained,
    safe_torch_load,
    save_checkpoint,
    save_pretrained,
)
from mmlib.models.registry import BACKBONE_PRESETS, BACKBONES, build_backbone, preset
from mmlib.models.released import (
    LoadReport,
    load_released,
    released_key_map,
    released_layout,
    released_template_affine,
)

__all__ = [
    "ADAPT_MODES",
    "BACKBONES",
    "BACKBONE_PRESETS",
    "Backbone",
    "LoadReport",
    "UnsafeCheckpointError",
    "adapt_in_channels",
    "build_backbone",
    "export_encoder",
    "export_templates_nifti",
    "load_checkpoint",
    "load_encoder",
    "load_pretrained",
    "load_released",
    "preset",
    "released_key_map",
    "released_layout",
    "released_template_affine",
    "safe_torch_load",
    "save_checkpoint",
    "save_pretrained",
]
