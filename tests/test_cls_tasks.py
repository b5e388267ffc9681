"""The multi-site T1 classification tasks: ADHD-200, ABIDE I and ADNI layouts as distributed,
their embedded sources (site effects, group effects, messy table entries) and fine-tuning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mmlib.data.layouts import detect_layout, discover, find_studies
from mmlib.data.phantom import cohort_spec, make_cohort, only
from mmlib.data.phantom.anatomy import load_anatomy
from mmlib.data.phantom.cohort import GROUP_EFFECTS, cls_extras, grid_groups, make_subject
from mmlib.tasks import TASKS, get_task

SMOKE = cohort_spec("smoke")
SRC = {s.name: s for s in SMOKE.sources}


def _nii(path: Path, gz: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), path)


def _csv(path: Path, header: str, *rows: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")


ADHD_HEADER = "ScanDir ID,Site,Gender,Age,Handedness,DX,Secondary Dx ,QC_Anatomical_1"


def make_adhd200(root: Path) -> Path:
    """Two sites as the FCP/INDI release writes them, with every kind of unusable entry."""
    for sid in ("0010001", "0010002", "0010003"):
        _nii(root / "NYU" / sid / "session_1" / "anat_1" / "mprage.nii.gz")
    _nii(root / "NYU" / "0010001" / "session_2" / "anat_1" / "mprage.nii.gz")
    _nii(root / "KKI" / "1018959" / "session_1" / "anat_1" / "mprage.nii.gz")
    _nii(root / "KKI" / "1018960" / "session_1" / "anat_1" / "mprage.nii.gz")
    _nii(root / "Brown" / "0026001" / "session_1" / "anat_1" / "mprage.nii.gz")
    _csv(
        root / "NYU" / "NYU_phenotypic.csv",
        ADHD_HEADER,
        "10001,5,1,9.5,1,0,,1",  # TDC
        "10002,5,0,11.2,1,3,,1",  # ADHD-Inattentive
        "10003,9,1,10.0,1,1,,1",  # unknown site code
        "10004,5,1,12.0,1,0,,1",  # no images
    )
    _csv(root / "KKI" / "KKI_phenotypic.csv", ADHD_HEADER, "1018959,3,1,8.8,1,1,,1")
    _csv(root / "Brown" / "Brown_phenotypic.csv", ADHD_HEADER, "26001,2,1,13.0,1,pending,,1")
    return root


def make_abide(root: Path) -> Path:
    for site, sid in (("PITT", "0050002"), ("PITT", "0050003"), ("NYU", "0050952")):
        _nii(root / site / sid / "session_1" / "anat_1" / "mprage.nii.gz")
    _nii(root / "NYU" / "0050999" / "session_1" / "anat_1" / "mprage.nii.gz")  # no row
    _csv(
        root / "Phenotypic_V1_0b.csv",
        "SITE_ID,SUB_ID,DX_GROUP,DSM_IV_TR,AGE_AT_SCAN,SEX",
        "PITT,50002,1,1,16.77,1",
        "PITT,50003,2,0,24.45,2",
        "MARS,50952,1,1,11.0,1",  # unknown site
        "NYU,50953,2,0,10.0,1",  # no images
    )
    return root


def make_adni(root: Path) -> Path:
    base = root / "ADNI"
    for ptid, desc, date, image in (
        ("002_S_0295", "MPRAGE", "2006-04-18_08_20_30.0", 13722),
        ("002_S_0295", "MPRAGE", "2007-05-25_08_20_30.0", 55000),  # later visit: not used
        ("011_S_0002", "MP-RAGE", "2005-08-26_08_45_00.0", 7025),
        ("011_S_0002", "Axial_FLAIR", "2005-08-26_08_45_00.0", 7026),  # not T1: skipped
        ("023_S_0031", "MPRAGE", "2005-10-12_09_00_00.0", 9000),  # AD: not the task's
        ("127_S_0001", "MPRAGE", "2006-01-01_09_00_00.0", 9999),  # not in the CSV
    ):
        name = f"ADNI_{ptid}_MR_{desc}_br_raw_20060418193713091_1_S13408_I{image}.nii"
        _nii(base / ptid / desc / date / f"I{image}" / name)
    _csv(
        root / "MCI_NC_12_02_2026.csv",
        "Image Data ID,Subject,Group,Sex,Age,Visit,Modality,Description,Type,Acq Date,Format,"
        "Downloaded",
        "I13722,002_S_0295,CN,M,85,sc,MRI,MPRAGE,Original,4/18/2006,NiFTI,",
        "I55000,002_S_0295,CN,M,86,m12,MRI,MPRAGE,Original,5/25/2007,NiFTI,",
        "I7025,011_S_0002,LMCI,M,74,sc,MRI,MP-RAGE,Original,8/26/2005,NiFTI,",
        "I9000,023_S_0031,AD,F,77,sc,MRI,MPRAGE,Original,10/12/2005,NiFTI,",
        "I8000,033_S_0001,MCI,F,70,sc,MRI,MPRAGE,Original,1/1/2006,NiFTI,",  # no images
    )
    return root


def _by_id(studies: list) -> dict:
    return {s.study: s for s in studies}


def test_adhd200_as_distributed(tmp_path: Path) -> None:
    root = make_adhd200(tmp_path / "ADHD200")
    assert detect_layout(root) == "adhd200"
    st = _by_id(find_studies(root))
    assert set(st) == {"NYU_0010001", "NYU_0010002", "NYU_0010003", "NYU_0010004",
                       "KKI_1018959", "KKI_1018960", "Brown_0026001"}  # fmt: skip
    tdc, adhd = st["NYU_0010001"], st["NYU_0010002"]
    assert not tdc.problems and tdc.attrs["diagnosis"] == "TDC" and tdc.attrs["site"] == "NYU"
    assert tdc.modalities["t1"].path.endswith("session_1/anat_1/mprage.nii.gz")
    assert tdc.attrs["anat_scans"] == 2 and tdc.attrs["sex"] == "M"
    assert adhd.attrs["diagnosis"] == "ADHD" and adhd.attrs["dx_subtype"] == "ADHD-Inattentive"
    assert st["KKI_1018959"].attrs["diagnosis"] == "ADHD" and not st["KKI_1018959"].problems
    reasons = {k: " ".join(s.problems) for k, s in st.items() if s.problems}
    assert set(reasons) == {"NYU_0010003", "NYU_0010004", "KKI_1018960", "Brown_0026001"}
    assert "unknown Site code" in reasons["NYU_0010003"]
    assert "has no image" in reasons["NYU_0010004"]
    assert "no row" in reasons["KKI_1018960"]
    assert "'pending'" in reasons["Brown_0026001"]
    assert all("\n" not in r for r in reasons.values())


def test_abide_as_distributed(tmp_path: Path) -> None:
    root = make_abide(tmp_path / "ABIDE")
    assert detect_layout(root) == "abide"
    st = _by_id(find_studies(root))
    assert st["PITT_0050002"].attrs["diagnosis"] == "Autism"
    assert st["PITT_0050003"].attrs["diagnosis"] == "Control"
    assert st["PITT_0050003"].attrs["sex"] == "F" and not st["PITT_0050003"].problems
    assert "unknown SITE_ID 'MARS'" in st["MARS_0050952"].problems[0]
    assert "no row" in st["NYU_0050999"].problems[0]
    assert "has no image" in st["NYU_0050953"].problems[0]


def test_adni_as_downloaded(tmp_path: Path) -> None:
    root = make_adni(tmp_path / "adni_download")
    assert detect_layout(root) == "adni"
    st = _by_id(find_studies(root))
    nc, mci = st["002_S_0295"], st["011_S_0002"]
    assert nc.attrs["group"] == "NC" and nc.attrs["image_id"] == "I13722"  # baseline scan
    assert nc.attrs["t1_images"] == 2 and nc.attrs["site"] == "002" and not nc.problems
    assert mci.attrs["group"] == "MCI" and mci.attrs["adni_group"] == "LMCI"
    assert list(mci.modalities) == ["t1"] and "MP-RAGE" in mci.modalities["t1"].path
    assert "not part of the MCI vs NC task" in st["023_S_0031"].problems[0]
    assert "not in the collection CSV" in st["127_S_0001"].problems[0]
    assert "no T1 image" in st["033_S_0001"].problems[0]


def test_tasks_and_alias() -> None:
    assert get_task("atrophy") is TASKS["adni"] and get_task("ADNI") is TASKS["adni"]
    assert get_task("ADHD-200") is TASKS["adhd200"] and get_task("ABIDE-I") is TASKS["abide"]
    for name, cls in (("adni", ("NC", "MCI")), ("adhd200", ("TDC", "ADHD"))):
        assert TASKS[name].classes == cls and TASKS[name].modalities == ("t1",)
    assert TASKS["abide"].classes == ("Control", "Autism")


def test_group_effects_are_small_and_documented() -> None:
    anatomy = load_anatomy(SMOKE.factor)
    for name, key, bigger in (("adhd200", 1, "ADHD"), ("abide", 0, "Autism")):
        src = replace(SRC[name], n_subjects=12, messy=False)
        by = {c: [] for c in src.classes}
        for i in range(1, 13):
            subject, _ = make_subject(src, i, 0, anatomy)
            value = (subject.ventricle_shift, subject.thinning)[key]
            by[str(subject.attrs["diagnosis"])].append(value)
        other = next(c for c in src.classes if c != bigger)
        assert len(by[bigger]) == len(by[other]) == 6
        assert np.mean(by[bigger]) > np.mean(by[other])
        lo, hi = GROUP_EFFECTS[bigger][key]
        olo, ohi = GROUP_EFFECTS[other][key]
        assert lo < ohi and olo < hi  # the ranges overlap: no subject is classified by eye
        assert hi - lo < 2 * (GROUP_EFFECTS["MCI"][key][1] - GROUP_EFFECTS["MCI"][key][0]) + 1


def test_sites_write_their_own_grids() -> None:
    src = SRC["abide"]
    grids = {grid_groups(src, SMOKE.factor, i)[0][0] for i in range(1, 5)}
    assert len(grids) == 4  # four sites, four scanners
    assert {"".join(g.axcodes) for g in grids} >= {"LPS", "LIP"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = only(SMOKE, "adni", "adhd200", "abide")
    # messy: the unusable table entries real multi-site data hold (the default cohort has none,
    # so that `mmlib curate` reads it without problems)
    spec = replace(spec, sources=tuple(replace(s, n_subjects=4, messy=True) for s in spec.sources))
    return make_cohort(spec, tmp_path_factory.mktemp("cls") / "cohort", workers=2)


def test_embedded_sources_are_read_with_their_expected_problems(cohort: Path) -> None:
    meta = json.loads((cohort / "cohort.json").read_text())
    studies = discover(cohort)
    for entry in meta["sources"]:
        src = replace(SRC[entry["name"]], n_subjects=4, messy=True)
        mine = [s for s in studies if s.source == entry["name"]]
        expected = entry["expected_problems"]
        assert set(expected.values()) == set(cls_extras(src).values())
        assert {s.study for s in mine if s.problems} == set(expected), entry["name"]
        good = [s for s in mine if not s.problems]
        assert len(good) == 4
        classes = [s.attrs[entry["class_column"]] for s in good]
        assert sorted(classes) == sorted(entry["classes"] * 2)
        assert len({s.attrs["site"] for s in good}) >= 3  # multi-site
    assert (cohort / "ADHD-200" / "NYU" / "NYU_phenotypic.csv").is_file()
    assert (cohort / "ABIDE-I" / "Phenotypic_V1_0b.csv").is_file()
    assert list((cohort / "ADNI" / "ADNI").glob("*_S_*/MPRAGE/*/I*/ADNI_*_MR_MPRAGE_*.nii"))


@pytest.mark.slow
def test_curate_and_finetune_each_task_at_smoke(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmlib.cli import main

    store = tmp_path / "store"
    code = main(["curate", "--out", str(store), "--spacing", "4", "--quiet", str(cohort)])
    out = capsys.readouterr().out
    assert code == 3 and out.count("FAILED") == 6  # exactly the two messy entries per source
    for task in ("adhd200", "abide", "atrophy"):
        args = ["finetune", "--config", "smoke", "--task", task, "--init", "scratch"]
        args += ["--seeds", "0", "--no-progress", f"data.store={store}", f"run.root={tmp_path}"]
        assert main([*args, "train.steps=2"]) == 0, task
        [res] = [
            json.loads(p.read_text())
            for p in tmp_path.rglob("results.json")
            if json.loads(p.read_text()).get("task") == get_task(task).name
        ]
        assert res["kind"] == "classification" and res["n_test"] >= 2
