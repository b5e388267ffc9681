"""mmlib.engine: pre-training (:mod:`mmlib.engine.pretrain`) and fine-tuning.

Pre-training pieces: :mod:`~mmlib.engine.config` (presets, files, ``key=value`` overrides),
:mod:`~mmlib.engine.binding` (a configuration bound to this machine, the run folder's name),
:mod:`~mmlib.engine.schedule` (warm-up + cosine in optimiser steps),
:mod:`~mmlib.engine.sampling` (resumable, rank- and accumulation-aware batch order),
:mod:`~mmlib.engine.distributed` (torchrun, DDP helpers, :func:`launch` from Python),
:mod:`~mmlib.engine.checkpointing` (atomic keep-last-k checkpoints, exact resume),
:mod:`~mmlib.engine.metrics` (CSV and TensorBoard). Run folders are written through
:mod:`mmlib.runs`, which also reads them back.

Examples::

    >>> from mmlib.engine.pretrain import pretrain                      # doctest: +SKIP
    >>> from mmlib.runs import latest_checkpoint                        # doctest: +SKIP
    >>> run = pretrain("demo", ["objective=mim"])                       # doctest: +SKIP
    >>> latest_checkpoint(run)                                          # doctest: +SKIP
"""

from __future__ import annotations

__all__: list[str] = []
