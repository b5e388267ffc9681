"""Curation: RAS, isotropic, head crop, percentile scaling, grids, reruns, shards, CLI statuses."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from test_layouts import head, make_brats2021, make_isles, make_ixi, save, synth

from mmlib.cli import main
from mmlib.data.curate import curate, curate_study, parse_shard, resample, target_grid
from mmlib.data.layouts import discover, find_studies
from mmlib.data.store import Store


@pytest.fixture
def brats(tmp_path):
    return make_brats2021(tmp_path / "BraTS2021", n=3)


def test_store_arrays_follow_the_contract(brats, tmp_path):
    report = curate(find_studies(brats), tmp_path / "store", spacing=4.0, progress=False)
    assert report.status == 0 and len(report.curated) == 3
    store = Store(tmp_path / "store")
    for sid in store.studies():
        row = store.row(sid)
        aff = np.asarray(row["affine"])
        assert np.allclose(aff[:3, :3], np.diag([4.0, 4.0, 4.0]))  # RAS, isotropic, diagonal
        assert row["spacing"] == [4.0, 4.0, 4.0] and row["label"] is True
        # the head (ellipsoid centred on the grid centre, world (-1.5, -1.5, -1.5)) is centred
        assert np.allclose(row["center_world"], -1.5, atol=4.0), row["center_world"]
        for mod in row["modalities"]:
            img = store.image(sid, mod)
            assert img.shape == tuple(row["shape"]) and img.dtype == np.float16
            assert float(img.min()) == 0.0 and float(img.max()) == 1.0
        # cropped to the head: 36×40×32 voxels of 3 mm ≈ 108×120×96 mm of which the head
        # ellipsoid takes 80-85 % per axis, so ~22-26 voxels of 4 mm plus the margin
        assert all(18 <= s <= 30 for s in row["shape"]), row["shape"]
        assert set(row["label_values"]) <= {0, 2, 4} and 4 in row["label_values"]
        assert row["split"] in ("train", "val", "test")


def test_percentile_scaling_saturates_five_percent_each_side(brats):
    cur = curate_study(find_studies(brats)[0], spacing=3.0)
    fg = cur.images["t1"] > -1
    for mod, img in cur.images.items():
        rec = cur.qc["modalities"][mod]
        assert rec["p5"] < rec["p95"]
        head_vox = img[fg]
        top = np.mean(head_vox >= 1.0)
        assert 0.0 < top < 0.12, (mod, top)
    # contrast survives: WM-bright T1, CSF-bright T2 (the ventricle is a slab at x ~ centre)
    t1, t2 = cur.images["t1"], cur.images["t2"]
    assert np.corrcoef(t1.ravel(), t2.ravel())[0, 1] < 0.5


def test_orientation_is_resolved_to_ras(tmp_path):
    """One series saved twice, once RAS and once x-flipped (LAS affine): identical after
    curation."""
    t = head()
    ras = np.diag([3.0, 3.0, 3.0, 1.0])
    ras[:3, 3] = -np.array(t.shape) * 1.5
    las = ras.copy()
    las[0, 0], las[0, 3] = -3.0, ras[0, 3] + 3.0 * (t.shape[0] - 1)
    img = synth(t, "t1")
    save(tmp_path / "d" / "s1" / "s1_t1.nii.gz", img, ras)
    save(tmp_path / "d" / "s1" / "s1_t2.nii.gz", np.ascontiguousarray(img[::-1]), las)
    assert "".join(nib.aff2axcodes(las)) == "LAS"
    st = find_studies(tmp_path / "d", pattern="{subject}/{subject}_{modality}.nii.gz")[0]
    cur = curate_study(st, spacing=3.0)
    assert np.allclose(cur.images["t1"], cur.images["t2"], atol=1e-5)
    assert any("nearly identical" in w for w in cur.qc["warnings"])
    assert cur.qc["modalities"]["t2"]["source_orientation"] == "LAS"


def test_different_grids_are_resampled_onto_one(tmp_path):
    studies = find_studies(make_isles(tmp_path / "ISLES", n=1))
    cur = curate_study(studies[0], spacing=2.0)
    assert cur.row["reference"] == "flair"  # the finest grid
    shapes = {img.shape for img in cur.images.values()}
    assert len(shapes) == 1 and cur.label is not None and cur.label.shape in shapes
    dwi, adc = cur.images["dwi"], cur.images["adc"]
    lesion = cur.label > 0
    assert lesion.any()
    # the label (on the DWI grid) lands on the lesion: saturated on DWI, dark on ADC
    assert dwi[lesion].mean() > 0.95 and dwi[lesion].mean() > dwi[~lesion & (dwi > 0)].mean()
    assert adc[lesion].mean() < adc[~lesion & (adc > 0)].mean() - 0.2
    assert any("different grid" in n for n in cur.qc["notes"])


def test_ixi_modalities_on_own_grids_align(tmp_path):
    cur = curate_study(find_studies(make_ixi(tmp_path / "IXI", n=1))[0], spacing=3.0)
    # PD and T2 were written x-flipped; after curation the CSF slab lines up in every modality
    for mod in ("t2", "pd"):
        assert np.corrcoef(cur.images[mod].ravel(), cur.images["t2"].ravel())[0, 1] > 0.9
        prof = cur.images[mod].mean(axis=(1, 2))
        assert abs(int(np.argmax(prof)) - len(prof) // 2) <= 3  # CSF slab bright at centre


def test_resample_identity_and_shift_are_exact():
    rng = np.random.default_rng(0)
    data = rng.random((10, 12, 8)).astype(np.float32)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    shape, grid = target_grid(data.shape, aff, 2.0)
    assert shape == (10, 12, 8)
    assert np.array_equal(resample(data, aff, shape, grid), data)
    shifted = grid.copy()
    shifted[:3, 3] += 2.0 * np.array([1, 2, 0])
    out = resample(data, aff, shape, shifted)
    assert np.array_equal(out[:-1, :-2], data[1:, 2:]) and not out[-1].any()


def test_rerun_skips_finished_studies(brats, tmp_path):
    studies = find_studies(brats)
    curate(studies, tmp_path / "s", spacing=4.0, progress=False, qc_report=False)
    mtime = (tmp_path / "s" / "studies" / "BraTS2021_00000" / "t1.npy").stat().st_mtime_ns
    again = curate(studies, tmp_path / "s", spacing=4.0, progress=False, qc_report=False)
    assert again.curated == [] and sorted(again.skipped) == [s.study for s in studies]
    assert (tmp_path / "s" / "studies" / "BraTS2021_00000" / "t1.npy").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="spacing"):
        curate(studies, tmp_path / "s", spacing=2.0, progress=False)


def test_shards_fill_one_store_in_parallel_workers(brats, tmp_path):
    studies = find_studies(brats)
    a = curate(studies, tmp_path / "s", spacing=4.0, shard="0/2", workers=2, progress=False)
    b = curate(studies, tmp_path / "s", spacing=4.0, shard=(1, 2), progress=False)
    assert sorted(a.curated + b.curated) == [s.study for s in studies]
    assert not set(a.curated) & set(b.curated)
    assert (tmp_path / "s" / "reports" / "curate-shard-0-of-2.json").is_file()
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert len(manifest) == 3 and len(Store(tmp_path / "s")) == 3
    with pytest.raises(ValueError, match="I/N"):
        parse_shard("2")
    with pytest.raises(ValueError, match="0 <= I < N"):
        parse_shard("2/2")


def test_split_file_overrides_hash_split(brats, tmp_path):
    split_file = tmp_path / "splits.json"
    split_file.write_text(
        json.dumps({"test": ["BraTS2021_00000", "BraTS2021_00001"], "train": ["BraTS2021_00002"]})
    )
    curate(
        find_studies(brats),
        tmp_path / "s",
        spacing=4.0,
        split_file=split_file,
        progress=False,
        qc_report=False,
    )
    store = Store(tmp_path / "s")
    assert store.studies(split="test") == ["BraTS2021_00000", "BraTS2021_00001"]
    csv = tmp_path / "splits.csv"
    csv.write_text("study,split\nBraTS2021_00000,val\n")
    assert Store(tmp_path / "s", split_file=csv).studies(split="val") == ["BraTS2021_00000"]


def test_cli_exit_statuses(brats, tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["curate", "--out", str(out), "--spacing", "4", "--quiet", str(brats)]) == 0
    assert "curated 3" in capsys.readouterr().out
    assert (out / "reports" / "qc" / "qc.csv").is_file()
    assert main(["curate", "--out", str(out), "--spacing", "4", "--dry-run", str(brats)]) == 0
    assert main(["curate", "--out", str(out), str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["curate", "--out", str(out), "--shard", "5/2", str(brats)]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["curate", str(brats)])  # --out is required
    assert exc.value.code == 2
    # one broken study: the others stay, the status says some failed
    seg = brats / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz"
    seg.write_bytes(seg.read_bytes()[:200])
    out2 = tmp_path / "store2"
    assert main(["curate", "--out", str(out2), "--spacing", "4", "--quiet", str(brats)]) == 3
    assert "FAILED BraTS2021_00001" in capsys.readouterr().out
    assert len(Store(out2)) == 2


def test_cohort_root_curates_every_source(tmp_path):
    cohort = tmp_path / "cohort"
    make_brats2021(cohort / "BraTS2021", n=2)
    make_ixi(cohort / "IXI", n=1)
    (cohort / "cohort.json").write_text(
        json.dumps(
            {
                "sources": [
                    {
                        "name": "BraTS2021",
                        "path": "BraTS2021",
                        "layout": "brats2021",
                        "role": "pretrain",
                        "task": "pretrain",
                        "modalities": ["flair", "t1", "t1c", "t2"],
                    },
                    {
                        "name": "IXI",
                        "path": "IXI",
                        "layout": "ixi",
                        "role": "pretrain",
                        "task": "pretrain",
                        "modalities": ["t1", "t2", "pd", "mra"],
                    },
                ]
            }
        )
    )
    assert (
        main(["curate", "--out", str(tmp_path / "s"), "--spacing", "4", "--quiet", str(cohort)])
        == 0
    )
    store = Store(tmp_path / "s")
    assert store.studies(source="IXI") == ["IXI000-Guys-800"]
    assert store.row("IXI000-Guys-800")["attrs"] == {"age": 30, "sex": "F"}
    assert store.studies(task="pretrain") == store.studies()
    assert set(discover(cohort)[0].modalities) == {"flair", "t1", "t1c", "t2"}


def test_qc_report_flags_a_swapped_series(tmp_path):
    root = make_brats2021(tmp_path / "BraTS2021", n=5)
    d = root / "BraTS2021_00003"
    t1, t2 = d / "BraTS2021_00003_t1.nii.gz", d / "BraTS2021_00003_t2.nii.gz"
    tmp = d / "swap"
    t1.rename(tmp)
    t2.rename(t1)
    tmp.rename(t2)
    curate(find_studies(root), tmp_path / "s", spacing=3.0, progress=False)
    qc_dir = tmp_path / "s" / "reports" / "qc"
    for name in ("qc.csv", "suspicious.csv", "histograms.png", "spacing.png", "summary.json"):
        assert (qc_dir / name).is_file()
    from mmlib.data import qc

    store = Store(tmp_path / "s")
    flagged = qc.mislabelled(store)
    assert set(zip(flagged["study"], flagged["modality"], flagged["looks_like"])) == {
        ("BraTS2021_00003", "t1", "t2"),
        ("BraTS2021_00003", "t2", "t1"),
    }
    table = qc.qc_table(store)
    assert len(table) == 20 and set(table["source_orientation"]) == {"RAS"}
    summary = json.loads((qc_dir / "summary.json").read_text())
    assert summary["suspicious"]["mislabelled"] == 2 and summary["studies"] == 5


def test_shared_store_is_reused_rebuilt_or_resumed(tmp_path, monkeypatch):
    from mmlib.data.ensure import _make_store, _sha1, ensure_store

    monkeypatch.setenv("MMLIB_WORK", str(tmp_path / "work"))
    cohort = tmp_path / "work" / "smoke" / "cohort"
    make_brats2021(cohort / "BraTS2021", n=2)
    (cohort / "cohort.json").write_text(
        json.dumps(
            {
                "sources": [
                    {"name": "b", "path": "BraTS2021", "layout": "brats2021", "role": "pretrain"}
                ]
            }
        )
    )
    (cohort / "DONE").write_text("x")
    root = tmp_path / "work" / "smoke" / "store"
    _make_store(root, cohort, _sha1(cohort / "cohort.json"), 4.0, "smoke", progress=False)
    first = (root / "studies" / "BraTS2021_00000" / "t1.npy").stat().st_mtime_ns
    assert ensure_store("smoke") == root  # finished and from this cohort: reused at once
    assert (root / "studies" / "BraTS2021_00000" / "t1.npy").stat().st_mtime_ns == first
    # interrupted: no DONE, same cohort -> resumed, finished studies kept
    (root / "DONE").unlink()
    _make_store(root, cohort, _sha1(cohort / "cohort.json"), 4.0, "smoke", progress=False)
    assert (root / "studies" / "BraTS2021_00000" / "t1.npy").stat().st_mtime_ns == first
    report = json.loads((root / "reports" / "curate.json").read_text())
    assert report["curated"] == [] and len(report["skipped"]) == 2
    # the cohort changed (a new simulator): rebuilt from scratch
    (cohort / "cohort.json").write_text(
        json.dumps(
            {
                "sources": [
                    {"name": "b", "path": "BraTS2021", "layout": "brats2021", "role": "downstream"}
                ]
            }
        )
    )
    _make_store(root, cohort, _sha1(cohort / "cohort.json"), 4.0, "smoke", progress=False)
    assert Store(root).row("BraTS2021_00000")["role"] == "downstream"
    assert (root / "COHORT").read_text() == _sha1(cohort / "cohort.json")
