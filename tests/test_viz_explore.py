"""Tests of mmlib.viz.explore: geometry of template space end to end, retrieval, figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmlib.data.store import Store, init_store, write_study
from mmlib.modalities import MODALITIES
from mmlib.models import build_backbone, preset
from mmlib.proxy.templates import Templates
from mmlib.viz import explore

SPACING = 4.0


def ramp(shape, affine, center):
    """A volume whose value is a linear function of head-centred mm: 0.5 + (x + 2y - z) / 1000."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    world = idx @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3] - np.asarray(center)
    return 0.5 + (world[..., 0] + 2 * world[..., 1] - world[..., 2]) / 1000.0


def study_row(study, mods, shape, affine, center):
    """A pre-training manifest row of the test stores."""
    return {
        "study": study,
        "source": "test",
        "modalities": mods,
        "shape": list(shape),
        "spacing": [SPACING] * 3,
        "affine": np.asarray(affine).tolist(),
        "center_world": list(center),
        "label": False,
        "attrs": {},
        "split": "train",
        "task": None,
        "role": "pretrain",
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = init_store(tmp_path_factory.mktemp("store") / "store", SPACING)
    for i, (offset, center, mods) in enumerate(
        [
            ((-80.0, -100.0, -70.0), (3.0, -5.0, 10.0), ["t1", "t2", "flair"]),
            ((-90.0, -110.0, -60.0), (-6.0, 8.0, 2.5), ["t1", "t2"]),
            ((-70.0, -95.0, -75.0), (1.0, 1.0, -4.0), ["t1"]),
        ]
    ):
        shape = (36 + 2 * i, 44, 34)
        affine = np.diag([SPACING] * 3 + [1.0])
        affine[:3, 3] = offset
        vol = ramp(shape, affine, center)
        images = {m: np.clip(vol + 0.01 * k, 0, 1) for k, m in enumerate(mods)}
        write_study(root, study_row(f"S{i}", mods, shape, affine, center), images)
    return Store(root)


def test_modality_mean_places_studies_in_head_centred_frame(store):
    t = Templates(spacing=SPACING, extent_mm=(120, 140, 120))
    mean, count = explore.modality_mean(store, "t1", t)
    assert mean.shape == t.shape and count.max() == 3
    expect = ramp(t.shape, t.affine, (0, 0, 0))
    inner = count == 3
    assert inner.sum() > 100
    assert np.abs(mean[inner] - expect[inner]).max() < 2e-3  # float16 storage
    assert explore.template_agreement(torch.from_numpy(expect), mean, count) > 0.999
    assert explore.template_agreement(torch.zeros(t.shape), mean, count) == 0.0


def test_sampler_crops_and_template_crops_agree(store):
    batch = explore.sample_batch(store, n=3, crop_size=16, k=3)
    assert batch["image"].shape == (3, 3, 16, 16, 16)
    assert explore.present_modalities(batch, 0)[0] in ("t1", "t2", "flair")
    t = Templates(spacing=SPACING, extent_mm=(160, 200, 160))
    t.volumes.data[:] = torch.from_numpy(ramp(t.shape, t.affine, (0, 0, 0))).float()
    for b in range(3):
        p = explore.preview(batch, b, "t1", 0.75, 4, templates=t, seed=b)
        sel = p["mask"] > 0
        # the template crop, min-max scaled, is an affine function of the target's ramp
        r = np.corrcoef(p["view_a"][sel], p["target"][sel])[0, 1]
        assert r > 0.999, (b, r)
        assert p["modality"] == "t1"
    single = explore.preview(batch, list(batch["study"]).index("S2"), "t1", 0.75, 4, t)
    assert single["source"] == "template"
    with pytest.raises(ValueError, match="not in the crop"):
        explore.preview(batch, 0, "dwi")


def test_retrieval_scores_and_view_embeddings(store):
    z = torch.nn.functional.normalize(torch.eye(4) + 0.1, dim=1)
    perfect = explore.retrieval(z, z)
    assert perfect["top1"] == 1.0 and perfect["gap"] > 0
    shuffled = explore.retrieval(z, z.roll(1, 0))
    assert shuffled["top1"] == 0.0 and shuffled["info_nce"] > perfect["info_nce"]
    batch = explore.sample_batch(store, n=3, crop_size=16, k=3)
    torch.manual_seed(0)
    net = build_backbone("unet", **preset("smoke", "unet"))
    za, zb = explore.view_embeddings(net, Templates(spacing=SPACING), batch, block_size=4)
    assert za.shape == zb.shape and za.shape[0] == 3
    assert torch.allclose(za.norm(dim=1), torch.ones(3), atol=1e-5)
    fig = explore.similarity_figure({"a": (za, zb)})
    assert len(fig.axes) >= 1


def test_figures_render(store, tmp_path):
    batch = explore.sample_batch(store, n=2, crop_size=16, k=3)
    t = Templates(spacing=SPACING, extent_mm=(160, 200, 160))
    p = explore.preview(batch, 0, None, 0.8, 4, t)
    explore.preview_figure(p).savefig(tmp_path / "p.png")
    mean, count = explore.modality_mean(store, "t2", t)
    explore.template_figure(t, {"t2": (mean, count)}).savefig(tmp_path / "t.png")
    explore.crop_boxes_figure(mean, t, batch).savefig(tmp_path / "c.png")
    box = explore.explorer(batch, t, 0, 0.8, 4)
    assert box.children and len(box.children[-1].value) > 1000  # the rendered PNG
    assert all((tmp_path / n).stat().st_size > 1000 for n in ("p.png", "t.png", "c.png"))
    assert p["modality"] in MODALITIES


def test_template_corr_in_the_head_leaves_out_neck_and_background(tmp_path):
    """The head fraction marks where most covering studies have head; ``template_corr`` there
    ignores the background of the boxes (where no crop trains a template), ``where='box'`` does
    not."""
    root = init_store(tmp_path / "store", SPACING)
    for i, center in enumerate([(3.0, -5.0, 10.0), (-6.0, 8.0, 2.5), (1.0, 1.0, -4.0)]):
        shape = (40, 48, 40)
        affine = np.diag([SPACING] * 3 + [1.0])
        affine[:3, 3] = np.asarray(center) - np.array(shape) * SPACING / 2
        vol = ramp(shape, affine, center)
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
        world = idx @ affine[:3, :3].T + affine[:3, 3] - np.asarray(center)
        vol = np.where(np.linalg.norm(world, axis=-1) < 50.0, vol, 0.0)  # a 50 mm "head"
        write_study(root, study_row(f"H{i}", ["t1"], shape, affine, center), {"t1": vol})
    st = Store(root)
    t = Templates(spacing=SPACING, extent_mm=(200, 240, 200))
    mean, count, head = explore.modality_mean(st, "t1", t, head=True)
    assert explore.modality_means(st, ["t1"], t)["t1"][2].shape == t.shape
    centre = tuple(n // 2 for n in t.shape)
    assert head[centre] == 1.0 and count[centre] == 3
    assert (head[count > 0] < explore.HEAD_MAJORITY).sum() > (head >= explore.HEAD_MAJORITY).sum()
    rng = np.random.default_rng(0)
    inside = head >= explore.HEAD_MAJORITY
    vol = np.where(inside, mean, rng.random(t.shape))  # anatomy in the head, noise elsewhere
    t.volumes.data[MODALITIES.index("t1")] = torch.from_numpy(vol).float()
    r_head = explore.template_corr(t, {"t1": (mean, count, head)})["t1"]
    r_box = explore.template_corr(t, {"t1": (mean, count, head)}, where="box")["t1"]
    assert r_head > 0.99 and r_box < 0.9, (r_head, r_box)
    assert explore.template_corr(t, {"t1": (mean, count)})["t1"] == pytest.approx(r_box)
    with pytest.raises(ValueError, match="where"):
        explore.template_corr(t, {"t1": (mean, count)}, where="brain")


@pytest.mark.parametrize("rule", ["global", "crop"])
def test_run_model_templates_carry_the_runs_scaling(store, tmp_path, rule):
    import json

    run = tmp_path / "run"
    run.mkdir()
    cfg = {
        "data": {"store": str(store.root)},
        "objective": {"name": "md_only", "template_scaling": rule},
        "train": {"seed": 0},
        "model": {"name": "unet", "size": preset("smoke", "unet")},
    }
    (run / "config.json").write_text(json.dumps(cfg))
    _, templates = explore.run_model(run, initial=True)
    assert templates.scaling == rule
