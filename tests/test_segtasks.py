"""The segmentation tasks of issue 16: BraTS 2023 MET, UPENN-GBM and VS-Seg, from the readers of
their distributed layouts through the embedded cohort to a smoke fine-tuning run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mmlib.data.layouts import detect_layout, discover, find_studies
from mmlib.data.phantom.anatomy import load_anatomy
from mmlib.data.phantom.cohort import cohort_spec, make_subject, upenn_manual
from mmlib.data.phantom.lesions import IAC_MNI, random_lesion
from mmlib.tasks import get_task

torch.set_num_threads(1)

OURS = ("brats2023_met", "upenn_gbm", "vs_seg")


def save(path: Path, data: np.ndarray, spacing: tuple[float, ...] = (3.0, 3.0, 3.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -np.array(data.shape) * np.array(spacing) / 2
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return path


def blob(shape=(20, 22, 18), value=1, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    c = rng.integers(6, 12, 3)
    lab[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2] = value
    return lab


def image(seed=0, shape=(20, 22, 18)) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(100, 900, shape)).astype(np.int16)


# ------------------------------------------------------------------------------------ readers


def make_upenn(root: Path) -> Path:
    """UPENN-GBM's NIfTI-files folder: two baselines (one with a manual segmentation), a
    follow-up without any, a segmentation whose scan is missing, a clinical row without images,
    and a stray file in a scan folder."""
    base = root / "NIfTI-files"
    for i, sid in enumerate(("UPENN-GBM-00001_11", "UPENN-GBM-00002_11", "UPENN-GBM-00002_21")):
        for series in ("T1", "T1GD", "T2", "FLAIR"):
            save(base / "images_structural" / sid / f"{sid}_{series}.nii.gz", image(i))
    save(base / "images_structural/UPENN-GBM-00002_11/UPENN-GBM-00002_11_DSC.nii.gz", image(9))
    for sid in ("UPENN-GBM-00001_11", "UPENN-GBM-00002_11", "UPENN-GBM-00003_11"):
        save(base / f"automated_segm/{sid}_automated_approx_segm.nii.gz", blob(value=4))
    save(base / "images_segm/UPENN-GBM-00001_11_segm.nii.gz", blob(value=2))
    (base / "UPENN-GBM_clinical_info_v2.1.csv").write_text(
        "ID,Gender,Age_at_scan_years,IDH1\n"
        "UPENN-GBM-00001_11,F,52.3,Wildtype\n"
        "UPENN-GBM-00002_11,M,61,NOS/NEC\n"
        "UPENN-GBM-00004_11,M,70,Wildtype\n"
    )
    return root


def test_upenn_gbm_reader(tmp_path: Path) -> None:
    root = make_upenn(tmp_path / "UPENN-GBM")
    assert detect_layout(root) == "upenn_gbm" == detect_layout(root / "NIfTI-files")
    studies = {s.study: s for s in find_studies(root)}
    assert set(studies) == {
        "UPENN-GBM-00001_11",
        "UPENN-GBM-00002_11",
        "UPENN-GBM-00002_21",
        "UPENN-GBM-00003_11",
        "UPENN-GBM-00004_11",
    }
    one = studies["UPENN-GBM-00001_11"]
    assert list(one.modalities) == ["flair", "t1", "t1c", "t2"] and not one.problems
    assert one.label is not None and one.label.endswith(
        "images_segm/UPENN-GBM-00001_11_segm.nii.gz"
    )
    assert one.attrs["segmentation"] == "manual" and one.attrs["timepoint"] == "11"
    assert one.attrs["Gender"] == "F" and one.attrs["Age_at_scan_years"] == 52.3
    assert one.label_values == (0, 1, 2, 4)
    two = studies["UPENN-GBM-00002_11"]
    assert two.attrs["segmentation"] == "automated"
    assert two.label is not None and "automated_segm" in two.label
    assert len(two.problems) == 1 and "_DSC.nii.gz: not one of UPENN-GBM's" in two.problems[0]
    assert "no segmentation" in studies["UPENN-GBM-00002_21"].problems[0]
    assert "segmentation without images" in studies["UPENN-GBM-00003_11"].problems[0]
    assert "in the clinical table but has no images" in studies["UPENN-GBM-00004_11"].problems[0]
    for st in studies.values():
        assert all("\n" not in p for p in st.problems)
    with pytest.raises(ValueError, match="images_structural"):
        find_studies(tmp_path, layout="upenn_gbm")


def make_vs(root: Path) -> Path:
    """VS-Seg after its conversion script: unregistered (vs_gk_1, with an extra structure),
    registered to T1 (vs_gk_2), one without a segmentation (vs_gk_10), one stray file."""
    t1, t2 = (0.5, 0.5, 1.5), (0.6, 0.6, 1.0)
    a = root / "vs_gk_1"
    save(a / "vs_gk_t1_refT1.nii.gz", image(1, (40, 40, 12)), t1)
    save(a / "vs_gk_t2_refT2.nii.gz", image(2, (30, 30, 16)), t2)
    save(a / "vs_gk_seg_refT1.nii.gz", blob((40, 40, 12)), t1)
    save(a / "vs_gk_seg_refT2.nii.gz", blob((30, 30, 16)), t2)
    save(a / "vs_gk_struc2_cochlea_refT1.nii.gz", blob((40, 40, 12)), t1)
    b = root / "vs_gk_2"
    save(b / "vs_gk_t1_refT1.nii.gz", image(3, (40, 40, 12)), t1)
    save(b / "vs_gk_t2_refT1.nii.gz", image(4, (40, 40, 12)), t1)
    save(b / "vs_gk_seg_refT1.nii.gz", blob((40, 40, 12)), t1)
    save(b / "notes.nii.gz", image(5, (4, 4, 4)))
    c = root / "vs_gk_10"
    save(c / "vs_gk_t1_refT1.nii.gz", image(6, (40, 40, 12)), t1)
    save(c / "vs_gk_t2_refT2.nii.gz", image(7, (30, 30, 16)), t2)
    return root


def test_vs_seg_reader(tmp_path: Path) -> None:
    root = make_vs(tmp_path / "VS")
    assert detect_layout(root) == "vs_seg"
    studies = find_studies(root)
    assert [s.study for s in studies] == ["vs_gk_1", "vs_gk_10", "vs_gk_2"]
    one, ten, two = studies
    assert list(one.modalities) == ["t1c", "t2"] and not one.problems  # T1 is contrast-enhanced
    assert one.label is not None and one.label.endswith("vs_gk_seg_refT1.nii.gz")
    assert one.modalities["t2"].path.endswith("vs_gk_t2_refT2.nii.gz")
    assert two.modalities["t2"].path.endswith("vs_gk_t2_refT1.nii.gz")
    assert len(two.problems) == 1 and "notes.nii.gz: not a VS-Seg file" in two.problems[0]
    assert ten.label is None and "no tumour segmentation" in ten.problems[0]
    assert one.label_values == (0, 1)
    raw = tmp_path / "raw"
    (raw / "vs_gk_1_t1").mkdir(parents=True)
    (raw / "vs_gk_1_t2").mkdir()
    with pytest.raises(ValueError, match="data_conversion.py"):
        find_studies(raw, layout="vs_seg")


def test_brats_met_nested_in_the_challenge_folder(tmp_path: Path) -> None:
    top = tmp_path / "met" / "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData"
    sid = "BraTS-MET-00005-000"
    for name in ("t1c", "t1n", "t2f", "t2w"):
        save(top / sid / f"{sid}-{name}.nii.gz", image(1))
    seg = blob(value=3) + blob(seed=3, value=1)
    save(top / sid / f"{sid}-seg.nii.gz", seg.astype(np.uint8))
    [st] = find_studies(tmp_path / "met")
    assert st.layout == "brats2023" and st.attrs["subset"] == "MET" and not st.problems
    assert st.label_values == (0, 1, 2, 3) and list(st.modalities) == ["flair", "t1", "t1c", "t2"]


# ------------------------------------------------------------------------------- the cohort


def test_metastases_and_schwannomas_are_drawn_where_they_occur() -> None:
    anatomy = load_anatomy(4)
    spec = {s.name: s for s in cohort_spec("smoke").sources}
    for i in (1, 2):
        subject, _ = make_subject(spec["brats2023_met"], i, 0, anatomy)
        kinds = {les.kind for les in subject.lesions}
        assert kinds == {"metastasis"} and len(subject.lesions) == subject.attrs["n_lesions"] >= 2
        assert all(les.enhancing and 0 < les.core < 1 for les in subject.lesions)
    rng = np.random.default_rng(0)
    for _ in range(3):
        les = random_lesion("schwannoma", rng, anatomy, 1.5)
        target = np.array(IAC_MNI) * np.array([np.sign(les.center[0]) * -1, 1, 1])
        assert np.linalg.norm(les.center - target) < 12.0
        assert les.core == 1.0 and les.necrosis == 0.0  # one solid tumour label, no oedema
    assert upenn_manual(1) and not upenn_manual(2)


@pytest.fixture(scope="module")
def smoke_store() -> Path:
    from mmlib.data import ensure_store

    return ensure_store("smoke", progress=False)


def test_cohort_writes_the_real_layouts_and_curates(smoke_store: Path) -> None:
    from mmlib.data.store import Store
    from mmlib.paths import work_dir

    cohort = work_dir("smoke") / "cohort"
    meta = {s["name"]: s for s in json.loads((cohort / "cohort.json").read_text())["sources"]}
    studies = [s for s in discover(cohort) if s.source in OURS]
    assert {s.source for s in studies} == set(OURS)
    assert not [s.problems for s in studies if s.problems]
    by = {name: [s for s in studies if s.source == name] for name in OURS}
    for s in by["brats2023_met"]:
        assert s.study.startswith("BraTS-MET-") and s.label and s.label.endswith("-seg.nii.gz")
    upenn = cohort / meta["upenn_gbm"]["path"]
    assert (upenn / "UPENN-GBM_clinical_info_v2.1.csv").is_file()
    assert {s.attrs["segmentation"] for s in by["upenn_gbm"]} == {"manual", "automated"}
    for s in by["upenn_gbm"]:
        assert (upenn / "automated_segm" / f"{s.study}_automated_approx_segm.nii.gz").is_file()
        assert s.attrs["Gender"] in ("F", "M")
    vs = cohort / meta["vs_seg"]["path"]
    for s in by["vs_seg"]:
        t1, t2 = (nib.load(s.modalities[m].path) for m in ("t1c", "t2"))
        assert t1.shape != t2.shape  # each on its own grid
        zooms = t1.header.get_zooms()
        assert max(zooms) / min(zooms) > 3  # strongly anisotropic
        assert (vs / s.study / "vs_gk_seg_refT2.nii.gz").is_file()
        assert np.unique(np.asarray(nib.load(s.label).dataobj)).tolist() == [0, 1]
    assert meta["vs_seg"]["label_names"] == {"1": "vestibular schwannoma"}
    assert meta["brats2023_met"]["label_names"]["2"].endswith("(SNFH)")
    store = Store(smoke_store)
    tasks = set(store.manifest["task"].dropna())
    assert {"brats_met", "upenn_gbm", "vs_seg"} <= tasks


def test_smoke_finetune_of_each_task(smoke_store: Path, tmp_path: Path) -> None:
    from mmlib.evaluate.grid import finetune_grid

    for name, regions in (
        ("brats_met", ("TC", "WT", "ET")),
        ("upenn_gbm", ("TC", "WT", "ET")),
        ("vs_seg", ("tumour",)),
    ):
        assert get_task(name).regions is not None
        [run] = finetune_grid(
            "smoke",
            ["scratch"],
            [1.0],
            [0],
            {"task": name, "run.root": str(tmp_path), "train.steps": 2},
            progress=False,
        )
        res = json.loads((run / "results.json").read_text())
        assert res["task"] == name and res["steps"] == 2 and res["n_test"] >= 1
        for r in regions:
            assert 0.0 <= res["test"][f"dice_{r}"] <= 1.0
            assert f"lesion_f1_{r}" in res["test"] and f"fn_{r}" in res["test"]
