"""mmlib.engine.sampling: whole global batches, rank/accumulation splits that agree, resume."""

from __future__ import annotations

import pytest

from mmlib.engine.sampling import StepBatchSampler, epoch_order, steps_per_epoch


def test_two_ranks_see_the_chunks_one_process_sees_with_accumulation() -> None:
    one = StepBatchSampler(11, batch_size=2, accum=2, rank=0, world_size=1, seed=5)
    ranks = [
        StepBatchSampler(11, batch_size=2, accum=1, rank=r, world_size=2, seed=5) for r in (0, 1)
    ]
    for s in (one, *ranks):
        s.set_epoch(3)
    a = list(one)
    r0, r1 = list(ranks[0]), list(ranks[1])
    assert one.steps == ranks[0].steps == 2 and len(a) == 4 and len(r0) == 2
    # step j: one process's micro-batch m == rank m's batch
    assert a[0::2] == r0 and a[1::2] == r1
    flat = [i for b in a for i in b]
    assert len(set(flat)) == len(flat) == 8  # no study twice within an epoch


def test_resume_position_skips_whole_steps_and_epochs_differ() -> None:
    s = StepBatchSampler(12, batch_size=3, accum=1, seed=0)
    s.set_epoch(1)
    full = list(s)
    s.set_epoch(1, start=2)
    assert list(s) == full[2:] and len(s) == 2
    assert not epoch_order(12, 0, 1).equal(epoch_order(12, 0, 2))
    assert epoch_order(12, 0, 1).equal(epoch_order(12, 0, 1))


def test_too_few_studies_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="lower train.batch_size"):
        steps_per_epoch(3, batch_size=2, accum=1, world_size=2)
    with pytest.raises(ValueError, match="start"):
        StepBatchSampler(4, 2).set_epoch(0, start=5)
