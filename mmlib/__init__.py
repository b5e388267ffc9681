"""mmlib: multi-modal self-supervised pre-training on brain MRI (BrainMVP), as a notebook book.

Rooms: :mod:`mmlib.data` (layouts, curation, store, sampler, the embedded cohort),
:mod:`mmlib.proxy` (masking, templates, contrastive, the BrainMVP objective),
:mod:`mmlib.models` (backbones, checkpoints), :mod:`mmlib.engine` (pre-training, fine-tuning),
:mod:`mmlib.evaluate` (metrics, reports), :mod:`mmlib.viz` (napari, widgets, plots).
"""

from __future__ import annotations

__version__ = "0.1.0"

from mmlib.modalities import MODALITIES, canonical

__all__ = ["MODALITIES", "canonical", "__version__"]
