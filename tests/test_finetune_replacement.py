"""Template-replacement fine-tuning: two copies, the consistency term, every backbone, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from downstream_fixtures import smoke_checkpoint, tiny_store
from safetensors.torch import load_file

from mmlib.data.labelled import apply_flips
from mmlib.engine.config import load_config
from mmlib.engine.distributed import DistInfo
from mmlib.engine.finetune import FinetuneTrainer, finetune, launch
from mmlib.engine.losses import consistency_loss
from mmlib.models import BACKBONE_PRESETS, build_backbone
from mmlib.models.classification import ClassifierNet
from mmlib.models.segmentation import SegmentationNet, default_decoder
from mmlib.proxy.replacement import replacement_mask, two_copies
from mmlib.proxy.templates import Templates

torch.set_num_threads(1)
MODS = ["flair", "t1", "t1c", "t2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pre-training checkpoint with random (non-zero) templates."""
    return smoke_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=7, step=3)


def templates() -> Templates:
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -58.0
    return Templates.from_volumes(torch.rand(8, 30, 30, 30, generator=_gen(1)), affine)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_replacement_mask_counts() -> None:
    assert not replacement_mask((5, 4), 0, _gen(0)).any()
    masks = replacement_mask((4000, 4), 3, _gen(0))
    counts = masks.sum(1)
    # n ~ uniform{0..3}, at least one real modality kept
    assert set(counts.tolist()) == {0, 1, 2, 3}
    freq = torch.bincount(counts, minlength=4).float() / len(counts)
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.03)
    # every channel equally likely
    assert torch.allclose(masks.float().mean(0), torch.full((4,), 1.5 / 4), atol=0.03)
    # capped at C - 1
    assert replacement_mask((500, 4), 9, _gen(1)).sum(1).max() == 3
    with pytest.raises(ValueError, match="template_replacement"):
        replacement_mask((2, 4), -1)


@pytest.mark.parametrize("fill", ["template", "zero"])
def test_two_copies_differ_exactly_in_the_replaced_modalities(fill: str) -> None:
    b = 6
    image = 0.5 + 0.1 * torch.rand(b, 4, 8, 8, 8, generator=_gen(2))
    present = torch.ones(b, 4, dtype=torch.bool)
    present[0, 2] = False  # an absent channel: filled in both copies, never "replaced"
    origin = torch.full((b, 3), -16.0)
    copies, replaced = two_copies(
        image, present, MODS, 3, fill, templates(), origin, torch.full((3,), 4.0), _gen(3)
    )
    assert copies.shape == (2 * b, 4, 8, 8, 8) and replaced.shape == (2 * b, 4)
    ra, rb = replaced[:b], replaced[b:]
    assert ra.any() and rb.any() and not torch.equal(ra, rb)
    assert not replaced[[0, b], 2].any()
    a, c = copies[:b], copies[b:]
    for i in range(b):
        for ch in range(4):
            same_as_input_a = torch.equal(a[i, ch], image[i, ch])
            same_as_input_b = torch.equal(c[i, ch], image[i, ch])
            real = bool(present[i, ch])
            assert same_as_input_a == (real and not bool(ra[i, ch]))
            assert same_as_input_b == (real and not bool(rb[i, ch]))
            # the two copies differ exactly where one is replaced and the other is not
            differs = not torch.equal(a[i, ch], c[i, ch])
            assert differs == (real and bool(ra[i, ch]) != bool(rb[i, ch]))
    if fill == "zero":
        assert float(a[ra].abs().max()) == 0.0
    # nothing to replace: both copies are the study
    same, none = two_copies(
        image, torch.ones(b, 4, dtype=torch.bool), MODS, 0, "zero", None, None, None
    )
    assert not none.any() and torch.equal(same[:b], image) and torch.equal(same[b:], image)


def test_consistency_loss() -> None:
    f = torch.rand(6, 5, 2, 2, 2, generator=_gen(4))
    assert consistency_loss(f) == pytest.approx(float(((f[:3] - f[3:]) ** 2).mean()))
    assert float(consistency_loss(torch.cat([f[:3], f[:3]]))) == 0.0
    with pytest.raises(ValueError, match="two copies"):
        consistency_loss(f[:5])


