"""Tests of mmlib.proxy.brainmvp: the composed objective, its presets and its gradients."""

from __future__ import annotations

import json

import pytest
import torch

from mmlib.models import build_backbone, preset
from mmlib.proxy.brainmvp import OBJECTIVES, BrainMVPObjective, ObjectiveConfig, get_objective
from mmlib.proxy.templates import Templates

SIZE = (16, 16, 16)


def make_batch(bsz: int = 3, k: int = 3, seed: int = 0) -> dict:
    """A sampler-shaped batch: K slots, the last study with a single modality."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(bsz, k, *SIZE, generator=g)
    present = torch.ones(bsz, k, dtype=torch.bool)
    present[-1, 1:] = False
    image = image * present.view(bsz, k, 1, 1, 1)
    modality = torch.tensor([[0, 1, 3], [2, 1, 5], [6, -1, -1]])[:bsz, :k]
    return {
        "image": image,
        "present": present,
        "modality": modality,
        "template_origin": torch.tensor(
            [[-8.0, -8.0, -8.0], [-16.0, 0.0, 4.0], [0.0, -4.0, -12.0]]
        )[:bsz],
        "spacing": torch.full((bsz, 3), 2.0),
        "study": [f"s{i}" for i in range(bsz)],
    }


def make_objective(config, seed: int = 0) -> BrainMVPObjective:
    torch.manual_seed(seed)
    net = build_backbone("unet", **preset("smoke", "unet"))
    return BrainMVPObjective(net, Templates(spacing=2.0, extent_mm=(48, 48, 48)), config)


def test_brainmvp_returns_terms_and_views_and_trains_templates():
    obj = make_objective(dict(preset="brainmvp", warmup_epochs=1, cl_start_epoch=2))
    batch = make_batch()
    out = obj(batch, epoch=5, generator=torch.Generator().manual_seed(1))
    for key in ("loss", "md", "cmr", "cl"):
        assert out[key].dim() == 0 and torch.isfinite(out[key])
    for key in ("target", "mask", "view_a", "view_b", "recon_a", "recon_b"):
        assert out[key].shape == (3, 1, *SIZE), key
    assert out["cl_active"] and not out["warmup"] and out["cl"] > 0
    cfg = obj.config
    assert out["loss"].item() == pytest.approx(
        (cfg.w_md * out["md"] + cfg.w_cmr * out["cmr"] + cfg.w_cl * out["cl"]).item(), rel=1e-6
    )
    slot = out["target_slot"]
    assert batch["present"][torch.arange(3), slot].all()
    assert torch.equal(out["target_modality"], batch["modality"][torch.arange(3), slot])
    assert torch.equal(out["target"][:, 0], batch["image"][torch.arange(3), slot])
    # the single-modality study falls back to the template and is reported
    assert out["fell_back"].tolist() == [False, False, True]
    assert (out["source_slot"][:2] != slot[:2]).all() and out["source_slot"][2] == -1
    out["loss"].backward()
    assert obj.templates.volumes.grad.abs().sum() > 0
    assert all(p.grad is not None for p in obj.backbone.parameters() if p.requires_grad)


def test_template_gradient_only_through_masked_voxels_of_view_a():
    obj = make_objective("md_only")
    batch = make_batch()
    obj.templates.volumes.data.normal_()
    out = obj(batch, epoch=0, generator=torch.Generator().manual_seed(2))
    assert out["view_b"] is None and out["cmr"] == 0
    out["loss"].backward()
    grad = obj.templates.volumes.grad
    # template voxels each study's *masked* crop voxels map to (crop spacing = template spacing)
    allowed = torch.zeros_like(grad, dtype=torch.bool)
    start = torch.round((batch["template_origin"] - obj.templates.origin) / 2.0).long()
    for b in range(3):
        m = int(out["target_modality"][b])
        for ijk in out["mask"][b, 0].nonzero():
            t = start[b] + ijk
            if ((t >= 0) & (t < torch.tensor(obj.templates.shape))).all():
                allowed[m, t[0], t[1], t[2]] = True
    assert grad[allowed].abs().sum() > 0
    assert grad[~allowed].abs().max() == 0
    # and unmasked voxels of view A are the target itself
    keep = ~out["mask"]
    assert torch.equal(out["view_a"][keep], out["target"][keep])


def test_warmup_fills_view_b_from_template_and_cl_waits():
    obj = make_objective(dict(warmup_epochs=3, cl_start_epoch=5))
    out = obj(make_batch(), epoch=1, generator=torch.Generator().manual_seed(0))
    assert out["warmup"] and not out["cl_active"] and out["cl"] == 0
    assert (out["source_slot"] == -1).all()
    # with a zero template, the masked voxels of view B are zero during warm-up
    assert (out["view_b"][out["mask_b"]] == 0).all()


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_preset_runs_and_switches_terms(name):
    obj = make_objective(dict(preset=name, warmup_epochs=0, cl_start_epoch=0))
    out = obj(make_batch(), epoch=0, generator=torch.Generator().manual_seed(0))
    cfg = obj.config
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    assert (out["md"] > 0) == (cfg.w_md > 0)
    assert (out["cmr"] > 0) == (cfg.w_cmr > 0 and cfg.mode == "brainmvp")
    assert (out["cl"] > 0) == (cfg.w_cl > 0 and cfg.mode == "brainmvp")
    if cfg.mode == "mim":
        masked = out["view_a"][out["mask"]]
        assert (masked == 0).all() if cfg.fill == "zero" else masked.std() > 0.2


def test_masked_only_loss_and_generator_reproducibility():
    obj = make_objective(dict(preset="brainmvp_nocl", loss_region="masked"))
    a = obj(make_batch(), epoch=400, generator=torch.Generator().manual_seed(7))
    b = obj(make_batch(), epoch=400, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a["mask"], b["mask"]) and a["loss"].item() == b["loss"].item()
    m = a["mask"].float()
    ref = ((a["recon_a"] - a["target"]) ** 2 * m).sum() / m.sum()
    assert a["md"].item() == pytest.approx(ref.item(), rel=1e-5)


def test_config_round_trip_and_errors():
    cfg = ObjectiveConfig.from_dict({"preset": "cmr_only", "mask_rate": 0.875})
    assert cfg.w_md == 0 and cfg.mask_rate == 0.875
    d = json.loads(json.dumps(cfg.asdict()))
    assert ObjectiveConfig.from_dict(d) == cfg
    assert get_objective("brainmvp") == ObjectiveConfig()
    assert (ObjectiveConfig().w_md, OBJECTIVES["brainmvp_paper_weights"].w_md) == (10.0, 1.0)
    with pytest.raises(ValueError, match="unknown keys"):
        ObjectiveConfig.from_dict({"mask_ratio": 0.8})
    with pytest.raises(ValueError, match="unknown objective"):
        ObjectiveConfig.from_dict({"preset": "simclr"})
    with pytest.raises(ValueError, match="mask_rate"):
        ObjectiveConfig(mask_rate=2.0)
    with pytest.raises(ValueError, match="template_grad"):
        ObjectiveConfig(template_grad="sign")
    with pytest.raises(ValueError, match="needs templates"):
        BrainMVPObjective(torch.nn.Identity(), None, "brainmvp")


@pytest.mark.parametrize("mode", ["straight_through", "exact"])
def test_template_gradient_modes_same_loss(mode):
    obj = make_objective(dict(preset="md_only", template_grad=mode))
    obj.templates.volumes.data.uniform_(0, 1e-3)  # a template near its zero start
    out = obj(make_batch(), epoch=0, generator=torch.Generator().manual_seed(4))
    out["loss"].backward()
    t_norm = obj.templates.volumes.grad.norm()
    b_norm = torch.stack(
        [p.grad.norm() for p in obj.backbone.parameters() if p.grad is not None]
    ).norm()
    if mode == "exact":  # amplified by 1 / range: it would own a global clip
        assert t_norm > 3 * b_norm
    else:
        assert t_norm < b_norm
    ref = make_objective(dict(preset="md_only", template_grad="exact"))
    ref.templates.volumes.data.copy_(obj.templates.volumes.data)
    again = ref(make_batch(), epoch=0, generator=torch.Generator().manual_seed(4))
    assert again["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)


def test_view_b_warmup_ends_after_epoch_300_as_the_official_code():
    """Official ``flag = cur_epoch <= 300`` (0-based epochs): epochs 0..300 are warm-up."""
    cfg = ObjectiveConfig()
    assert cfg.warmup_epochs == 301
    obj = make_objective(dict(preset="brainmvp_nocl"))
    g = torch.Generator
    assert obj(make_batch(), epoch=300, generator=g().manual_seed(0))["warmup"]
    assert not obj(make_batch(), epoch=301, generator=g().manual_seed(0))["warmup"]
    none = make_objective("cmr_only")  # 0: no warm-up at all
    assert not none(make_batch(), epoch=0, generator=g().manual_seed(0))["warmup"]
    with pytest.raises(ValueError, match="warmup_epochs"):
        ObjectiveConfig(warmup_epochs=-1)


@pytest.mark.parametrize("scaling", ["global", "crop"])
def test_view_a_fills_with_the_configured_template_scaling(scaling):
    from mmlib.proxy.templates import scale_template_crop

    obj = make_objective(dict(preset="md_only", template_scaling=scaling))
    assert get_objective("brainmvp").template_scaling == "global"  # the official rule
    vol = obj.templates.volumes.data  # a ramp along x (+ noise): a crop sees part of its range
    vol.uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(5))
    vol += torch.arange(1, vol.shape[1] + 1, dtype=torch.float32).view(1, -1, 1, 1)
    batch = make_batch()
    out = obj(batch, epoch=0, generator=torch.Generator().manual_seed(3))
    raw = obj.templates.crop(
        out["target_modality"], batch["template_origin"], SIZE, batch["spacing"], scale=False
    ).detach()
    mask = out["mask"]
    want = scale_template_crop(
        obj.templates.volumes.detach(),
        out["target_modality"],
        raw,
        scaling,
        where=mask,
        inside=raw != 0,  # the voxels inside the grid (no template value is 0)
    )
    assert torch.allclose(out["view_a"][mask], want[mask], atol=1e-5)
    va = out["view_a"].detach()
    spans = [float(va[b][mask[b]].max() - va[b][mask[b]].min()) for b in range(3)]
    if scaling == "crop":
        assert all(s == pytest.approx(1.0, abs=1e-4) for s in spans)
    else:  # a crop holds part of the template's range only
        assert min(spans) < 0.99
    with pytest.raises(ValueError, match="template_scaling"):
        ObjectiveConfig(template_scaling="per_crop")


def test_direct_template_fit_reaches_the_templates_only():
    """``w_template``: MSE of every present modality's scaled template crop against its image,
    added to the loss; the backbone's gradient is that of the objective without it."""
    grads = {}
    batch = make_batch()
    for w in (0.0, 5.0):
        obj = make_objective(dict(preset="md_only", w_template=w))
        obj.templates.volumes.data.uniform_(0, 1, generator=torch.Generator().manual_seed(1))
        out = obj(batch, epoch=0, generator=torch.Generator().manual_seed(6))
        if w:
            b, k = torch.nonzero(batch["present"], as_tuple=True)
            crops = obj.templates.crop(
                batch["modality"][b, k], batch["template_origin"][b], SIZE, batch["spacing"][b]
            ).detach()
            want = ((crops[:, 0] - batch["image"][b, k]) ** 2).mean()
            assert len(b) == 7 and out["fit"].item() == pytest.approx(want.item(), rel=1e-5)
        else:
            assert out["fit"] == 0
        assert out["loss"].item() == pytest.approx(
            (obj.config.w_md * out["md"] + w * out["fit"]).item(), rel=1e-6
        )
        out["loss"].backward()
        grads[w] = (
            [p.grad.clone() for p in obj.backbone.parameters() if p.grad is not None],
            obj.templates.volumes.grad.clone(),
        )
    assert all(torch.allclose(a, b) for a, b in zip(grads[0.0][0], grads[5.0][0]))
    # every present modality's template learns, not only the targets'
    tg = grads[5.0][1].flatten(1).abs().sum(dim=1)
    assert all(tg[m] > 0 for m in (0, 1, 2, 3, 5, 6)) and tg[4] == 0 and tg[7] == 0
    assert ObjectiveConfig().w_template == 0.0  # off by default: the paper's objective
    with pytest.raises(ValueError, match="w_template"):
        ObjectiveConfig(w_template=-1.0)
