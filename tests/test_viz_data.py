"""mmlib.viz without a display: loaders, label schemes, layer data, the reader, the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from safetensors.numpy import save_file

from mmlib.proxy.templates import load_templates
from mmlib.runs import SAMPLE_KEYS, RunFolder, Samples, load_samples, save_samples
from mmlib.viz import layers as L
from mmlib.viz._reader import get_reader, read_nifti, read_run, read_samples, read_study
from mmlib.viz.data import load_study_folder, parse_store_entry
from mmlib.viz.labels import SCHEMES, get_scheme, scheme_for_source

SHAPE = (20, 24, 18)


def _blob(shape=SHAPE, seed=0) -> np.ndarray:
    g = np.mgrid[tuple(slice(0, s) for s in shape)].astype(np.float32)
    r = np.sqrt(sum(((g[i] - shape[i] / 2) / (shape[i] / 3)) ** 2 for i in range(3)))
    return ((r < 1) * (100.0 + 20 * seed) + np.random.default_rng(seed).random(shape)).astype(
        np.float32
    )


def write_study(
    folder: Path, names=("flair", "t1", "t1ce", "t2"), prefix="BraTS2021_00001_", affine=None
) -> Path:
    """A BraTS-style study folder of NIfTI files (4 modalities + seg with labels 1, 2, 4)."""
    folder.mkdir(parents=True, exist_ok=True)
    aff = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    for i, m in enumerate(names):
        nib.save(nib.Nifti1Image(_blob(seed=i), aff), folder / f"{prefix}{m}.nii.gz")
    seg = np.zeros(SHAPE, np.uint8)
    seg[8:12, 10:14, 7:11] = 2
    seg[9:11, 11:13, 8:10] = 4
    seg[10, 12, 9] = 1
    nib.save(nib.Nifti1Image(seg, aff), folder / f"{prefix}seg.nii.gz")
    return folder


def write_run(root: Path, steps=(10, 20), n=3, size=16, seed=0) -> Path:
    """A run folder in the engine's format: samples/step_*.npz (float16 views), checkpoints
    with templates."""
    rng = np.random.default_rng(seed)
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    for step in steps:
        target = rng.random((n, size, size, size)).astype(np.float32)
        mask = (rng.random((n, size, size, size)) < 0.8).astype(np.float32)
        arrays = {
            k: (target if k == "target" else mask if k == "mask" else target * (1 - mask)).astype(
                np.float16
            )
            for k in SAMPLE_KEYS
        }
        (root / "samples").mkdir(exist_ok=True)
        np.savez(
            root / "samples" / f"step_{step:07d}.npz",
            **arrays,
            study=np.array(["s0", "s0", "s1"][:n]),
            modality=np.array(["t1", "flair", "t2"][:n]),
            step=np.asarray(step),
            epoch=np.asarray(0),
        )
        ck = root / "checkpoints" / f"step_{step:07d}"
        ck.mkdir(exist_ok=True)
        save_file(
            {
                "templates.volumes": rng.random((8, 12, 14, 10)).astype(np.float32),
                "backbone.w": np.zeros(3, np.float32),
            },
            str(ck / "model.safetensors"),
        )
        aff = np.diag([3.0, 3.0, 3.0, 1.0])
        aff[:3, 3] = [-18, -21, -15]
        (ck / "meta.json").write_text(json.dumps({"step": step, "template_affine": aff.tolist()}))
        (ck / "train_state.pt").write_bytes(b"")  # a training checkpoint is complete with it
    (root / "checkpoints" / "latest").write_text(f"step_{steps[-1]:07d}")
    (root / "config.json").write_text("{}")
    (root / "metrics.csv").write_text(
        "step,loss,md,cmr,lr\n"
        + "".join(f"{s},{1 / (s + 1)},{0.6 / (s + 1)},{0.4 / (s + 1)},0.1\n" for s in range(25))
    )
    return root


def test_schemes_colours_and_guess() -> None:
    assert (
        SCHEMES["brats2021"].names[4] == "enhancing tumour" and 3 not in SCHEMES["brats2021"].names
    )
    assert (
        SCHEMES["brats2023"].names[3] == "enhancing tumour" and 4 not in SCHEMES["brats2023"].names
    )
    assert SCHEMES["tissue"].names == {1: "CSF", 2: "grey matter", 3: "white matter"}
    cd = SCHEMES["brats2021"].color_dict()
    assert cd[0][3] == 0.0 and cd[None] == (1.0, 0.0, 1.0, 1.0) and cd[2] != cd[1]
    assert get_scheme(None, np.array([0, 1, 2, 4])).name == "brats2021"
    assert get_scheme(None, np.array([0, 1, 2, 3])).name == "brats2023"
    assert scheme_for_source("brats2023_ped").name == "brats2023"
    assert scheme_for_source("mrbrains13").name == "tissue"
    assert scheme_for_source("brats2021").name == "brats2021"
    lut = SCHEMES["brats2021"].lut()
    assert lut.shape == (5, 4) and lut[3, 3] == 0 and lut[4, 3] == 1


def test_unknown_scheme_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="scheme: unknown label scheme 'bratz'"):
        get_scheme("bratz")


def test_study_folder_modalities_labels_and_affine(tmp_path: Path) -> None:
    st = load_study_folder(write_study(tmp_path / "BraTS2021_00001"))
    assert st.name == "BraTS2021_00001"
    assert st.modalities == ["flair", "t1", "t1c", "t2"]  # template order, t1ce -> t1c
    assert st.label is not None and set(np.unique(st.label.data)) == {0, 1, 2, 4}
    assert st.images["t1"].data.shape == SHAPE and st.images["t1"].spacing == (2.0, 2.0, 2.0)


def test_study_folder_brats2023_names_and_reorientation(tmp_path: Path) -> None:
    lps = np.diag([-1.5, -1.5, 1.5, 1.0])  # an LPS file: flipped x and y
    folder = write_study(
        tmp_path / "BraTS-GLI-00002-000",
        names=("t1c", "t1n", "t2f", "t2w"),
        prefix="BraTS-GLI-00002-000-",
        affine=lps,
    )
    st = load_study_folder(folder)
    assert st.modalities == ["flair", "t1", "t1c", "t2"]
    aff = st.images["t1"].affine
    assert np.all(np.diag(aff)[:3] > 0), "volumes must be re-oriented to RAS"
    raw = _blob(seed=1)  # t1n was written second
    np.testing.assert_allclose(st.images["t1"].data, raw[::-1, ::-1, :])


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no NIfTI file with a modality"):
        load_study_folder(tmp_path)


def test_samples_round_trip_and_lookup(tmp_path: Path) -> None:
    arrays = {
        k: np.random.default_rng(0).random((2, 8, 8, 8)).astype(np.float32) for k in SAMPLE_KEYS
    }
    path = save_samples(
        tmp_path / "samples" / "step_0000042.npz", Samples(arrays, ["a", "b"], ["t1", "t2"])
    )
    s = load_samples(path)
    assert s.step == 42 and len(s) == 2 and s.index("b") == 1 and s.index(modality="t1") == 0
    np.testing.assert_allclose(s.entry(1)["recon_a"], arrays["recon_a"][1])
    with pytest.raises(KeyError, match="no entry for study='c'"):
        s.index("c")


def test_samples_file_without_ids_is_rejected(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", target=np.zeros((1, 4, 4, 4)))
    with pytest.raises(ValueError, match="needs 'study' and 'modality'"):
        load_samples(tmp_path / "x.npz")


def test_run_folder_steps_samples_templates(tmp_path: Path) -> None:
    run = RunFolder(write_run(tmp_path / "pretrain" / "r1"))
    assert run.name == "pretrain/r1"
    assert run.steps() == [10, 20] == run.sample_steps() == run.checkpoint_steps()
    s = run.samples()
    assert (
        s.step == 20
        and s.arrays["target"].dtype == np.float32
        and s.arrays["target"].shape == (3, 16, 16, 16)
    )
    t = load_templates(run.checkpoint(10))
    assert t.volumes.shape == (8, 12, 14, 10) and t.affine[0, 0] == 3.0
    assert run.checkpoint().name == "step_0000020"
    assert list(run.metrics().columns) == ["step", "loss", "md", "cmr", "lr"]
    with pytest.raises(FileNotFoundError, match="no samples for step 15"):
        run.samples(15)
    with pytest.raises(NotADirectoryError, match="not a run folder"):
        RunFolder(tmp_path)


def test_templates_need_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_templates(tmp_path)
    save_file({"backbone.w": np.zeros(2, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match="no 'templates.volumes'"):
        load_templates(tmp_path)


def test_transform_kwargs_diagonal_and_oblique() -> None:
    aff = np.diag([2.0, 3.0, 4.0, 1.0])
    aff[:3, 3] = [1, 2, 3]
    assert L.transform_kwargs(aff) == {"scale": (2.0, 3.0, 4.0), "translate": (1.0, 2.0, 3.0)}
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.eye(4)
    rot[:2, :2] = [[c, -s], [s, c]]
    oblique = rot @ aff
    kw = L.transform_kwargs(oblique)
    assert np.allclose(kw["scale"], (2.0, 3.0, 4.0))
    # napari maps data -> world as affine @ (scale, translate): that must be the NIfTI affine
    np.testing.assert_allclose(kw["affine"] @ np.diag([*kw["scale"], 1.0]), oblique, atol=1e-12)


def test_study_layer_data_names_shapes_scales(tmp_path: Path) -> None:
    data = L.study_layers(write_study(tmp_path / "BraTS2021_00001"))
    names = [kw["name"] for _, kw, _ in data]
    assert names == [f"BraTS2021_00001/{m}" for m in ("flair", "t1", "t1c", "t2")] + [
        "BraTS2021_00001/segmentation"
    ]
    assert [kind for *_, kind in data] == ["image"] * 4 + ["labels"]
    for arr, kw, _ in data:
        assert arr.shape == SHAPE and kw["scale"] == (2.0, 2.0, 2.0) and kw["units"] == "mm"
    seg = data[-1][1]
    assert seg["metadata"]["mmlib"]["scheme"] == "brats2021"
    assert dict(zip(seg["features"]["index"], seg["features"]["name"]))[4] == "enhancing tumour"
    grid = L.study_layers(write_study(tmp_path / "BraTS2021_00001"), grid=True)
    assert [kind for *_, kind in grid] == ["image", "labels"] * 4
    assert grid[1][0] is grid[3][0], "grid copies of the segmentation share one array"


def test_sample_and_template_layer_data(tmp_path: Path) -> None:
    run = RunFolder(write_run(tmp_path / "r"))
    data = L.sample_layers(run.samples(), study="s1", spacing=(2, 2, 2))
    assert [kw["name"] for _, kw, _ in data] == [f"s1/t2: {k}" for k in SAMPLE_KEYS]
    assert all(a.shape == (16, 16, 16) and kw["scale"] == (2.0, 2.0, 2.0) for a, kw, _ in data)
    views = {k: np.zeros((2, 1, 8, 9, 10), np.float32) for k in ("target", "recon_a")}
    plain = L.sample_layers(views, index=1)
    assert [kw["name"] for _, kw, _ in plain] == ["target", "recon_a"] and plain[0][0].shape == (
        8,
        9,
        10,
    )
    tpl = L.template_layers(load_templates(run.checkpoint()))
    assert (
        len(tpl) == 8
        and tpl[0][1]["name"] == "template/flair"
        and tpl[0][1]["scale"] == (3.0, 3.0, 3.0)
    )
    # to float rounding: the scaling is one fused multiply-add, (x * inv + off)
    assert abs(tpl[0][0].min()) < 1e-6 and abs(tpl[0][0].max() - 1.0) < 1e-6, (
        "templates are min-max scaled as they are used"
    )
    with pytest.raises(ValueError, match=r"expected volumes \(M, X, Y, Z\)"):
        L.as_templates(np.zeros((4, 4, 4)))


def test_reader_picks_by_path(tmp_path: Path) -> None:
    study = write_study(tmp_path / "BraTS2021_00001")
    run = write_run(tmp_path / "runs" / "r")
    assert get_reader(str(study)) is read_study
    assert get_reader(str(run)) is read_run
    assert get_reader([str(run / "samples" / "step_0000010.npz")]) is read_samples
    assert get_reader(str(study / "BraTS2021_00001_seg.nii.gz")) is read_nifti
    assert get_reader(str(tmp_path / "runs")) is None
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    assert get_reader(str(tmp_path / "other.npz")) is None
    seg = read_nifti(str(study / "BraTS2021_00001_seg.nii.gz"))
    assert seg[0][2] == "labels" and seg[0][1]["scale"] == (2.0, 2.0, 2.0)
    assert [kw["name"] for _, kw, _ in read_run(str(run))][0] == "s0/t1: target"


def test_parse_store_entry() -> None:
    assert parse_store_entry(".mmlib/demo/store::BraTS2021_00000") == (
        Path(".mmlib/demo/store"),
        "BraTS2021_00000",
    )
    assert parse_store_entry("some/folder") is None


def test_manifest_validates_and_imports() -> None:
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("mmlib")
    pm.validate_imports()
    assert {c.id for c in pm.contributions.commands} == {
        "mmlib.get_reader",
        "mmlib.run_browser",
        "mmlib.mni152",
    }
    assert pm.contributions.readers[0].accepts_directories
    assert [w.display_name for w in pm.contributions.widgets] == ["Run browser"]


def test_plugin_core_imports_no_qt() -> None:
    code = (
        "import sys, mmlib.viz.napari, mmlib.viz.layers, mmlib.viz._reader, "
        "mmlib.viz._sample_data, "
        "mmlib.viz.widgets, mmlib.viz.plots, mmlib.cli.view\n"
        "qt = [m for m in sys.modules if m.split('.')[0] in "
        "('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy')]\n"
        "assert not qt, qt"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_view_cli_rejects_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmlib.cli import main

    assert main(["view", str(tmp_path / "nothing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_mni_sample_data_has_tissue_labels() -> None:
    from mmlib.viz.data import mni_study

    st = mni_study(step=4)
    assert st.images["t1"].data.shape == (50, 59, 48) and st.images["t1"].spacing == (4.0, 4.0, 4.0)
    assert set(np.unique(st.label.data)) == {0, 1, 2, 3} and st.scheme == "tissue"
    wm, gm = (st.label.data == 3).sum(), (st.label.data == 2).sum()
    assert 0.3 < wm / gm < 3.0  # both tissues present in anatomical proportions


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("BraTS2021_00000_t1ce.nii.gz", "t1c"),
        ("BraTS-MEN-00001-000-t2f.nii.gz", "flair"),
        ("BraTS-PED-00001-000-seg.nii.gz", "label"),
        ("sub-strokecase0001_ses-0001_adc.nii.gz", "adc"),
        ("sub-strokecase0001_ses-0001_msk.nii.gz", "label"),
        ("IXI002-Guys-0828-MRA.nii.gz", "mra"),
        ("IXI002-Guys-0828-PD.nii", "pd"),
        ("UCSF-PDGM-0004_T1c.nii.gz", "t1c"),
        ("notes_brain.nii.gz", None),
    ],
)
def test_file_roles(name: str, role: str | None) -> None:
    from mmlib.viz.data import _role

    assert _role(Path(name)) == role


def test_samples_spacing_is_used_when_recorded(tmp_path: Path) -> None:
    arrays = {"target": np.zeros((2, 4, 4, 4), np.float32)}
    spacing = np.array([[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]])
    path = save_samples(
        tmp_path / "step_0000001.npz", Samples(arrays, ["a", "b"], ["t1", "t1"], spacing=spacing)
    )
    s = load_samples(path)
    np.testing.assert_allclose(s.spacing, spacing)
    assert L.sample_layers(s, index=1)[0][1]["scale"] == (4.0, 4.0, 4.0)
    assert L.sample_layers(s, index=1, spacing=(1, 1, 3))[0][1]["scale"] == (1.0, 1.0, 3.0)
    assert (
        load_samples(
            save_samples(tmp_path / "step_0000002.npz", Samples(arrays, ["a", "b"], ["t1", "t1"]))
        ).spacing
        is None
    )


def test_surface_layer_data_per_label(tmp_path: Path) -> None:
    st = load_study_folder(write_study(tmp_path / "BraTS2021_00001"))
    surfs = L.surface_layers(st.label)
    assert [kw["name"].split(": ")[1] for _, kw, _ in surfs] == [
        "necrotic / non-enhancing core",
        "oedema",
        "enhancing tumour",
    ]
    (verts, faces), kw, kind = surfs[2]
    assert kind == "surface" and verts.shape[1] == 3 and faces.max() < len(verts)
    assert verts.min(axis=0).tolist() == pytest.approx(
        [8.5, 10.5, 7.5]
    )  # the enhancing box 9..10, 11..12, 8..9
    assert verts.max(axis=0).tolist() == pytest.approx([10.5, 12.5, 9.5])
    np.testing.assert_allclose(kw["vertex_colors"][0], SCHEMES["brats2021"].colors[4])
    assert kw["scale"] == (2.0, 2.0, 2.0)


def test_with_label_overlays_a_prediction_on_the_native_grid(tmp_path: Path) -> None:
    from mmlib.viz.data import with_label

    aff = np.diag([-2.0, -2.0, 2.0, 1.0])  # LPS on disk: the prediction is read the same way
    study = load_study_folder(write_study(tmp_path / "s", affine=aff))
    pred = np.zeros(SHAPE, np.uint8)
    pred[2:5, 3:6, 4:7] = 3
    nib.save(nib.Nifti1Image(pred, aff), tmp_path / "s.nii.gz")
    shown = with_label(study, tmp_path / "s.nii.gz")
    assert shown.label is not None and int(shown.label.data.sum()) == 3 * 27
    assert study.label is not None and int(study.label.data.max()) == 4  # the original is kept
    np.testing.assert_allclose(shown.label.affine, study.images["t1"].affine)
    nib.save(nib.Nifti1Image(pred[:-1], aff), tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match="does not match"):
        with_label(study, tmp_path / "bad.nii.gz")