@pytest.mark.parametrize("name", ["unet", "uniformer", "swinunetr"])
def test_every_backbone_returns_its_deepest_feature(name: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name, in_channels=4, **BACKBONE_PRESETS["smoke"][name])
    x = torch.rand(2, 4, 32, 32, 32)
    seg = SegmentationNet(bb, 4, 3, default_decoder(name), seed=0).eval()
    with torch.no_grad():
        logits, deep = seg(x, return_features=True)
        assert torch.equal(logits, seg(x))
        assert deep.shape[:2] == (2, bb.feature_channels[-1])
        assert torch.equal(deep, seg._features(x)[-1])
    cls = ClassifierNet(bb, 2, seed=0).eval()
    with torch.no_grad():
        out, deep_c = cls(x, return_features=True)
        assert torch.equal(out, cls(x)) and deep_c.shape[:2] == (2, bb.feature_channels[-1])


def _over(store: Path, tmp: Path, **train: object) -> dict[str, object]:
    return {
        "data.store": str(store),
        "run.root": str(tmp),
        "train.steps": 2,
        "device": "cpu",
        **{f"train.{k}": v for k, v in train.items()},
    }


def test_config_keys() -> None:
    cfg = load_config("smoke", None, kind="finetune")
    assert cfg["train"]["template_replacement"] == 0
    assert cfg["train"]["consistency_weight"] == 0.1  # the authors' script
    assert load_config("paper", None, kind="finetune")["train"]["template_replacement"] == 3
    for bad in ("train.template_replacement=-1", "train.template_replacement=1.5"):
        with pytest.raises(ValueError, match="template_replacement"):
            load_config("smoke", [bad], kind="finetune")
    with pytest.raises(ValueError, match="consistency_weight"):
        load_config("smoke", ["train.consistency_weight=-0.1"], kind="finetune")


@pytest.mark.parametrize(
    ("name", "init"),
    [("unet", "ckpt"), ("unet", "scratch"), ("uniformer", "scratch"), ("swinunetr", "scratch")],
)
def test_step_adds_the_weighted_consistency_term(
    store: Path, checkpoint: Path, tmp_path: Path, name: str, init: str
) -> None:
    over = {
        **_over(store, tmp_path, template_replacement=3, consistency_weight=0.5),
        "model.name": name,
        "init": str(checkpoint) if init == "ckpt" else "scratch",
        "data.crop_size": 32,
    }
    cfg = load_config("smoke", over, kind="finetune")
    ckpt = checkpoint if init == "ckpt" else None
    trainer = FinetuneTrainer(cfg, init, ckpt, progress=False)
    assert trainer.fill == ("template" if init == "ckpt" else "zero")
    batch = next(iter(trainer.loader))
    # what the step will see: the same draws of the replacement generator, the net before it
    gen = torch.Generator()
    gen.set_state(trainer.replace_gen.get_state())
    copies, replaced = two_copies(
        batch["image"],
        batch["present"],
        trainer.spec.modalities,
        3,
        trainer.fill,
        trainer.templates,
        batch["template_origin"],
        batch["spacing"],
        gen,
    )
    assert replaced.any()
    flips = torch.cat([batch["flip"], batch["flip"]])
    torch.manual_seed(11)
    with torch.no_grad():
        _, deep = trainer.net(apply_flips(copies, flips), return_features=True)
    expected = float(consistency_loss(deep))
    torch.manual_seed(11)
    terms = trainer.step(batch)
    assert expected > 0
    assert terms["consistency"] == pytest.approx(expected, rel=1e-4)
    assert terms["loss"] == pytest.approx(terms["supervised"] + 0.5 * expected, rel=1e-5)


