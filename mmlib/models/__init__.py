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
- :class:`SegmentationNet` (:mod:`mmlib.models.segmentation`, encoder + skip decoder) and
  :class:`ClassifierNet` (:mod:`mmlib.models.classification`, pooled feature + MLP): the
  downstream networks; :func:`seeded` builds new layers under a private RNG.
"""

from __future__ import annotations

from mmlib.models.adapt import ADAPT_MODES, adapt_in_channels
from mmlib.models.base import Backbone, seeded
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
from mmlib.models.classification import ClassifierNet
from mmlib.models.registry import BACKBONE_PRESETS, BACKBONES, build_backbone, preset
from mmlib.models.released import (
    LoadReport,
    load_released,
    released_key_map,
    released_layout,
    released_template_affine,
)
from mmlib.models.segmentation import DECODERS, SegmentationNet, default_decoder

__all__ = [
    "ADAPT_MODES",
    "BACKBONES",
    "BACKBONE_PRESETS",
    "Backbone",
    "ClassifierNet",
    "DECODERS",
    "LoadReport",
    "SegmentationNet",
    "UnsafeCheckpointError",
    "adapt_in_channels",
    "build_backbone",
    "default_decoder",
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
    "seeded",
]
