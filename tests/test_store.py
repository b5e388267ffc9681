"""Store: atomic writes, memory-mapped reads, manifest filters, deterministic splits."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from mmlib.data import store as store_mod
from mmlib.data.store import (
    MANIFEST_COLUMNS,
    Store,
    assign_split,
    clean_stale,
    consolidate,
    init_store,
    read_split_file,
    write_study,
)


def row(study, source="src", split="train", task="pretrain", shape=(6, 7, 5), label=False):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    return {
        "study": study,
        "source": source,
        "modalities": ["t1", "t2"],
        "shape": list(shape),
        "spacing": [2.0] * 3,
        "affine": aff.tolist(),
        "center_world": [5.0, 6.0, 4.0],
        "label": label,
        "attrs": {"grade": "HGG"},
        "split": split,
        "task": task,
    }


def arrays(shape=(6, 7, 5), seed=0):
    rng = np.random.default_rng(seed)
    return {"t1": rng.random(shape, dtype=np.float32), "t2": rng.random(shape, dtype=np.float32)}


def test_write_and_read_back(tmp_path):
    root = init_store(tmp_path / "s", spacing=2.0)
    imgs = arrays()
    seg = (imgs["t1"] > 0.5).astype(np.uint8)
    write_study(root, row("a", label=True), imgs, seg, qc={"warnings": []})
    write_study(root, row("b/odd id", source="other", split="val", task="seg"), arrays(seed=1))
    store = Store(root)
    assert len(store) == 2 and "a" in store and set(MANIFEST_COLUMNS) <= set(store.manifest)
    img = store.image("a", "t1")
    assert isinstance(img, np.memmap) and img.dtype == np.float16 and img.shape == (6, 7, 5)
    assert np.allclose(img, imgs["t1"], atol=5e-4)  # float16 step in [0, 1] is <= 2**-11
    assert np.array_equal(store.label("a"), seg) and store.label("b/odd id") is None
    assert store.row("b/odd id")["source"] == "other"
    assert store.studies(source="other") == ["b/odd id"]
    assert store.studies(split="train") == ["a"] and store.studies(task="seg") == ["b/odd id"]
    assert store.qc("a") == {"warnings": []}
    assert np.allclose(store.affine("a"), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(KeyError, match="no modality 'flair'"):
        store.image("a", "flair")
    with pytest.raises(KeyError, match="no study"):
        store.row("zzz")


def test_crash_mid_write_leaves_nothing_visible(tmp_path, monkeypatch):
    root = init_store(tmp_path / "s", spacing=2.0)
    calls = {"n": 0}
    real_save = np.save

    def failing_save(path, arr, *a, **k):  # the disk fills up after the first array
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("No space left on device")
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr(store_mod.np, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        write_study(root, row("a"), arrays())
    monkeypatch.undo()
    assert list((root / "studies").iterdir()) == []
    assert len(Store(root)) == 0 and not store_mod.is_done(root, "a")


def test_stale_temp_folders_of_dead_writers_are_cleaned(tmp_path):
    root = init_store(tmp_path / "s", spacing=2.0)
    host = socket.gethostname()
    dead = root / "studies" / f".tmp-x-{host}-999999999"
    alive = root / "studies" / f".tmp-y-{host}-{os.getpid()}"
    other = root / "studies" / ".tmp-z-otherhost-1"
    for d in (dead, alive, other):
        d.mkdir()
    assert clean_stale(root) == [dead.name]
    assert alive.exists() and other.exists() and len(Store(root)) == 0


def test_manifest_cache_and_refresh(tmp_path):
    root = init_store(tmp_path / "s", spacing=2.0)
    write_study(root, row("a"), arrays())
    consolidate(root)
    store = Store(root)
    write_study(root, row("b"), arrays())  # written by another process after opening
    assert store.studies() == ["a"]
    store.refresh()
    assert store.studies() == ["a", "b"]
    assert [r["study"] for r in json.loads((root / "manifest.json").read_text())] == ["a"]


def test_init_store_refuses_wrong_folders(tmp_path):
    init_store(tmp_path / "s", spacing=2.0)
    init_store(tmp_path / "s", spacing=2.0)  # reopening is fine
    with pytest.raises(ValueError, match="spacing 2.0 mm, not 1.0"):
        init_store(tmp_path / "s", spacing=1.0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not an mmlib store"):
        init_store(tmp_path / "other", spacing=1.0)
    with pytest.raises(FileNotFoundError, match="mmlib curate"):
        Store(tmp_path / "other")


def test_splits_are_deterministic_and_proportional():
    ids = [f"study{i:05d}" for i in range(3000)]
    splits = [assign_split(s) for s in ids]
    assert splits == [assign_split(s) for s in ids]
    frac = {k: splits.count(k) / len(ids) for k in ("train", "val", "test")}
    assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["val"] - 0.1) < 0.02
    assert assign_split("x", fractions=(0.0, 0.0, 1.0)) == "test"


def test_split_file_formats(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"s1": "train", "s2": "validation"}))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"training": [{"study": "s1"}], "testing": ["s2"]}))
    c = tmp_path / "c.tsv"
    c.write_text("study\tsplit\ns1\ttest\n")
    assert read_split_file(a) == {"s1": "train", "s2": "val"}
    assert read_split_file(b) == {"s1": "train", "s2": "test"}
    assert read_split_file(c) == {"s1": "test"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"s1": "holdout"}))
    with pytest.raises(ValueError, match="unknown split"):
        read_split_file(bad)


@pytest.mark.parametrize("dtype", [np.float16, np.uint8, np.float32])
def test_crop_reader_matches_read_crop_inside_across_and_outside(tmp_path, dtype):
    import torch

    from mmlib.data.sampler import read_crop
    from mmlib.data.store import CropReader

    rng = np.random.default_rng(3)
    vol = (rng.random((13, 11, 9)) * 200).astype(dtype)
    path = tmp_path / "v.npy"
    np.save(path, vol)
    reader = CropReader()
    boxes = [
        ((2, 3, 1), (5, 4, 6)),
        ((0, 0, 0), (13, 11, 9)),
        ((-3, 2, -1), (8, 5, 12)),
        ((10, 9, 7), (6, 6, 6)),
        ((-4, -4, -4), (30, 30, 30)),
        ((13, 0, 0), (4, 4, 4)),
        ((-5, 0, 0), (5, 4, 4)),
        ((4, -2, 8), (1, 20, 1)),
    ]
    for start, size in boxes:
        want = read_crop(np.load(path, mmap_mode="r"), start, size)
        out = torch.full(size, 7.0)  # stale values must be overwritten or zeroed
        got = reader.read(path, start, out)
        assert got is out
        assert np.array_equal(out.numpy(), want), (start, size)
    # into a strided view of a larger tensor: nothing outside the view is touched
    big = torch.full((2, 6, 6, 6), -1.0)
    reader.read(path, (1, 1, 1), big[1])
    assert (big[0] == -1).all()
    assert np.array_equal(big[1].numpy(), vol[1:7, 1:7, 1:7].astype(np.float32))


def test_crop_reader_refuses_fortran_order_and_truncated_files(tmp_path):
    import torch

    from mmlib.data.store import CropReader

    path = tmp_path / "f.npy"
    np.save(path, np.asfortranarray(np.ones((4, 5, 6), np.float16)))
    with pytest.raises(ValueError, match="C-order"):
        CropReader().read(path, (0, 0, 0), torch.zeros(2, 2, 2))
    short = tmp_path / "t.npy"
    np.save(short, np.ones((4, 5, 6), np.float16))
    short.write_bytes(short.read_bytes()[:-40])
    with pytest.raises(OSError, match="truncated"):
        CropReader().read(short, (2, 3, 0), torch.zeros(2, 2, 6))


def test_image_path_names_the_missing_modality(tmp_path):
    root = init_store(tmp_path / "s", spacing=2.0)
    write_study(root, row("a"), arrays())
    st = Store(root)
    assert st.image_path("a", "t1") == root / "studies" / "a" / "t1.npy"
    with pytest.raises(KeyError, match="no modality 'flair'"):
        st.image_path("a", "flair")