def test_zero_replacement_is_todays_training(store: Path, tmp_path: Path) -> None:
    """With template_replacement=0 no copies are made: the consistency weight changes nothing
    and the network sees B studies per step; with replacement the weight changes the weights."""
    runs = {}
    for rep, w in [(0, 0.1), (0, 5.0), (2, 0.0), (2, 5.0)]:
        runs[(rep, w)] = finetune(
            "smoke",
            _over(store, tmp_path, template_replacement=rep, consistency_weight=w),
            progress=False,
        )
    weights = {k: load_file(str(r / "model.safetensors")) for k, r in runs.items()}
    same = weights[(0, 0.1)]
    assert all(torch.equal(same[k], weights[(0, 5.0)][k]) for k in same)
    assert any(not torch.equal(weights[(2, 0.0)][k], weights[(2, 5.0)][k]) for k in same)
    assert any(not torch.equal(same[k], weights[(2, 0.0)][k]) for k in same)
    res = json.loads((runs[(0, 0.1)] / "results.json").read_text())
    assert res["template_replacement"] == 0 and res["final_consistency"] is None
    on = json.loads((runs[(2, 5.0)] / "results.json").read_text())
    assert on["template_replacement"] == 2 and on["final_consistency"] > 0


@pytest.mark.slow  # two spawned processes: ~60 s on a busy 2-core machine
def test_ddp_two_ranks_with_replacement(store: Path, checkpoint: Path, tmp_path: Path) -> None:
    over = {
        **_over(store, tmp_path, template_replacement=3, consistency_weight=0.1),
        "init": str(checkpoint),
        "train.batch_size": 1,
    }
    run = launch(2, "smoke", over, run_dir=tmp_path / "ddp", timeout=300)
    res = json.loads((run / "results.json").read_text())
    assert res["world_size"] == 2 and res["global_batch"] == 2
    digests = res["weights_digest_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert res["final_consistency"] > 0 and res["fill"] == "template"
    assert (run / "TRAINED").is_file()
    # each rank takes its slice of every global batch: ranks 0 and 1 at batch 1 see what one
    # process sees at batch 2
    cfg1 = load_config("smoke", over, kind="finetune")
    cfg2 = load_config("smoke", {**over, "train.batch_size": 2}, kind="finetune")
    one = next(iter(FinetuneTrainer(cfg2, "ckpt", checkpoint, progress=False).loader))
    for r in (0, 1):
        info = DistInfo(r, 2, r, torch.device("cpu"), "none")  # the slicing, no process group
        mine = next(iter(FinetuneTrainer(cfg1, "ckpt", checkpoint, False, info).loader))
        assert mine["study"] == one["study"][r : r + 1]
        assert torch.equal(mine["image"][0], one["image"][r])


def test_replacement_robustness_pairs_by_seed(
    store: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from mmlib.evaluate.robustness import (
        replacement_pairs,
        replacement_robustness,
        subset_robustness,
    )

    over = {
        "data.store": str(store),
        "run.root": str(tmp_path),
        "train.steps": 2,
        "eval.hd95": False,
        "task": "brats_ped",
    }
    table = replacement_robustness(
        "smoke", str(checkpoint), 1.0, [0, 1], 2, over, max_test=1, progress=False
    )
    assert len(table) == 15 * 2 * 2 and set(table["fill"]) == {"template"}
    assert sorted(set(table["template_replacement"])) == [0, 2]
    assert table.groupby(["seed", "template_replacement"])["run"].nunique().eq(1).all()
    pairs = replacement_pairs(table)
    assert len(pairs) == 15 and pairs["subset"].iloc[0] == "flair+t1+t1c+t2"
    key = table.set_index(["subset", "seed", "template_replacement"])["dice_mean"]
    for _, row in pairs.iterrows():
        for s in (0, 1):
            gain = key[(row["subset"], s, 2)] - key[(row["subset"], s, 0)]
            assert row[f"gain_s{s}"] == pytest.approx(gain)
        assert row["gain"] == pytest.approx((row["gain_s0"] + row["gain_s1"]) / 2)
    assert (pairs["n_seeds"] == 2).all()
    # the subset cache keeps what it scored and adds a fill it lacks
    run = Path(table["run"].iloc[0])
    both = subset_robustness(run, ("template", "zero"), max_test=1, progress=False)
    assert len(both) == 30 and set(both["fill"]) == {"template", "zero"}
    again = subset_robustness(run, ("template",), max_test=1, progress=False)
    assert again["dice_mean"].tolist() == table[table["run"] == str(run)]["dice_mean"].tolist()
    with pytest.raises(ValueError, match="seeds"):
        replacement_pairs(table[~((table["seed"] == 1) & (table["template_replacement"] == 2))])
