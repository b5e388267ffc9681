"""mmlib.proxy: BrainMVP's proxy tasks as batched device-side operations.

:mod:`~mmlib.proxy.masking` (block masks, template and cross-modal fills),
:mod:`~mmlib.proxy.templates` (learnable head-centred modality templates),
:mod:`~mmlib.proxy.contrastive` (symmetric InfoNCE, optionally gathered across ranks),
:mod:`~mmlib.proxy.brainmvp` (the composed objective and its baselines as config presets),
:mod:`~mmlib.proxy.missing` (modality subsets; absent channels of a downstream input filled
with the learned template or zeros).
"""

from __future__ import annotations

from mmlib.proxy.brainmvp import OBJECTIVES, BrainMVPObjective, ObjectiveConfig, get_objective
from mmlib.proxy.contrastive import InfoNCELoss, ProjectionHead, info_nce
from mmlib.proxy.masking import block_mask, cross_modal_fill, template_fill
from mmlib.proxy.missing import FILLS, fill_missing, modality_subsets
from mmlib.proxy.templates import TEMPLATE_SCALINGS, Templates, load_templates, scale_template_crop

__all__ = [
    "FILLS",
    "OBJECTIVES",
    "TEMPLATE_SCALINGS",
    "BrainMVPObjective",
    "InfoNCELoss",
    "ObjectiveConfig",
    "ProjectionHead",
    "Templates",
    "block_mask",
    "cross_modal_fill",
    "fill_missing",
    "get_objective",
    "info_nce",
    "load_templates",
    "modality_subsets",
    "scale_template_crop",
    "template_fill",
]
