"""``mmlib predict``: native-grid outputs, label conventions, bad input, a kill mid-run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from downstream_fixtures import tiny_store
from test_layouts import head, synth

from mmlib.cli import main
from mmlib.data.curate import curate_study
from mmlib.data.layouts import discover
from mmlib.engine.finetune import finetune
from mmlib.evaluate.predict import (
    load_model,
    native_labels,
    predict,
    prepare_study,
)
from mmlib.tasks import RegionSpec, brats_regions
from mmlib.tasks.labels import dataset_convention, regions_to_labels

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
B21 = (("flair", "flair"), ("t1", "t1"), ("t1ce", "t1c"), ("t2", "t2"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) fine-tuned brats_ped run on a 4 mm store."""
    store = tiny_store(tmp_path_factory.mktemp("store"), n_seg=4, n_cls=0)
    over = {
        "data.store": str(store),
        "run.root": str(tmp_path_factory.mktemp("runs")),
        "train.steps": 2,
        "eval.hd95": False,
    }
    return finetune("smoke", over, progress=False)


def _affine(kind: str, shape: tuple[int, int, int], sp: float) -> np.ndarray:
    """A voxel-to-world matrix of the given kind centred on the volume."""
    if kind == "ras":
        aff = np.diag([sp, sp, sp, 1.0])
    elif kind == "lps":
        aff = np.diag([-sp, -sp, sp, 1.0])
    elif kind == "aniso":
        aff = np.diag([sp, sp, 3 * sp, 1.0])
    elif kind == "oblique":
        a = np.deg2rad(17.0)
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        aff = np.eye(4)
        aff[:3, :3] = rot @ np.diag([sp, sp, sp])
    else:
        raise ValueError(kind)
    aff[:3, 3] = -aff[:3, :3] @ (np.asarray(shape) / 2.0)
    return aff


