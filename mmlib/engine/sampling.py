"""The order in which pre-training visits studies: resumable, rank-aware, accumulation-aware.

Each epoch is one permutation of the ``N`` studies, drawn from ``(seed, epoch)`` alone. An
optimiser step consumes the next ``G = batch_size * accum * world_size`` studies of it (the
global batch; the ``N mod G`` left over at the end of an epoch are skipped, so every step is
whole). The global batch is cut into ``accum * world_size`` chunks of ``batch_size``; rank ``r``
takes chunks ``r * accum ... r * accum + accum - 1``, one per micro-step. Chunk ``c`` of step
``s`` is therefore the same studies whatever the split between ranks and accumulation, which is
what makes two processes with batch 2 equal one process with batch 2 and accumulation 2 (the
engine also seeds each chunk's masks from ``(seed, step, c)``). A run resumed at step ``s``
starts at ``epoch = s // steps_per_epoch``, position ``s % steps_per_epoch``, without loading
the skipped batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def steps_per_epoch(n: int, batch_size: int, accum: int = 1, world_size: int = 1) -> int:
    """Optimiser steps in one epoch of ``n`` studies (``n // global batch``).

    Raises:
        ValueError: When there are fewer studies than one global batch.
    """
    g = batch_size * accum * world_size
    if n < g:
        raise ValueError(
            f"pre-training has {n} studies but one optimiser step needs batch_size*accum*world_size"
            f" = {batch_size}*{accum}*{world_size} = {g}; lower train.batch_size or train.accum, or"
            " add studies to the store"
        )
    return n // g


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` for ``epoch`` (``int64 (n,)``), a function of seed and
    epoch."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


class StepBatchSampler(Sampler[list[int]]):
    """Batches of study indices for one rank, one per micro-step, from a position in an epoch.

    Args:
        n: number of studies.
        batch_size: studies per micro-batch (per rank).
        accum: micro-batches per optimiser step. Defaults to 1.
        rank: this process's rank. Defaults to 0.
        world_size: number of processes. Defaults to 1.
        seed: seed of the epoch permutations. Defaults to 0.

    Examples::

        >>> s = StepBatchSampler(10, batch_size=2, accum=1, rank=0, world_size=2)
        >>> s.set_epoch(0, start=0)
        >>> len(list(s))
        2
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        accum: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        self.n, self.batch_size, self.accum = int(n), int(batch_size), int(accum)
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.steps = steps_per_epoch(self.n, self.batch_size, self.accum, self.world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate ``epoch`` from optimiser step ``start`` of it."""
        if not 0 <= start <= self.steps:
            raise ValueError(f"StepBatchSampler: start should be in [0, {self.steps}], got {start}")
        self.epoch, self.start = int(epoch), int(start)

    def chunk(self, step_in_epoch: int, index: int) -> list[int]:
        """Study indices of chunk ``index`` of optimiser step ``step_in_epoch`` of this epoch."""
        order = epoch_order(self.n, self.seed, self.epoch)
        g = self.batch_size * self.accum * self.world_size
        lo = step_in_epoch * g + index * self.batch_size
        return order[lo : lo + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.n, self.seed, self.epoch).tolist()
        g = self.batch_size * self.accum * self.world_size
        for step in range(self.start, self.steps):
            for m in range(self.accum):
                lo = step * g + (self.rank * self.accum + m) * self.batch_size
                yield order[lo : lo + self.batch_size]

    def __len__(self) -> int:
        return (self.steps - self.start) * self.accum
