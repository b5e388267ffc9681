"""mmlib.engine: pre-training (:mod:`mmlib.engine.pretrain`) and fine-tuning.

Pre-training pieces: :mod:`~mmlib.engine.config` (presets, files, ``key=value`` overrides),
:mod:`~mmlib.engine.schedule` (warm-up + cosine in optimiser steps),
:mod:`~mmlib.engine.sampling` (resumable, rank- and accumulation-aware batch order),
:mod:`~mmlib.engine.distributed` (torchrun, DDP helpers), :mod:`~mmlib.engine.checkpointing`
(atomic keep-last-k checkpoints, exact resume), :mod:`~mmlib.engine.metrics` (CSV and
TensorBoard).

Examples::

    >>> from mmlib.engine.pretrain import pretrain, latest_checkpoint   # doctest: +SKIP
    >>> run = pretrain("demo", ["objective=mim"])                       # doctest: +SKIP
    >>> latest_checkpoint(run)                                          # doctest: +SKIP
"""

from __future__ import annotations

__all__: list[str] = []
