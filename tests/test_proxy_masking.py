"""Tests of mmlib.proxy.masking: exact block counts, block structure, fills."""

from __future__ import annotations

import math

import pytest
import torch

from mmlib.proxy.masking import (
    block_mask,
    cross_modal_fill,
    modality_minmax,
    n_kept,
    noise_fill,
    sample_slot,
    select_slot,
    template_fill,
    zero_fill,
)


@pytest.mark.parametrize(
    "size, block, rate",
    [
        ((16, 16, 16), 8, 0.8),
        ((96, 96, 96), 8, 0.875),
        ((20, 17, 9), 4, 0.5),
        ((24, 24, 24), (8, 4, 6), 0.3),
        ((16, 16, 16), 4, 0.0),
        ((16, 16, 16), 4, 1.0),
    ],
)
def test_block_mask_keeps_exact_count(size, block, rate):
    g = torch.Generator().manual_seed(0)
    m = block_mask(4, size, block, rate, g)
    assert m.shape == (4, 1, *size) and m.dtype == torch.bool
    b = (block,) * 3 if isinstance(block, int) else block
    grid = [math.ceil(s / bb) for s, bb in zip(size, b)]
    expected_kept = math.floor(math.prod(grid) * (1 - rate) + 1e-9)
    assert n_kept(size, block, rate) == expected_kept
    # sample each block at its first voxel: the block grid
    blocks = m[:, 0, :: b[0], :: b[1], :: b[2]]
    assert blocks.shape[1:] == tuple(grid)
    assert ((~blocks).flatten(1).sum(1) == expected_kept).all()
    # every voxel equals its block's value (blocks are constant)
    up = blocks.repeat_interleave(b[0], 1).repeat_interleave(b[1], 2).repeat_interleave(b[2], 3)
    assert torch.equal(up[:, : size[0], : size[1], : size[2]], m[:, 0])


def test_block_mask_reproducible_and_independent_per_study():
    a = block_mask(3, (32, 32, 32), 8, 0.8, torch.Generator().manual_seed(5))
    b = block_mask(3, (32, 32, 32), 8, 0.8, torch.Generator().manual_seed(5))
    c = block_mask(3, (32, 32, 32), 8, 0.8, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_block_mask_rejects_bad_rate(rate):
    with pytest.raises(ValueError, match="mask_rate"):
        block_mask(1, (8, 8, 8), 4, rate)


def test_template_zero_and_noise_fill_copy_the_right_voxels():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 1, 8, 8, 8, generator=g)
    tmpl = torch.rand(2, 1, 8, 8, 8, generator=g) + 2.0
    mask = block_mask(2, (8, 8, 8), 2, 0.5, g)
    view = template_fill(target, tmpl, mask)
    assert torch.equal(view[mask], tmpl[mask])
    assert torch.equal(view[~mask], target[~mask])
    z = zero_fill(target, mask)
    assert (z[mask] == 0).all() and torch.equal(z[~mask], target[~mask])
    n = noise_fill(target, mask, torch.Generator().manual_seed(3))
    assert torch.equal(n[~mask], target[~mask])
    assert ((n[mask] >= 0) & (n[mask] < 1)).all() and not torch.equal(n[mask], target[mask])


def test_cross_modal_fill_uses_another_present_modality():
    g = torch.Generator().manual_seed(2)
    bsz, k = 64, 4
    # slot j of study b is filled with the constant 10*b + j: the source is readable from voxels
    image = (10 * torch.arange(bsz).view(bsz, 1) + torch.arange(k).view(1, k)).float()
    image = image.view(bsz, k, 1, 1, 1).expand(bsz, k, 4, 4, 4).clone()
    present = torch.rand(bsz, k, generator=g) < 0.6
    present[:, 0] = True
    present[0] = torch.tensor([True, False, False, False])  # a single-modality study
    image = image * present.view(bsz, k, 1, 1, 1)
    target_slot, _ = sample_slot(present, g)
    mask = block_mask(bsz, (4, 4, 4), 2, 0.5, g)
    fallback = torch.full((bsz, 1, 4, 4, 4), -1.0)
    view, source, fell_back = cross_modal_fill(image, present, target_slot, mask, fallback, g)
    single = present.sum(1) == 1
    assert torch.equal(fell_back, single) and bool(fell_back[0])
    assert (source[single] == -1).all()
    multi = ~single
    assert (source[multi] != target_slot[multi]).all()
    assert present[multi.nonzero()[:, 0], source[multi]].all()
    target = select_slot(image, target_slot)
    assert torch.equal(view[~mask], target[~mask])
    expected_src = torch.where(
        single.view(-1, 1, 1, 1, 1), fallback, select_slot(image, source.clamp(min=0))
    )
    assert torch.equal(view[mask], expected_src[mask])
    # every eligible source slot gets chosen somewhere (the draw is not stuck on one slot)
    assert len(set(source[multi].tolist())) == k


