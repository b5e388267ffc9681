"""mmlib.proxy: BrainMVP's proxy tasks as batched device-side operations.

:mod:`~mmlib.proxy.masking` (block masks, template and cross-modal fills),
:mod:`~mmlib.proxy.templates` (learnable head-centred modality templates),
:mod:`~mmlib.proxy.contrastive` (symmetric InfoNCE, optionally gathered across ranks),
:mod:`~mmlib.proxy.brainmvp` (the composed objective and its baselines as config presets).
"""

from __future__ import annotations

from mmlib.proxy.brainmvp import OBJECTIVES, BrainMVPObjective, ObjectiveConfig, get_objective
from mmlib.proxy.contrastive import InfoNCELoss, ProjectionHead, info_nce
from mmlib.proxy.masking import block_mask, cross_modal_fill, template_fill
from mmlib.proxy.templates import Templates

__all__ = [
    "OBJECTIVES",
    "BrainMVPObjective",
    "InfoNCELoss",
    "ObjectiveConfig",
    "ProjectionHead",
    "Templates",
    "block_mask",
    "cross_modal_fill",
    "get_objective",
    "info_nce",
    "template_fill",
]
