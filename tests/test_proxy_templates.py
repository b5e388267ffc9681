"""Tests of mmlib.proxy.templates: grid, batched gather, resampling, scaling, NIfTI, import."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from mmlib.proxy.templates import Templates, minmax_scale


def naive_crop(vol: torch.Tensor, start: tuple[int, int, int], size: tuple[int, int, int]):
    """Per-study slicing with zero padding: the reference for the batched gather."""
    out = torch.zeros(size)
    src = [slice(max(s, 0), min(s + n, d)) for s, n, d in zip(start, size, vol.shape)]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start)]
    if all(sl.stop > sl.start for sl in src):
        out[dst[0], dst[1], dst[2]] = vol[src[0], src[1], src[2]]
    return out


def test_grid_is_head_centred_with_true_affine():
    t = Templates(spacing=2.0, extent_mm=(192, 228, 192))
    assert t.shape == (96, 114, 96) and t.volumes.shape == (8, 96, 114, 96)
    assert float(t.volumes.detach().abs().sum()) == 0.0
    aff = t.affine
    centre = aff @ np.array([(96 - 1) / 2, (114 - 1) / 2, (96 - 1) / 2, 1.0])
    assert np.allclose(centre[:3], 0.0)
    assert np.allclose(np.diag(aff)[:3], 2.0)
    t2 = Templates(spacing=(1.0, 2.0, 3.0), shape=(10, 20, 30))
    assert t2.shape == (10, 20, 30) and np.allclose(np.diag(t2.affine)[:3], [1, 2, 3])
    with pytest.raises(ValueError, match="spacing"):
        Templates(spacing=0.0)


def test_batched_gather_equals_naive_per_study_crop():
    g = torch.Generator().manual_seed(0)
    t = Templates(spacing=2.0, shape=(20, 24, 18))
    t.volumes.data.copy_(torch.rand(t.volumes.shape, generator=g))
    starts = torch.tensor([[0, 0, 0], [5, 7, 3], [-4, 10, 12], [15, -3, -8], [30, 0, 0]])
    modality = torch.tensor([0, 3, 7, 2, 5])
    origin = t.origin + starts.float() * 2.0  # head-centred mm of crop voxel (0, 0, 0)
    size = (8, 10, 9)
    got = t.crop(modality, origin, size, spacing=torch.full((5, 3), 2.0), scale=False)
    assert got.shape == (5, 1, *size)
    for b in range(5):
        ref = naive_crop(t.volumes.data[modality[b]], tuple(starts[b].tolist()), size)
        assert torch.equal(got[b, 0], ref), b


def test_resampled_crop_matches_strided_slicing_and_linear_ramp():
    t = Templates(spacing=1.0, shape=(32, 32, 32))
    x, y, z = torch.meshgrid(*(torch.arange(32.0),) * 3, indexing="ij")
    t.volumes.data[:] = (x + 2 * y + 3 * z).unsqueeze(0)
    origin = t.origin + torch.tensor([[2.0, 4.0, 6.0], [1.5, 0.0, 3.25]])
    got = t.crop(
        torch.tensor([1, 4]), origin, (8, 8, 8), spacing=torch.full((2, 3), 2.0), scale=False
    )
    ref = t.volumes.data[1, 2:18:2, 4:20:2, 6:22:2]
    assert torch.allclose(got[0, 0], ref, atol=1e-4)
    # trilinear interpolation reproduces a linear function at fractional positions
    idx = [1.5 + 2 * torch.arange(8.0), 2 * torch.arange(8.0), 3.25 + 2 * torch.arange(8.0)]
    expect = idx[0].view(8, 1, 1) + 2 * idx[1].view(1, 8, 1) + 3 * idx[2].view(1, 1, 8)
    assert torch.allclose(got[1, 0], expect, atol=1e-3)


def test_minmax_scaling_and_zero_template_guard():
    t = Templates(spacing=4.0)
    crop = t.crop(torch.tensor([0, 1]), torch.zeros(2, 3), (8, 8, 8))
    assert torch.equal(crop, torch.zeros_like(crop)) and not torch.isnan(crop).any()
    # a zero template still receives a gradient (it can start learning)
    crop.sum().backward()
    assert t.volumes.grad.abs().sum() > 0
    x = torch.rand(3, 1, 4, 4, 4) * 5 + 2
    s = minmax_scale(x)
    assert torch.allclose(s.flatten(1).amin(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(s.flatten(1).amax(1), torch.ones(3), atol=1e-6)
    where = torch.zeros_like(x, dtype=torch.bool)
    where[:, :, :2] = True
    s2 = minmax_scale(x, where)
    assert torch.allclose(s2[where].view(3, -1).amax(1), torch.ones(3), atol=1e-6)


def test_to_nifti_writes_true_affine(tmp_path):
    t = Templates(spacing=3.0, shape=(6, 7, 8))
    t.volumes.data.copy_(torch.arange(t.volumes.numel()).float().view(t.volumes.shape))
    p = t.to_nifti(tmp_path / "t1.nii.gz", "T1w")
    img = nib.load(p)
    assert np.allclose(img.affine, t.affine)
    assert np.array_equal(np.asarray(img.dataobj), t.volumes.data[1].numpy())
    allp = t.to_nifti(tmp_path / "all.nii.gz")
    assert nib.load(allp).shape == (6, 7, 8, 8)


def test_from_released_imports_and_resamples():
    g = torch.Generator().manual_seed(0)
    rep = torch.rand(8, 24, 20, 16, generator=g)
    t = Templates.from_released(rep)
    assert t.shape == (24, 20, 16) and torch.equal(t.volumes.data, rep)
    assert np.allclose(t.affine[:3, 3], -(np.array([24, 20, 16]) - 1) / 2)
    x, y, z = torch.meshgrid(
        torch.arange(24.0), torch.arange(20.0), torch.arange(16.0), indexing="ij"
    )
    ramp = (x - 11.5) + 2 * (y - 9.5) - (z - 7.5)  # linear in head-centred mm
    t2 = Templates.from_released(ramp.expand(8, -1, -1, -1), spacing=2.0)
    assert t2.shape == (12, 10, 8)
    w = [
        torch.from_numpy(t2.affine[i, 3] + 2.0 * np.arange(n)).float()
        for i, n in enumerate(t2.shape)
    ]
    expect = w[0].view(-1, 1, 1) + 2 * w[1].view(1, -1, 1) - w[2].view(1, 1, -1)
    inner = (slice(0, -1),) * 3  # the last sample lies half a voxel beyond the source grid
    assert torch.allclose(t2.volumes.data[3][inner], expect[inner], atol=1e-3)
    with pytest.raises(ValueError, match="rep_template"):
        Templates.from_released(torch.zeros(4, 8, 8, 8))


def test_fast_window_gather_matches_general_gather_values_and_gradients():
    g = torch.Generator().manual_seed(3)
    vol = torch.rand(8, 20, 24, 18, generator=g)
    starts = torch.tensor([[0, 0, 0], [5, 7, 3], [4, 6, 2], [12, 14, 10]])  # all inside
    modality = torch.tensor([3, 3, 3, 7])  # overlapping windows of one template
    size = (8, 10, 8)
    grads = []
    for force_general in (False, True):
        t = Templates(spacing=2.0, shape=(20, 24, 18))
        t.volumes.data.copy_(vol)
        origin = t.origin + starts.float() * 2.0
        if force_general:  # a crop sticking out of the grid takes the general path
            origin = torch.cat([origin, t.origin.view(1, 3) - 40.0])
            mods = torch.cat([modality, torch.tensor([0])])
        else:
            mods = modality
        crop = t.crop(mods, origin, size, scale=False)[:4]
        for b in range(4):
            assert torch.equal(
                crop[b, 0], naive_crop(vol[modality[b]], tuple(starts[b].tolist()), size)
            )
        w = torch.rand(crop.shape, generator=torch.Generator().manual_seed(9))
        (crop * w).sum().backward()
        grads.append(t.volumes.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_block_statistics_equal_voxel_statistics():
    from mmlib.proxy.masking import block_mask

    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 1, 16, 24, 8, generator=g) * 3 - 1
    mask = block_mask(3, (16, 24, 8), 4, 0.7, g)
    fast = minmax_scale(x, mask, block=4)
    slow = minmax_scale(x, mask)
    assert torch.allclose(fast, slow, atol=1e-6)
    assert torch.allclose(fast[mask].view(3, -1).amin(1), torch.zeros(3), atol=1e-6)


def test_straight_through_scaling_has_exact_values_and_identity_gradient():
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(2, 1, 4, 4, 4, generator=g) * 1e-3).requires_grad_(True)
    w = torch.rand(2, 1, 4, 4, 4, generator=g)
    exact = minmax_scale(x)
    (exact * w).sum().backward()
    g_exact = x.grad.clone()
    x.grad = None
    st = minmax_scale(x, straight_through=True)
    (st * w).sum().backward()
    assert torch.allclose(st, exact, atol=1e-6)
    assert torch.allclose(x.grad, w)
    # the exact gradient is amplified by 1 / range (here ~1e3)
    assert g_exact.abs().max() > 100 * w.abs().max()
    # and the exact one is the gradient of the formula written out
    x2 = x.detach().clone().requires_grad_(True)
    lo = x2.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
    hi = x2.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
    (((x2 - lo) / (hi - lo)) * w).sum().backward()
    assert torch.allclose(g_exact, x2.grad, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("grad", ["none", "exact", "straight_through"])
def test_scaled_crop_equals_scaling_the_plain_gather(grad):
    """Templates.crop with block statistics (reduced in place where autograd records nothing):
    the values and the template gradient of min-max scaling the plain gather, in every mode."""
    from mmlib.proxy.masking import block_mask

    g = torch.Generator().manual_seed(6)
    t = Templates(spacing=2.0, shape=(20, 24, 18))
    t.volumes.data.uniform_(0, 1, generator=g)
    t.volumes.requires_grad_(grad != "none")
    starts = torch.tensor([[0, 0, 0], [5, 7, 3], [12, 14, 10]])
    modality = torch.tensor([3, 1, 3])
    size = (8, 8, 8)
    mask = block_mask(3, size, 4, 0.6, g)
    w = torch.rand(3, 1, *size, generator=g)
    origin = t.origin + starts.float() * 2.0
    got = t.crop(
        modality,
        origin,
        size,
        scale=True,
        scale_where=mask,
        scale_block=4,
        straight_through=grad == "straight_through",
        scaling="crop",
    )
    raw = t.crop(modality, origin, size, scale=False)
    want = minmax_scale(raw, mask, straight_through=grad == "straight_through")
    assert torch.allclose(got, want, atol=1e-6)
    fast = minmax_scale(raw.detach().clone(), mask, block=4)
    assert torch.equal(got.detach(), fast)  # the same kernels as scaling the gather
    if grad == "none":
        return
    (got * w).sum().backward()
    g_in_place = t.volumes.grad.clone()
    t.volumes.grad = None
    (want * w).sum().backward()
    assert torch.allclose(g_in_place, t.volumes.grad, rtol=1e-5, atol=1e-5)


def test_block_statistics_leave_the_input_unchanged():
    from mmlib.proxy.templates import block_minmax

    x = torch.rand(2, 1, 12, 12, 12, generator=torch.Generator().manual_seed(8))
    before = x.clone()
    for block in (1, 2, 3, 4, 6):
        lo, hi = block_minmax(x, block)
        n = 12 // block
        v = x.view(2, n, block, n, block, n, block)
        assert torch.equal(lo, v.amin(dim=(2, 4, 6))) and torch.equal(hi, v.amax(dim=(2, 4, 6)))
    assert torch.equal(x, before)


@pytest.mark.parametrize("grad", ["exact", "straight_through"])
def test_global_scaling_is_whole_template_minmax_then_crop(grad):
    """``global`` (the official rule): min-max the whole template of the modality, then crop;
    ``exact`` is the autograd of exactly that (the range's extreme voxels get a gradient)."""
    from mmlib.proxy.masking import block_mask

    g = torch.Generator().manual_seed(11)
    t = Templates(spacing=2.0, shape=(20, 24, 18))
    assert t.scaling == "global"
    t.volumes.data.uniform_(-3, 5, generator=g)
    starts = torch.tensor([[0, 0, 0], [5, 7, 3], [12, 14, 10]])
    modality = torch.tensor([3, 1, 3])
    size = (8, 8, 8)
    mask = block_mask(3, size, 4, 0.6, g)
    w = torch.rand(3, 1, *size, generator=g)
    origin = t.origin + starts.float() * 2.0
    got = t.crop(
        modality,
        origin,
        size,
        scale_where=mask,
        scale_block=4,
        straight_through=grad == "straight_through",
    )
    # the official rule written out: scale the whole volume, then cut the window
    vols = t.volumes
    want = []
    for b in range(3):
        v = vols[modality[b]]
        v = (v - v.min()) / (v.max() - v.min())
        x, y, z = starts[b].tolist()
        want.append(v[x : x + 8, y : y + 8, z : z + 8])
    want_t = torch.stack(want).unsqueeze(1)
    assert torch.allclose(got, want_t, atol=1e-6)
    # not per crop: a crop's fill does not span [0, 1] over its masked voxels
    assert (
        float(got.detach()[1][mask[1]].max()) < 0.999
        or float(got.detach()[1][mask[1]].min()) > 0.001
    )
    (got * w).sum().backward()
    g_got = t.volumes.grad.clone()
    t.volumes.grad = None
    if grad == "exact":
        (want_t * w).sum().backward()
        assert torch.allclose(g_got, t.volumes.grad, rtol=1e-4, atol=1e-5)
        lo = int(t.volumes.detach()[3].argmin())
        assert float(g_got[3].flatten()[lo]) != 0.0  # the minimum voxel feels the range
    else:  # identity: the crop's gradient lands in each window, nowhere else
        expect = torch.zeros_like(g_got)
        for b in range(3):
            x, y, z = starts[b].tolist()
            expect[modality[b], x : x + 8, y : y + 8, z : z + 8] += w[b, 0]
        assert torch.allclose(g_got, expect, atol=1e-6)


def test_crop_scaling_spans_each_crop():
    t = Templates(spacing=2.0, shape=(20, 24, 18), scaling="crop")
    t.volumes.data.uniform_(-3, 5, generator=torch.Generator().manual_seed(2))
    origin = t.origin + torch.tensor([[5.0, 7.0, 3.0]]) * 2.0
    c = t.crop(torch.tensor([2]), origin, (8, 8, 8)).detach()
    assert float(c.min()) == pytest.approx(0, abs=1e-5) and float(c.max()) == pytest.approx(
        1, abs=1e-5
    )
    g = t.crop(torch.tensor([2]), origin, (8, 8, 8), scaling="global").detach()
    assert not torch.allclose(c, g)
    with pytest.raises(ValueError, match="unknown template scaling"):
        Templates(spacing=2.0, shape=(4, 4, 4), scaling="per_crop")


def test_zero_templates_scale_to_zeros_under_both_rules():
    t = Templates(spacing=2.0, shape=(10, 10, 10))
    origin = t.origin.view(1, 3)
    for scaling in ("global", "crop"):
        c = t.crop(torch.tensor([0]), origin, (4, 4, 4), scaling=scaling)
        assert torch.equal(c.detach(), torch.zeros(1, 1, 4, 4, 4))
        c.sum().backward()  # identity gradient at the zero start: templates can begin to learn
        assert float(t.volumes.grad.abs().sum()) == 64.0
        t.volumes.grad = None


def test_scaling_of_checkpoint_meta():
    from mmlib.proxy.templates import scaling_of

    assert scaling_of({"objective": {"name": "brainmvp", "template_scaling": "crop"}}) == "crop"
    assert scaling_of({"objective": {"name": "brainmvp"}}) == "crop"  # an mmlib run before the key
    assert scaling_of({"model": {}}) == "global"  # imported released weights: the official rule
    with pytest.raises(ValueError, match="unknown template scaling"):
        scaling_of({"objective": {"template_scaling": "x"}})


def test_viewers_show_whole_template_scaling():
    from mmlib.viz.layers import template_layers

    t = Templates(spacing=2.0, shape=(6, 6, 6))
    t.volumes.data.uniform_(-2, 7, generator=torch.Generator().manual_seed(3))
    sc = t.scaled()
    assert torch.allclose(sc[4].amin(), torch.tensor(0.0)) and torch.allclose(
        sc[4].amax(), torch.tensor(1.0)
    )
    layer = template_layers(t, modalities=["t2"])[0]
    assert np.allclose(layer[0], sc[3].numpy(), atol=1e-6)


@pytest.mark.parametrize("scaling", ["global", "crop"])
@pytest.mark.parametrize("grad", ["straight_through", "exact"])
def test_fill_equals_template_fill_of_the_crop(scaling, grad):
    """``Templates.fill`` (one pass per study for ``global`` + straight-through, the
    pre-training default) gives the values and gradients of ``template_fill(target,
    crop(...), weight)`` for block weights, voxel weights and bool masks, to float rounding;
    windows reaching outside the grid and resampled crops take the composed path."""
    from mmlib.proxy.masking import block_mask, template_fill

    g = torch.Generator().manual_seed(12)
    t = Templates(spacing=2.0, shape=(20, 24, 18), scaling=scaling)
    t.volumes.data.uniform_(-3, 5, generator=g)
    size = (8, 8, 8)
    mask, weight = block_mask(3, size, 4, 0.6, g, return_weight=True)
    modality = torch.tensor([3, 1, 3])
    straight = grad == "straight_through"
    cases = {
        "inside": t.origin + torch.tensor([[0, 0, 0], [5, 7, 3], [12, 16, 10]]).float() * 2.0,
        "outside": t.origin + torch.tensor([[-2, 0, 0], [5, 7, 3], [14, 18, 12]]).float() * 2.0,
    }
    for name, origin in cases.items():
        for m in (weight, weight.reshape(mask.shape).clone(), mask):
            target = torch.rand(3, 1, *size, generator=g).requires_grad_(True)
            w = torch.rand(3, 1, *size, generator=g)
            kw = dict(scale_where=mask, scale_block=4, straight_through=straight)
            got = t.fill(target, m, modality, origin, **kw)
            (got * w).sum().backward()
            g_vol, g_tgt = t.volumes.grad.clone(), target.grad.clone()
            t.volumes.grad, target.grad = None, None
            crop = t.crop(modality, origin, size, **kw)
            want = template_fill(target, crop, m)
            (want * w).sum().backward()
            assert torch.allclose(got, want, atol=1e-6), (name, scaling, grad)
            assert torch.allclose(g_vol, t.volumes.grad, rtol=1e-5, atol=1e-6), name
            assert torch.allclose(g_tgt, target.grad), name
            t.volumes.grad = None
            with torch.no_grad():
                assert torch.allclose(t.fill(target, m, modality, origin, **kw), want, atol=1e-6)
    # a resampled crop (another spacing) is the composition too
    origin = cases["inside"]
    sp = torch.full((3, 3), 3.0)
    target = torch.rand(3, 1, *size, generator=g)
    got = t.fill(target, weight, modality, origin, spacing=sp, straight_through=straight)
    want = template_fill(target, t.crop(modality, origin, size, spacing=sp), weight)
    assert torch.allclose(got, want, atol=1e-6)


def test_fill_writes_no_input():
    from mmlib.proxy.masking import block_mask

    g = torch.Generator().manual_seed(13)
    t = Templates(spacing=2.0, shape=(20, 24, 18))
    t.volumes.data.uniform_(-3, 5, generator=g)
    before = t.volumes.detach().clone()
    _, weight = block_mask(2, (8, 8, 8), 4, 0.6, g, return_weight=True)
    target = torch.rand(2, 1, 8, 8, 8, generator=g)
    target_before = target.clone()
    origin = t.origin + torch.tensor([[1, 2, 3], [4, 5, 6]]).float() * 2.0
    out = t.fill(target, weight, torch.tensor([0, 5]), origin, straight_through=True)
    assert out.data_ptr() not in (target.data_ptr(), t.volumes.data_ptr())
    assert torch.equal(target, target_before) and torch.equal(t.volumes.detach(), before)
