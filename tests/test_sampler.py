"""Sampler: the batch contract, one crop box per study, padding, determinism, workers, DDP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from mmlib.data.sampler import PretrainDataset
from mmlib.data.store import Store, init_store, write_study
from mmlib.modalities import MODALITIES


def _row(study, mods, shape, label=False, attrs=None, role="pretrain"):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-30.0, -40.0, -20.0]
    return {
        "study": study,
        "source": "src",
        "modalities": mods,
        "shape": list(shape),
        "spacing": [2.0] * 3,
        "affine": aff.tolist(),
        "center_world": [1.0, 2.0, 3.0],
        "label": label,
        "attrs": attrs or {},
        "split": "train",
        "task": "t",
        "role": role,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = init_store(tmp_path_factory.mktemp("store") / "s", spacing=2.0)
    rng = np.random.default_rng(0)
    layout = {
        "six": (["flair", "t1", "t1c", "t2", "dwi", "adc"], (20, 22, 18)),
        "four": (["flair", "t1", "t1c", "t2"], (18, 20, 16)),
        "two": (["t1", "t2"], (16, 18, 14)),
        "small": (["t2", "pd"], (6, 5, 4)),
    }
    for i, (sid, (mods, shape)) in enumerate(layout.items()):
        imgs = {m: rng.random(shape, dtype=np.float32) for m in mods}
        seg = (imgs[mods[0]] > 0.8).astype(np.uint8)
        write_study(
            root, _row(sid, mods, shape, True, {"grade": "HGG" if i % 2 else "LGG"}), imgs, seg
        )
    write_study(
        root,
        _row("held_out", ["t1"], (16, 16, 16), role="downstream"),
        {"t1": rng.random((16, 16, 16), dtype=np.float32)},
    )
    return Store(root)


def _box_of(item, store):
    """Recover the crop start (voxels) from template_origin: world - center, inverted."""
    row = store.row(item["study"])
    aff = np.asarray(row["affine"])
    world = item["template_origin"].double().numpy() + np.asarray(row["center_world"])
    return np.rint(np.linalg.solve(aff[:3, :3], world - aff[:3, 3])).astype(int)


def test_batch_contract(store):
    ds = PretrainDataset(store, crop_size=8, k=4)
    assert ds.studies == ["four", "six", "small", "two"]  # role=pretrain only by default
    batch = PretrainDataset.collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (4, 4, 8, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["present"].dtype == torch.bool and batch["present"].shape == (4, 4)
    assert batch["modality"].dtype == torch.int64 and batch["modality"].shape == (4, 4)
    assert batch["template_origin"].dtype == torch.float32 and batch["template_origin"].shape == (
        4,
        3,
    )
    assert batch["spacing"].tolist() == [[2.0] * 3] * 4
    assert batch["study"] == ds.studies
    assert batch["present"].sum(1).tolist() == [4, 4, 2, 2]
    assert ((batch["modality"] >= 0) == batch["present"]).all()
    assert (batch["image"][~batch["present"]] == 0).all()
    six = batch["modality"][1].tolist()
    assert six == sorted(six) and {MODALITIES[i] for i in six} <= {
        "flair",
        "t1",
        "t1c",
        "t2",
        "dwi",
        "adc",
    }


def test_same_crop_box_for_every_modality(store):
    ds = PretrainDataset(store, crop_size=(8, 6, 4), k=4, seed=3)
    for index in (0, 1, 3):
        item = ds[index]
        start = _box_of(item, store)
        for c in np.flatnonzero(item["present"].numpy()):
            mod = MODALITIES[int(item["modality"][c])]
            vol = np.asarray(store.image(item["study"], mod), dtype=np.float32)
            ref = vol[start[0] : start[0] + 8, start[1] : start[1] + 6, start[2] : start[2] + 4]
            assert np.array_equal(item["image"][c].numpy(), ref)


def test_pads_when_the_head_is_smaller_than_the_crop(store):
    ds = PretrainDataset(store, crop_size=10, k=2, studies=["small"])
    item = ds[0]
    for c, mod in enumerate(["t2", "pd"]):
        vol = np.asarray(store.image("small", mod), dtype=np.float32)
        assert np.isclose(item["image"][c].sum().item(), vol.sum(), rtol=1e-5)
        start = _box_of(item, store)
        assert (start <= 0).all() and (start + 10 >= np.array(vol.shape)).all()


def test_deterministic_per_seed_epoch_index(store):
    ds = PretrainDataset(store, crop_size=8, k=4, seed=7)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["modality"], b["modality"])
    ds.set_epoch(1)
    c = ds[1]
    assert not torch.equal(a["template_origin"], c["template_origin"]) or not torch.equal(
        a["modality"], c["modality"]
    )
    ds.set_epoch(0)
    assert torch.equal(ds[1]["image"], a["image"])
    other = PretrainDataset(store, crop_size=8, k=4, seed=8)[1]
    assert not torch.equal(other["image"], a["image"])


def test_workers_and_distributed_sampler_agree_with_in_process(store):
    ds = PretrainDataset(store, crop_size=8, k=4, seed=1)
    ds.set_epoch(2)
    direct = {ds.studies[i]: ds[i]["image"] for i in range(len(ds))}
    seen = {}
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(2)
        loader = DataLoader(
            ds, batch_size=2, sampler=sampler, num_workers=2, collate_fn=PretrainDataset.collate
        )
        for batch in loader:
            for sid, img in zip(batch["study"], batch["image"]):
                assert sid not in seen
                seen[sid] = img
    assert set(seen) == set(direct)
    for sid in direct:
        assert torch.equal(seen[sid], direct[sid])


def test_bad_arguments(store):
    with pytest.raises(ValueError, match="k should be"):
        PretrainDataset(store, crop_size=8, k=0)
    with pytest.raises(ValueError, match="crop_size"):
        PretrainDataset(store, crop_size=(8, 8))
    with pytest.raises(ValueError, match="not in the store"):
        PretrainDataset(store, crop_size=8, studies=["nope"])


def test_set_epoch_reaches_persistent_workers(store):
    ds = PretrainDataset(store, crop_size=8, k=4, seed=5)
    loader = DataLoader(
        ds, batch_size=4, num_workers=2, persistent_workers=True, collate_fn=PretrainDataset.collate
    )
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        got = next(iter(loader))
        want = PretrainDataset.collate([ds[i] for i in range(len(ds))])
        assert torch.equal(got["image"], want["image"]), epoch
        assert torch.equal(got["template_origin"], want["template_origin"])


def _reference_item(ds, index):
    """The sample of ``index`` as the original per-sample code computed it (memory maps,
    read_crop), from the same (seed, epoch, index) draws."""
    from mmlib.data.sampler import crop_box, read_crop

    row = ds.store.row(ds.studies[index])
    rng = np.random.default_rng([ds.seed, ds.epoch, index])
    mods = list(row["modalities"])
    if len(mods) > ds.k:
        mods = [mods[i] for i in np.sort(rng.choice(len(mods), size=ds.k, replace=False))]
    start = crop_box(row["shape"], ds.crop_size, rng)
    image = np.zeros((ds.k, *ds.crop_size), np.float32)
    for c, mod in enumerate(mods):
        read_crop(ds.store.image(ds.studies[index], mod), start, ds.crop_size, out=image[c])
    aff = np.asarray(row["affine"])
    origin = aff[:3, :3] @ start + aff[:3, 3] - np.asarray(row["center_world"])
    return image, torch.tensor(origin, dtype=torch.float32)


def test_batched_read_equals_per_sample_reference(store):
    ds = PretrainDataset(store, crop_size=(9, 7, 12), k=3, seed=11)  # pads "small", picks of six
    ds.set_epoch(4)
    order = [2, 0, 3, 1, 2]
    items = ds.__getitems__(order)
    batch = PretrainDataset.collate(items)
    stacked = PretrainDataset.collate(list(items))  # a plain list: stacked copies
    for key in ("image", "present", "modality", "template_origin", "spacing"):
        assert torch.equal(batch[key], stacked[key]) and batch[key].dtype == stacked[key].dtype
    assert batch["study"] == [ds.studies[i] for i in order]
    for b, index in enumerate(order):
        image, origin = _reference_item(ds, index)
        assert np.array_equal(batch["image"][b].numpy(), image)
        assert torch.equal(batch["template_origin"][b], origin)
        one = ds[index]
        assert torch.equal(one["image"], batch["image"][b]) and one["study"] == ds.studies[index]
    # the items are views of the batch, not copies
    assert items[1]["image"].data_ptr() == batch["image"][1].data_ptr()


def _collate_and_report(items):
    batch = PretrainDataset.collate(items)
    batch["shared_in_worker"] = batch["image"].is_shared()
    batch["no_copy"] = items[0]["image"].data_ptr() == batch["image"].data_ptr()
    return batch


def test_worker_batches_are_built_in_shared_memory(store):
    ds = PretrainDataset(store, crop_size=8, k=4, seed=2)
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=_collate_and_report)
    batches = list(loader)
    assert all(b["shared_in_worker"] and b["no_copy"] for b in batches)
    want = PretrainDataset.collate([ds[i] for i in range(len(ds))])
    assert torch.equal(torch.cat([b["image"] for b in batches]), want["image"])
    in_process = list(DataLoader(ds, batch_size=2, num_workers=0, collate_fn=_collate_and_report))
    assert not any(b["shared_in_worker"] for b in in_process)


def test_float16_transport_is_the_float32_batch_exactly(store):
    """``image_dtype=float16`` serves the store's values unconverted; float32 of them is the
    default batch bit for bit, in process and from shared memory in workers."""
    want = PretrainDataset(store, crop_size=(9, 7, 12), k=3, seed=5)
    half = PretrainDataset(store, crop_size=(9, 7, 12), k=3, seed=5, image_dtype=torch.float16)
    for ds in (want, half):
        ds.set_epoch(3)
    order = [3, 1, 0, 2]
    a = PretrainDataset.collate(want.__getitems__(order))
    b = PretrainDataset.collate(half.__getitems__(order))
    assert a["image"].dtype == torch.float32 and b["image"].dtype == torch.float16
    assert torch.equal(b["image"].float(), a["image"])
    for key in ("present", "modality", "template_origin", "spacing", "study"):
        assert torch.equal(a[key], b[key]) if key != "study" else a[key] == b[key], key
    loader = DataLoader(half, batch_size=2, num_workers=1, collate_fn=_collate_and_report)
    batches = list(loader)
    assert all(x["shared_in_worker"] and x["image"].dtype == torch.float16 for x in batches)
    direct = PretrainDataset.collate(want.__getitems__(range(len(want))))
    assert torch.equal(torch.cat([x["image"] for x in batches]).float(), direct["image"])
    with pytest.raises(ValueError, match="image_dtype"):
        PretrainDataset(store, crop_size=8, image_dtype=torch.bfloat16)


def _shm_inode(t: torch.Tensor) -> int:
    """The inode of the shared-memory file behind a tensor received from a worker."""
    import os

    fd, _ = t.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


@pytest.mark.parametrize("image_dtype", [torch.float32, torch.float16])
def test_worker_ring_reuses_released_buffers_and_never_held_ones(store, image_dtype):
    """A worker rewrites a shared batch buffer only after the main process dropped every
    tensor on it: batches kept alive keep their values; dropped ones are recycled."""
    from mmlib.data.sampler import RING_SLOTS

    ds = PretrainDataset(store, crop_size=8, k=4, seed=9, image_dtype=image_dtype)
    order = [i % len(ds) for i in range(4 * RING_SLOTS)]
    want = PretrainDataset.collate(ds.__getitems__(order))["image"]

    def loader():
        return DataLoader(
            ds,
            batch_size=1,
            sampler=order,
            num_workers=1,
            prefetch_factor=2,
            collate_fn=PretrainDataset.collate,
        )

    kept = list(loader())  # every batch held: every buffer is fresh, nothing overwritten
    assert len({_shm_inode(b["image"]) for b in kept}) == len(order)
    assert torch.equal(torch.cat([b["image"] for b in kept]), want)
    del kept
    inodes, views = [], []
    for i, batch in enumerate(loader()):  # dropped after use, but a view of every 5th is kept
        assert torch.equal(batch["image"][0], want[i])
        inodes.append(_shm_inode(batch["image"]))
        if i % 5 == 0:
            views.append((i, batch["image"][0, 1:]))
    assert len(set(inodes)) <= RING_SLOTS + len(views) < len(order)
    for i, view in views:  # a held view keeps its buffer out of the ring
        assert torch.equal(view, want[i, 1:])