def _brats2021(
    root: Path,
    sid: str,
    kind: str,
    sp: float = 2.0,
    seed: int = 0,
    skip: tuple[str, ...] = (),
    extra: str | None = None,
) -> np.ndarray:
    """One BraTS 2021 study on a grid of ``kind``; returns its label (0, 1, 2, 4)."""
    shape = (36, 40, 12) if kind == "aniso" else (36, 40, 32)
    t = head(shape=shape, seed=seed)
    aff = _affine(kind, shape, sp)
    folder = root / sid
    folder.mkdir(parents=True, exist_ok=True)
    for name, mod in B21:
        if name not in skip:
            nib.save(
                nib.Nifti1Image(synth(t, mod, seed), aff), str(folder / f"{sid}_{name}.nii.gz")
            )
    if extra:
        nib.save(nib.Nifti1Image(synth(t, "t1", seed), aff), str(folder / f"{sid}_{extra}.nii.gz"))
    seg = np.zeros(shape, np.uint8)
    seg[t == 3] = 0
    seg[(t == 4)] = 4
    core = np.zeros(shape, bool)
    core[tuple(np.argwhere(t == 4).mean(0).astype(int))] = True
    seg[(t == 4) & ~core] = 4
    seg[core] = 1
    grown = np.zeros(shape, bool)
    idx = np.argwhere(t == 4)
    lo, hi = idx.min(0) - 2, idx.max(0) + 3
    grown[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    seg[grown & (seg == 0) & (t > 0)] = 2
    nib.save(nib.Nifti1Image(seg, aff), str(folder / f"{sid}_seg.nii.gz"))
    return seg


@pytest.mark.parametrize("kind", ["ras", "lps", "aniso", "oblique"])
def test_output_on_native_grid(run: Path, tmp_path: Path, kind: str) -> None:
    """Each output has its input's shape and affine, whatever the input orientation."""
    src = tmp_path / "src"
    _brats2021(src, "BraTS2021_00001", kind)
    report = predict(run, [src], tmp_path / "out", device="cpu", progress=False)
    assert report.status == 0 and not report.failed
    ref = nib.load(src / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz")
    out = nib.load(tmp_path / "out" / "BraTS2021_00001.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)
    assert "".join(nib.aff2axcodes(out.affine)) == "".join(nib.aff2axcodes(ref.affine))
    assert out.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2, 4}  # BraTS 2021: ET = 4
    rec = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert rec["identity"]["model_weights"] and rec["versions"]["mmlib"]
    assert rec["written"] == {"BraTS2021_00001": "BraTS2021_00001.nii.gz"}


@pytest.mark.parametrize("kind", ["ras", "lps", "aniso", "oblique"])
def test_label_round_trip(run: Path, tmp_path: Path, kind: str) -> None:
    """A label taken into the curated grid and back through the prediction path (regions as
    logits, resampled, thresholded, relabelled) is unchanged where the grids allow (axis-aligned
    grids whose voxel centres fall on the curated grid), close on an oblique grid."""
    seg = _brats2021(tmp_path, "BraTS2021_00002", kind, seed=3)
    (study,) = discover(tmp_path)
    model = dataclasses.replace(load_model(run, "cpu"), spacing=2.0)
    prep = prepare_study(study, model)
    assert prep.convention == "brats2021" and prep.native_shape == seg.shape
    cur = curate_study(study, spacing=2.0)
    np.testing.assert_allclose(cur.row["affine"], prep.affine)
    regions = brats_regions(cur.label, "brats2021")
    logits = np.where(regions, 5.0, -5.0).astype(np.float32)
    back = native_labels(logits, prep, model.spec)
    assert back.shape == seg.shape and back.dtype == np.uint8
    if kind == "oblique":
        for value in (1, 2, 4):
            a, b = back == value, seg == value
            assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.6, value
        assert (back == seg).mean() > 0.97
    else:
        np.testing.assert_array_equal(back, seg)


def test_label_conventions() -> None:
    regions = RegionSpec(("TC", "WT", "ET"), "brats", "brats2023")
    seg21 = np.array([[[0, 1, 2, 4]]], np.uint8)
    masks = brats_regions(seg21, "brats2021")
    assert regions_to_labels(masks, regions, "brats2021").tolist() == seg21.tolist()
    assert regions_to_labels(masks, regions, "brats2023").tolist() == [[[0, 1, 2, 3]]]
    assert regions_to_labels(masks, regions).tolist() == [[[0, 1, 2, 3]]]  # the model's own
    lesion = np.array([[[[False, True]]]])
    assert regions_to_labels(lesion, RegionSpec(("lesion",), "binary")).tolist() == [[[0, 1]]]
    tissue = np.zeros((3, 1, 1, 4), bool)
    tissue[0, 0, 0, 1] = tissue[1, 0, 0, 2] = tissue[2, 0, 0, 3] = True
    cls = RegionSpec(("CSF", "GM", "WM"), "classes")
    assert regions_to_labels(tissue, cls).tolist() == [[[0, 1, 2, 3]]]
    assert dataset_convention((0, 1, 2, 4), "brats2023") == "brats2021"
    assert dataset_convention((0, 1, 2, 3), "brats2021") == "brats2023"
    assert dataset_convention(None, "brats2023") == "brats2023"
    with pytest.raises(ValueError, match="one channel per region"):
        regions_to_labels(tissue[:2], cls)


def test_brats2023_layout_gets_et_3(run: Path, tmp_path: Path) -> None:
    """A BraTS 2023 study's prediction uses ET = 3, a BraTS 2021 one ET = 4."""
    from test_layouts import make_brats2023

    src = make_brats2023(tmp_path / "b23", n=1)
    (study,) = discover(src)
    model = dataclasses.replace(load_model(run, "cpu"), spacing=3.0)
    prep = prepare_study(study, model)
    assert prep.convention == "brats2023"
    cur = curate_study(study, spacing=3.0)
    logits = np.where(brats_regions(cur.label, "brats2023"), 5.0, -5.0).astype(np.float32)
    back = native_labels(logits, prep, model.spec)
    seg = np.asarray(nib.load(study.label).dataobj)
    assert 3 in back and 4 not in back
    np.testing.assert_array_equal(back, seg)


def test_bad_input_gets_one_line_reasons_and_the_rest_is_written(
    run: Path, tmp_path: Path, capsys
) -> None:
    src = tmp_path / "src"
    _brats2021(src, "BraTS2021_00010", "ras")
    _brats2021(src, "BraTS2021_00011", "ras", seed=1, skip=("t1ce",))
    _brats2021(src, "BraTS2021_00012", "ras", seed=2, extra="swi")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(run),
            str(src),
            str(tmp_path / "nothing-here"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    text = capsys.readouterr()
    assert code == 3
    assert (out / "BraTS2021_00010.nii.gz").is_file() and (out / "BraTS2021_00011.nii.gz").is_file()
    assert not (out / "BraTS2021_00012.nii.gz").exists()
    rec = json.loads((out / "predict.json").read_text())
    assert set(rec["failed"]) == {"BraTS2021_00012", str(tmp_path / "nothing-here")}
    for why in rec["failed"].values():
        assert "\n" not in why and len(why) > 20 and not why.rstrip().endswith("Error")
    assert "swi" in rec["failed"]["BraTS2021_00012"]
    assert "no such file" in rec["failed"][str(tmp_path / "nothing-here")]
    # the lacking modality is filled, and said so (in the log and the record)
    assert any("missing t1c" in n for n in rec["notes"]["BraTS2021_00011"])
    assert "BraTS2021_00011: missing t1c: filled" in text.out + text.err


def test_usage_errors(run: Path, tmp_path: Path) -> None:
    assert (
        main(["predict", str(tmp_path / "no-run"), str(tmp_path), "--out", str(tmp_path / "o")])
        == 2
    )
    assert (
        main(
            [
                "predict",
                str(run),
                str(tmp_path / "nothing"),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert (
        main(["predict", str(run), str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0"])
        == 2
    )


def test_kill_during_predict_leaves_no_half_written_file(run: Path, tmp_path: Path) -> None:
    """SIGKILL mid-run: every visible output is complete; a rerun finishes and cleans up."""
    src = tmp_path / "src"
    for i in range(6):
        _brats2021(src, f"BraTS2021_{i:05d}", "ras", seed=i)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "mmlib",
        "predict",
        str(run),
        str(src),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("BraTS2021_*.nii.gz")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = list(out.glob("BraTS2021_*.nii.gz"))
    assert written, "no output before the kill"
    assert not (out / "predict.json").exists() or len(written) == 6
    for path in written:  # complete files: the whole volume decompresses
        assert np.asarray(nib.load(path).dataobj).shape == (36, 40, 32)
    assert subprocess.run(cmd, env=env, capture_output=True, check=False).returncode == 0
    assert len(list(out.glob("BraTS2021_*.nii.gz"))) == 6
    assert not list(out.glob(".*.tmp*"))


def test_isles_output_on_the_dwi_grid(run: Path, tmp_path: Path) -> None:
    """Modalities on different grids (ISLES: FLAIR finer and shifted): the output lies on the
    grid of the task's reference modality, DWI, where the lesion masks are drawn."""
    from test_layouts import make_isles

    from mmlib.tasks import get_task

    src = make_isles(tmp_path / "isles", n=1)
    (study,) = discover(src)
    model = dataclasses.replace(load_model(run, "cpu"), spec=get_task("isles"), spacing=3.0)
    prep = prepare_study(study, model)
    dwi = nib.load(study.modalities["dwi"].path)
    assert prep.reference == "dwi" and prep.native_shape == dwi.shape
    np.testing.assert_allclose(prep.native_affine, dwi.affine)
    cur = curate_study(study, spacing=3.0)
    assert cur.row["reference"] == "flair"  # curation's grid follows the widest field of view
    logits = np.where(cur.label[None] > 0, 5.0, -5.0).astype(np.float32)
    back = native_labels(logits, prep, model.spec)
    seg = np.asarray(nib.load(study.label).dataobj) > 0
    assert back.shape == seg.shape and set(np.unique(back)) <= {0, 1}
    assert 2 * ((back > 0) & seg).sum() / ((back > 0).sum() + seg.sum()) > 0.7


def test_classification_run_writes_predictions_csv(tmp_path: Path) -> None:
    import pandas as pd

    store = tiny_store(tmp_path / "store", n_seg=0, n_cls=6)
    cls = finetune(
        "smoke",
        {
            "data.store": str(store),
            "run.root": str(tmp_path / "runs"),
            "task": "hgg_lgg",
            "train.steps": 1,
        },
        progress=False,
    )
    src = tmp_path / "src"
    _brats2021(src, "BraTS2021_00020", "lps")
    _brats2021(src, "BraTS2021_00021", "ras", seed=1, skip=("t2",))
    report = predict(cls, [src], tmp_path / "out", device="cpu", progress=False)
    assert report.status == 0
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(table.columns) == ["study", "predicted", "p_LGG", "p_HGG"]
    assert list(table["study"]) == ["BraTS2021_00020", "BraTS2021_00021"]
    assert set(table["predicted"]) <= {"LGG", "HGG"}
    np.testing.assert_allclose(table[["p_LGG", "p_HGG"]].sum(axis=1), 1.0, atol=1e-5)
    assert not list((tmp_path / "out").glob("*.nii.gz"))
    assert any("missing t2" in n for n in report.notes["BraTS2021_00021"])


def test_oversized_header_reason_in_prediction(run: Path, tmp_path: Path) -> None:
    """A file whose header claims far more voxels than it holds: the reason names the file,
    the claimed shape and the byte counts (never IndexError or a bare MemoryError)."""
    from test_p14_bugs import _oversized

    src = tmp_path / "src"
    _brats2021(src, "BraTS2021_00030", "ras")
    _brats2021(src, "BraTS2021_00031", "ras", seed=1)
    _oversized(src / "BraTS2021_00031" / "BraTS2021_00031_t2.nii.gz", (2000, 2000, 2000))
    report = predict(run, [src], tmp_path / "out", device="cpu", progress=False)
    assert report.status == 3 and list(report.written) == ["BraTS2021_00030"]
    why = report.failed["BraTS2021_00031"]
    assert "BraTS2021_00031_t2.nii.gz" in why and "(2000, 2000, 2000)" in why
    assert "bytes" in why and "IndexError" not in why and "MemoryError" not in why


@pytest.mark.parametrize("mode", ["rigid", "affine"])
def test_registered_label_round_trip(run: Path, tmp_path: Path, mode: str) -> None:
    """A model whose store was registered to the template curates a new study the same way
    (the row's transform), and its predictions come back on the native grid through the
    inverse of that transform: a label taken into template space and back is the label."""
    seg = _brats2021(tmp_path, "BraTS2021_00003", "lps", seed=5)
    (study,) = discover(tmp_path)
    model = dataclasses.replace(load_model(run, "cpu"), spacing=2.0, register=mode)
    prep = prepare_study(study, model)
    cur = curate_study(study, spacing=2.0, register=mode)
    # predict registers a new study as curation does: the two transforms agree to well under a
    # voxel over the study's field of view (bit-equality would ask ITK for identical float sums
    # on every machine)
    corners = np.array([[x, y, z, 1.0] for x in (-90, 90) for y in (-110, 110) for z in (-90, 90)])
    gap = np.abs(corners @ (np.asarray(cur.row["transform"]) - prep.transform).T)[:, :3]
    assert gap.max() < 1.0, f"transforms differ by up to {gap.max():.2f} mm"
    assert not np.allclose(prep.transform, np.eye(4))
    regions = brats_regions(cur.label, "brats2021")
    logits = np.where(regions, 5.0, -5.0).astype(np.float32)
    back = native_labels(logits, prep, model.spec)
    assert back.shape == seg.shape and back.dtype == np.uint8
    assert (back == seg).mean() > 0.97
    for value in (2, 4):
        a, b = back == value, seg == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.7, value
    # without the inverse transform the labels land elsewhere (the test can fail)
    unregistered = dataclasses.replace(prep, transform=np.eye(4))
    off = native_labels(logits, unregistered, model.spec)
    assert (off == seg).mean() < (back == seg).mean()