def test_sample_slot_respects_present_and_exclude():
    present = torch.tensor([[True, False, True], [False, True, False]])
    for seed in range(20):
        slot, found = sample_slot(present, torch.Generator().manual_seed(seed))
        assert found.all() and present[torch.arange(2), slot].all()
    slot, found = sample_slot(present, exclude=torch.tensor([0, 1]))
    assert slot.tolist() == [2, -1] and found.tolist() == [True, False]


def test_cross_modal_fill_rejects_bad_shapes():
    with pytest.raises(ValueError, match="cross_modal_fill"):
        cross_modal_fill(
            torch.zeros(2, 3, 4, 4, 4),
            torch.ones(2, 2, dtype=torch.bool),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(2, 1, 4, 4, 4).bool(),
        )


def test_cross_modal_fill_in_place_leaves_inputs_and_gradients_alone():
    """The view is written over the fill's own source gather only when autograd records
    nothing; the batch, the target and the fallback are never written, and a fallback that
    requires grad still receives its gradient through the masked voxels."""
    g = torch.Generator().manual_seed(3)
    bsz, k = 3, 3
    image = torch.rand(bsz, k, 4, 4, 4, generator=g)
    present = torch.ones(bsz, k, dtype=torch.bool)
    present[0, 1:] = False  # single modality: falls back
    slot = torch.zeros(bsz, dtype=torch.long)
    mask = block_mask(bsz, (4, 4, 4), 2, 0.5, g)
    image_before = image.clone()
    target = select_slot(image, slot)
    target_before = target.clone()
    fallback = torch.rand(bsz, 1, 4, 4, 4, generator=g).requires_grad_(True)
    for weights in (False, True):
        m = mask.float() if weights else mask
        for track in (False, True):
            with torch.set_grad_enabled(track):
                view, source, _ = cross_modal_fill(
                    image, present, slot, m, fallback, torch.Generator().manual_seed(1), target
                )
            expected = torch.where(
                mask,
                torch.where(
                    (source >= 0).view(-1, 1, 1, 1, 1),
                    select_slot(image, source.clamp(min=0)),
                    fallback.detach(),
                ),
                target,
            )
            assert torch.equal(view.detach(), expected)
            assert torch.equal(image, image_before) and torch.equal(target, target_before)
            assert view.requires_grad == track
            if track:
                fallback.grad = None
                view.sum().backward()
                assert torch.equal(fallback.grad[0], mask[0].float())
                assert not fallback.grad[1:].any()


