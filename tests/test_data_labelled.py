"""Labelled datasets (mmlib.data.labelled): every crop read through read_crop, tasks given as
plain modalities, attribute and classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_sampler import store  # noqa: F401  (the module-scoped store fixture)

from mmlib.data.labelled import (
    ClassificationInputs,
    LabelledDataset,
    SegmentationCrops,
    Volumes,
    apply_flips,
    collate_samples,
    study_class,
)
from mmlib.data.sampler import read_crop


def test_labelled_segmentation(store):  # noqa: F811
    ds = LabelledDataset(
        store,
        ["T1", "t1ce", "t2", "FLAIR"],
        crop_size=8,
        studies=["four", "two"],
        foreground_fraction=1.0,
    )
    item = ds[1]  # "two": t1 and t2 only
    assert item["image"].shape == (4, 8, 8, 8) and item["present"].tolist() == [
        True,
        False,
        True,
        False,
    ]
    assert (item["image"][1] == 0).all() and item["label"].shape == (8, 8, 8)
    assert item["label"].dtype == torch.int64 and item["label"].sum() > 0
    assert item["modality"].tolist() == [1, 2, 3, 0]
    whole = LabelledDataset(store, ["t1"], crop_size=None, studies=["four", "two"])
    batch = LabelledDataset.collate([whole[0], whole[1]])
    assert batch["image"].shape == (2, 1, 18, 20, 16) and batch["label"].shape == (2, 18, 20, 16)
    seg = np.asarray(store.label("two"))
    assert np.array_equal(batch["label"][1, :16, :18, :14].numpy(), seg)
    with pytest.raises(ValueError, match="without a segmentation"):
        LabelledDataset(store, ["t1"], studies=["held_out"])


def test_labelled_classification(store):  # noqa: F811
    ds = LabelledDataset(
        store, ["t1", "t2"], crop_size=8, studies=["four", "six", "two"], label_key="grade"
    )
    assert ds.classes == ["HGG", "LGG"]
    labels = [int(ds[i]["label"]) for i in range(3)]
    grades = [store.row(s)["attrs"]["grade"] for s in ds.studies]
    assert [ds.classes[i] for i in labels] == grades
    with pytest.raises(ValueError, match="attrs"):
        LabelledDataset(store, ["t1"], studies=["held_out"], label_key="grade")


def _start(st, item):
    """The crop's start voxel, from its head-centred origin (diagonal store affine)."""
    row = st.row(item["study"])
    aff = np.asarray(row["affine"], dtype=np.float64)
    world = item["template_origin"].double().numpy() + np.asarray(row["center_world"])
    return np.rint((world - aff[:3, 3]) / np.diag(aff)[:3]).astype(int)


def test_segmentation_crops_are_read_crop_boxes(store):  # noqa: F811
    ds = SegmentationCrops(
        store,
        ["four", "two", "small"],
        ["t1", "flair"],
        (8, 8, 8),
        length=9,
        seed=3,
        pos_fraction=0.5,
    )
    again = SegmentationCrops(
        store,
        ["four", "two", "small"],
        ["t1", "flair"],
        (8, 8, 8),
        length=9,
        seed=3,
        pos_fraction=0.5,
    )
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        seen.add(item["study"])
        start = _start(store, item)
        for c, m in enumerate(["t1", "flair"]):
            if item["present"][c]:
                want = read_crop(np.asarray(store.image(item["study"], m)), start, (8, 8, 8))
                assert np.array_equal(item["image"][c].numpy(), want)
            else:
                assert (item["image"][c] == 0).all()
        lab = read_crop(np.asarray(store.label(item["study"])), start, (8, 8, 8))
        assert np.array_equal(item["label"][0].numpy(), lab.astype(np.int64))
        assert torch.equal(item["image"], again[i]["image"])  # a function of (seed, index)
    assert seen == {"four", "two", "small"}
    # "small" (t2, pd; 6x5x4) is smaller than the crop: centred, zero-padded, t1 and flair absent
    small = next(ds[i] for i in range(len(ds)) if ds[i]["study"] == "small")
    assert small["present"].tolist() == [False, False] and (small["image"] == 0).all()
    assert int(small["label"].sum()) == int(np.asarray(store.label("small")).sum())
    with pytest.raises(ValueError, match="no label"):
        SegmentationCrops(store, ["held_out"], ["t1"], (8, 8, 8), length=1)
    batch = collate_samples([ds[0], ds[1]])
    assert batch["image"].shape == (2, 2, 8, 8, 8) and isinstance(batch["study"], list)
    flipped = apply_flips(
        batch["image"], torch.tensor([[True, False, False], [False, False, False]])
    )
    assert torch.equal(flipped[0], batch["image"][0].flip(1)) and torch.equal(
        flipped[1], batch["image"][1]
    )


def test_volumes_are_the_store_arrays(store):  # noqa: F811
    item = Volumes(store, ["two"], ["t2", "t1c"])[0]
    assert item["present"].tolist() == [True, False] and (item["image"][1] == 0).all()
    assert np.array_equal(
        item["image"][0].numpy(), np.asarray(store.image("two", "t2"), np.float32)
    )
    assert item["label"].shape == (1, 16, 18, 14)


def test_classification_inputs_take_modalities_attribute_and_classes(store):  # noqa: F811
    studies = ["four", "six", "two"]
    ds = ClassificationInputs(store, studies, ["t1", "t2"], "grade", ["LGG", "HGG"], (8, 8, 8))
    grades = [store.row(s)["attrs"]["grade"] for s in studies]
    assert [["LGG", "HGG"][int(ds[i]["label"])] for i in range(3)] == grades
    assert ds[0]["image"].shape == (2, 8, 8, 8) and not ds[0]["flip"].any()
    train = ClassificationInputs(
        store, studies, ["t1", "t2"], "grade", ["LGG", "HGG"], (8, 8, 8), length=6, seed=1
    )
    assert len(train) == 6 and torch.equal(train[4]["image"], train[4]["image"])
    with pytest.raises(ValueError, match="not one of the classes"):
        ClassificationInputs(store, studies, ["t1"], "grade", ["LGG"], (8, 8, 8))
    with pytest.raises(ValueError, match="not one of the classes"):
        study_class(store.manifest.loc["held_out"], "grade", ["LGG", "HGG"])