@pytest.mark.parametrize("size, block", [((16, 24, 8), 4), ((16, 16, 16), (8, 4, 2))])
def test_block_weights_are_compact_and_fill_exactly_like_voxel_weights(size, block):
    """The weights of ``block_mask(return_weight=True)`` are the block grid expanded along z
    only (no voxel-size tensor is written), and every fill gives the same numbers and the same
    gradients with them as with the voxel mask."""
    g = torch.Generator().manual_seed(4)
    bsz, k = 3, 3
    mask, weight = block_mask(bsz, size, block, 0.6, g, return_weight=True)
    b = (block,) * 3 if isinstance(block, int) else block
    grid = [s // bb for s, bb in zip(size, b)]
    assert weight.shape == (bsz, 1, grid[0], b[0], grid[1], b[1], grid[2], b[2])
    assert weight.stride()[3] == weight.stride()[5] == 0  # expanded, not written
    assert weight.untyped_storage().nbytes() * b[0] * b[1] == mask.numel() * 4
    assert weight.dtype == torch.float32
    assert torch.equal(weight.reshape(mask.shape), mask.float())
    target = torch.rand(bsz, 1, *size, generator=g)
    crop = torch.rand(bsz, 1, *size, generator=g).requires_grad_(True)
    for m in (mask, mask.float(), weight):
        view = template_fill(target, crop, m)
        assert torch.equal(view.detach(), torch.where(mask, crop, target).detach())
        (grad,) = torch.autograd.grad((view * torch.arange(view.numel()).view_as(view)).sum(), crop)
        assert torch.equal(grad, torch.where(mask, torch.arange(mask.numel()).view_as(grad), 0.0))
        assert torch.equal(zero_fill(target, m), torch.where(mask, 0.0, target))
        noise = noise_fill(target, m, torch.Generator().manual_seed(7))
        assert torch.equal(noise, noise_fill(target, mask, torch.Generator().manual_seed(7)))
    image = torch.rand(bsz, k, *size, generator=g)
    present = torch.ones(bsz, k, dtype=torch.bool)
    slot = torch.tensor([0, 1, 2])
    ref, src, _ = cross_modal_fill(
        image, present, slot, mask, None, torch.Generator().manual_seed(1)
    )
    out, src_w, _ = cross_modal_fill(
        image, present, slot, weight, None, torch.Generator().manual_seed(1)
    )
    assert torch.equal(out, ref) and torch.equal(src_w, src)


def test_block_weights_fall_back_to_voxels_for_partial_blocks_and_refuse_other_sizes():
    g = torch.Generator().manual_seed(5)
    mask, weight = block_mask(2, (10, 8, 8), 4, 0.5, g, return_weight=True)
    assert weight.shape == mask.shape and torch.equal(weight, mask.float())
    _, compact = block_mask(2, (8, 8, 8), 4, 0.5, g, return_weight=True)
    for shape in ((2, 1, 8, 8, 12), (2, 1, 4, 4, 8)):  # z too long; x and y blocks of 2
        with pytest.raises(ValueError, match="block weights"):
            template_fill(torch.zeros(shape), torch.ones(shape), compact)


def test_block_mask_keeps_the_lowest_scores_of_one_draw_per_study():
    """The kept blocks are the ``n_kept`` lowest of one uniform draw per study and block (the
    set an argsort of the draw would keep): the masks do not depend on how they are selected."""
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        m = block_mask(4, (24, 24, 16), 4, 0.8, g)
        scores = torch.rand(4, 6 * 6 * 4, generator=torch.Generator().manual_seed(seed))
        keep = n_kept((24, 24, 16), 4, 0.8)
        expected = torch.ones_like(scores, dtype=torch.bool)
        expected.scatter_(1, scores.argsort(dim=1)[:, :keep], False)
        assert torch.equal(m[:, 0, ::4, ::4, ::4].reshape(4, -1), expected)


def test_modality_minmax_equals_whole_volume_reductions_in_values_and_gradients():
    """Per-study range of the whole volume of its modality (the ``global`` template scaling),
    computed once per distinct modality: the same numbers and gradients as reducing every
    volume along ``dim=1``; absent modalities are not needed, bad indices are refused."""
    g = torch.Generator().manual_seed(8)
    vols = torch.rand(5, 6, 7, 4, generator=g)
    vols[2, 0, 0, :2] = -3.0  # a tie at the minimum: the gradient is shared
    vols.requires_grad_(True)
    modality = torch.tensor([2, 0, 2, 4])
    lo, hi = modality_minmax(vols, modality)
    flat = vols.flatten(1)
    ref_lo, ref_hi = flat.amin(1)[modality], flat.amax(1)[modality]
    assert torch.equal(lo, ref_lo) and torch.equal(hi, ref_hi)
    w_lo, w_hi = torch.rand(4, generator=g), torch.rand(4, generator=g)
    (grad,) = torch.autograd.grad((lo * w_lo + hi * w_hi).sum(), vols)
    (ref,) = torch.autograd.grad((ref_lo * w_lo + ref_hi * w_hi).sum(), vols)
    assert torch.allclose(grad, ref) and grad[2, 0, 0, 0] == grad[2, 0, 0, 1] != 0
    assert not grad[[1, 3]].any()
    with pytest.raises(ValueError, match="modality_minmax"):
        modality_minmax(vols, torch.tensor([5]))


def test_tracked_fill_keeps_only_the_weights_for_backward_and_has_lerps_gradients():
    """Under autograd a fill saves its weights only (torch.lerp's graph would keep the target
    and the template crop alive until the backward pass); the gradients to both images are
    those of torch.lerp."""
    g = torch.Generator().manual_seed(9)
    mask, weight = block_mask(2, (8, 8, 8), 4, 0.5, g, return_weight=True)
    for m in (weight, mask.float()):
        target = torch.rand(2, 1, 8, 8, 8, generator=g).requires_grad_(True)
        crop = torch.rand(2, 1, 8, 8, 8, generator=g).requires_grad_(True)
        view = template_fill(target, crop, m)
        saved = view.grad_fn.saved_tensors
        assert (
            len(saved) == 1 and saved[0].untyped_storage().nbytes() == m.untyped_storage().nbytes()
        )
        up = torch.rand(view.shape, generator=g)
        got = torch.autograd.grad(view, (target, crop), up)
        ref = torch.lerp(target, crop, mask.float())
        assert torch.equal(view, ref)
        expected = torch.autograd.grad(ref, (target, crop), up)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
