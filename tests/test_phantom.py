"""The embedded cohort: contrasts, lesions, layouts, determinism, reuse and bad specs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mmlib.data.phantom import (
    CohortSpec,
    cohort_spec,
    make_cohort,
    only,
    simulate_study,
    validate_spec,
    with_counts,
)
from mmlib.data.phantom import writers as W
from mmlib.data.phantom.cohort import grid_groups, study_id

SMOKE = cohort_spec("smoke")
SRC = {s.name: s for s in SMOKE.sources}
F = SMOKE.factor


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort("smoke", tmp_path_factory.mktemp("cohort") / "c", seed=0, workers=2)


def _pure(r, name: str, thr: float = 0.8) -> np.ndarray:
    return r.fraction(name) >= thr


def _median(img: np.ndarray, mask: np.ndarray) -> float:
    assert mask.sum() > 5, "too few voxels to compare"
    return float(np.median(img[mask]))


@pytest.fixture(scope="module")
def ucsf():
    attrs, renders = simulate_study(replace(SRC["ucsf_pdgm"], hgg_fraction=1.0), 1, 0, F)
    ((grid, aff, r),) = renders
    return r


def test_t1_t2_pd_tissue_ordering(ucsf) -> None:
    csf, gm, wm = (_pure(ucsf, k) for k in ("csf", "gm", "wm"))
    t1, t2 = ucsf.images["t1"], ucsf.images["t2"]
    assert _median(t1, wm) > _median(t1, gm) > _median(t1, csf)
    assert _median(t2, csf) > _median(t2, gm) > _median(t2, wm)
    _, renders = simulate_study(SRC["ixi"], 1, 0, F)
    pd_render = next(r for g, a, r in renders if "pd" in r.images)
    pd = pd_render.images["pd"]
    assert _median(pd, _pure(pd_render, "gm")) > _median(pd, _pure(pd_render, "wm"))


def test_flair_suppresses_csf_and_shows_oedema(ucsf) -> None:
    fl = ucsf.images["flair"]
    csf, gm, wm = (_pure(ucsf, k) for k in ("csf", "gm", "wm"))
    assert _median(fl, csf) < 0.4 * min(_median(fl, gm), _median(fl, wm))
    oedema = ucsf.fraction("oedema") >= 0.6
    assert _median(fl, oedema) > 1.3 * _median(fl, wm)


def test_t1c_enhancing_rim_brighter_than_on_t1(ucsf) -> None:
    enh = ucsf.fraction("enhancing") >= 0.6
    wm = _pure(ucsf, "wm")
    ratio_t1c = _median(ucsf.images["t1c"], enh) / _median(ucsf.images["t1c"], wm)
    ratio_t1 = _median(ucsf.images["t1"], enh) / _median(ucsf.images["t1"], wm)
    assert ratio_t1c > 1.5 * ratio_t1
    assert ratio_t1c > 1.4


def test_stroke_bright_on_dwi_dark_on_adc() -> None:
    _, renders = simulate_study(SRC["isles2022"], 2, 0, F)
    r = next(r for g, a, r in renders if "dwi" in r.images)
    stroke = r.fraction("stroke") >= 0.6
    normal = (_pure(r, "gm", 0.6) | _pure(r, "wm", 0.6)) & ~(r.fraction("stroke") > 0)
    assert _median(r.images["dwi"], stroke) > 1.3 * _median(r.images["dwi"], normal)
    assert _median(r.images["adc"], stroke) < 0.75 * _median(r.images["adc"], normal)
    adc_csf = _median(r.images["adc"], _pure(r, "csf"))
    assert 1500 < adc_csf < 3500, "ADC of CSF should be near free water (3e-3 mm²/s)"


def test_mra_vessels_bright_on_dark_background() -> None:
    _, renders = simulate_study(SRC["ixi"], 1, 0, F)
    r = next(r for g, a, r in renders if "mra" in r.images)
    vessel = r.fraction("vessel") >= 0.5
    tissue = _pure(r, "gm") | _pure(r, "wm")
    assert _median(r.images["mra"], vessel) > 2.0 * _median(r.images["mra"], tissue)


def test_lesion_label_volumes_within_configured_ranges(cohort: Path) -> None:
    meta = json.loads((cohort / "cohort.json").read_text())
    checked = 0
    for entry in meta["sources"]:
        src = SRC[entry["name"]]
        if src.lesion is None:
            continue
        lo, hi = src.lesion_ml
        for i in range(1, src.n_subjects + 1):
            sid = study_id(src, i)
            attrs = {"grade": "HGG"} if src.layout != "brats2018" else None
            if attrs is None:
                grade = "HGG" if (cohort / src.folder / "HGG" / sid).is_dir() else "LGG"
                attrs = {"grade": grade}
            _, label = W.study_paths(
                src.layout, src.writer, sid, src.modalities, attrs, src.pattern, src.label_pattern
            )
            img = nib.load(cohort / src.folder / label)
            lab = np.asarray(img.dataobj)
            vol = (lab > 0).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
            assert lo <= vol <= hi, f"{src.name} {sid}: lesion {vol:.1f} ml outside {lo}-{hi}"
            assert set(np.unique(lab)) <= set(entry["label_values"])
            checked += 1
    assert checked >= 30


def test_tissue_labels_are_csf_gm_wm_with_plausible_volumes(cohort: Path) -> None:
    img = nib.load(next((cohort / "MRBrainS13" / "TrainingLabels").glob("*.nii.gz")))
    lab = np.asarray(img.dataobj)
    assert set(np.unique(lab)) == {0, 1, 2, 3}
    ml = {k: (lab == k).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000 for k in (1, 2, 3)}
    assert 150 < ml[1] < 700 and 500 < ml[2] < 1400 and 350 < ml[3] < 1100, ml


def test_grading_hgg_enhances_lgg_does_not(cohort: Path) -> None:
    root = cohort / "BraTS2018"
    found = {"HGG": 0, "LGG": 0}
    for grade in ("HGG", "LGG"):
        for seg in root.glob(f"{grade}/*/*_seg.nii.gz"):
            values = set(np.unique(np.asarray(nib.load(seg).dataobj)))
            assert (4 in values) == (grade == "HGG"), f"{seg}: labels {values}"
            found[grade] += 1
    assert found["HGG"] == found["LGG"] == SRC["brats2018"].n_subjects // 2
    table = (root / "participants.tsv").read_text().splitlines()
    assert table[0].split("\t")[0] == "participant_id" and "grade" in table[0].split("\t")


def test_orientations_grids_dtypes_as_each_source_writes_them(cohort: Path) -> None:
    meta = json.loads((cohort / "cohort.json").read_text())
    for entry in meta["sources"]:
        src = SRC[entry["name"]]
        sid = study_id(src, 1)
        attrs = {"grade": "HGG"}
        if src.layout == "brats2018":
            attrs["grade"] = "HGG" if (cohort / src.folder / "HGG" / sid).is_dir() else "LGG"
        if src.layout in W.CLS_LAYOUTS:  # site grids; the ADNI date folder is drawn
            from mmlib.data.phantom.report import study_files

            paths = study_files(cohort, src, 1)[0]
        else:
            paths, _ = W.study_paths(
                src.layout, src.writer, sid, src.modalities, attrs, src.pattern, src.label_pattern
            )
        for m in src.modalities:
            img = nib.load(cohort / src.folder / paths[m])
            grid = next(g for g, mods in grid_groups(src, F, 1) if m in mods)
            assert "".join(nib.aff2axcodes(img.affine)) == grid.axcodes, (src.name, m)
            assert img.shape[:3] == grid.shape, (src.name, m)
            assert np.allclose(nib.affines.voxel_sizes(img.affine), grid.spacing, atol=1e-4)
            assert img.get_data_dtype() == np.dtype(W.DTYPES[src.writer]), (src.name, m)
    # ISLES: FLAIR on its own oblique grid, DWI/ADC shared
    groups = grid_groups(SRC["isles2022"], F)
    assert len(groups) == 2 and groups[1][0].tilt_deg != 0
    # Decathlon: one 4-D file, channels FLAIR, T1w, T1gd, T2w (FLAIR darkest in CSF-rich core)
    dec = nib.load(cohort / "Task01_BrainTumour" / "imagesTr" / "BRATS_001.nii.gz")
    assert dec.ndim == 4 and dec.shape[3] == 4
    ds = json.loads((cohort / "Task01_BrainTumour" / "dataset.json").read_text())
    assert ds["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert len(ds["training"]) == SRC["msd_task01"].n_subjects
    # paper scale writes the real grids
    assert W.grid_for("brats2021", "t1", 1) == W.BRATS_GRID
    assert W.BRATS_GRID.shape == (240, 240, 155) and W.DTYPES["brats2021"] == "int16"


def test_cohort_json_describes_every_source(cohort: Path) -> None:
    meta = json.loads((cohort / "cohort.json").read_text())
    assert meta["preset"] == "smoke" and meta["seed"] == 0 and "mmlib_version" in meta
    names = [e["name"] for e in meta["sources"]]
    assert names == [s.name for s in SMOKE.sources]
    for e in meta["sources"]:
        assert {"name", "path", "layout", "role", "task", "n_subjects", "modalities"} <= set(e)
        if e["layout"] in W.CLS_LAYOUTS:  # the dataset's own phenotypic table(s)
            assert list((cohort / e["path"]).rglob("*.csv")) and not e["participants"].endswith(
                ".tsv"
            )
        else:
            assert (cohort / e["path"] / "participants.tsv").is_file()
        if e["layout"] == "pattern":
            assert "{subject}" in e["pattern"] and "{modality}" in e["pattern"]
    roles = {e["role"] for e in meta["sources"]}
    assert roles == {"pretrain", "downstream"}
    assert not (cohort / ".tmp").exists() and (cohort / "DONE").is_file()


def test_two_subjects_differ() -> None:
    _, a = simulate_study(SRC["brats2021"], 1, 0, F)
    _, b = simulate_study(SRC["brats2021"], 2, 0, F)
    ta, tb = a[0][2].images["t1"], b[0][2].images["t1"]
    assert ta.shape == tb.shape
    assert np.corrcoef(ta.ravel(), tb.ravel())[0, 1] < 0.98
    assert not np.array_equal(a[0][2].lesion_label(), b[0][2].lesion_label())


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_any_worker_count(tmp_path: Path) -> None:
    spec = with_counts(
        only(SMOKE, "ixi", "isles2022", "msd_task01"), ixi=1, isles2022=2, msd_task01=1
    )
    a = _files(make_cohort(spec, tmp_path / "a", seed=3, workers=1))
    b = _files(make_cohort(spec, tmp_path / "b", seed=3, workers=2))
    c = _files(make_cohort(spec, tmp_path / "c", seed=4, workers=1))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert any(a[k] != c.get(k) for k in a if k.endswith(".nii.gz"))


def test_finished_cohort_is_reused_and_guarded(tmp_path: Path) -> None:
    spec = with_counts(only(SMOKE, "isles2022"), isles2022=1)
    root = make_cohort(spec, tmp_path / "r")
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")}
    make_cohort(spec, root)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")} == stamp
    with pytest.raises(ValueError, match="another spec or seed"):
        make_cohort(spec, root, seed=1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        make_cohort(spec, busy)


def test_interrupted_cohort_resumes(tmp_path: Path) -> None:
    spec = with_counts(only(SMOKE, "isles2022"), isles2022=2)
    full = _files(make_cohort(spec, tmp_path / "full"))
    part = tmp_path / "part"
    make_cohort(spec, part)
    (part / "DONE").unlink()  # simulate a crash after the studies, before the marker
    (part / ".tmp").mkdir()
    from mmlib.data.phantom.cohort import spec_hash

    (part / ".tmp" / "PROGRESS").write_text(spec_hash(spec, 0) + "\n")
    make_cohort(spec, part)
    assert _files(part) == full


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(modalities=("t1", "t9")), "unknown modality 't9'"),
        (dict(modalities=("t1", "T1")), "unknown modality 'T1'"),
        (dict(modalities=("t1", "mra")), "cannot hold 'mra'"),
        (dict(n_subjects=0), "n_subjects should be at least 1"),
        (dict(lesion_ml=(10.0, 5000.0)), "larger than the brain"),
        (dict(lesion_ml=(0.0, 5.0)), "lesion_ml should be"),
        (dict(lesion="tumour"), "unknown lesion 'tumour'"),
        (dict(role="train"), "role should be"),
    ],
)
def test_impossible_specs_are_clear_errors(change: dict, match: str) -> None:
    src = replace(SRC["brats2021"], **change)
    spec = CohortSpec("custom", F, (src,))
    with pytest.raises(ValueError, match=match) as err:
        validate_spec(spec)
    assert "brats2021" in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset_and_bad_workers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown cohort preset"):
        make_cohort("huge", tmp_path / "x")
    with pytest.raises(ValueError, match="workers"):
        make_cohort(only(SMOKE, "isles2022"), tmp_path / "y", workers=0)


def test_atrophy_group_enlarges_ventricles() -> None:
    src = SRC["adni"]
    csf = {"NC": [], "MCI": []}
    for i in range(1, src.n_subjects + 1):
        attrs, renders = simulate_study(src, i, 0, F)
        _, aff, r = renders[0]  # sites write different grids: compare millilitres
        ml = abs(np.linalg.det(aff[:3, :3])) / 1000
        csf[attrs["group"]].append(float(r.fraction("csf")[r.brain].sum()) * ml)
    assert len(csf["NC"]) == len(csf["MCI"]) == src.n_subjects // 2
    assert min(csf["MCI"]) > max(csf["NC"]) * 0.98
    assert np.mean(csf["MCI"]) > 1.15 * np.mean(csf["NC"])


def test_cli_makes_and_refuses(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mmlib.cli import main

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert main(["cohort", "--preset", "smoke", "--out", str(busy)]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_paper_scale_writes_the_real_brats_grid(tmp_path: Path) -> None:
    spec = CohortSpec("paper", 1, (replace(SRC["brats2021"], n_subjects=1),))
    root = make_cohort(spec, tmp_path / "p")
    img = nib.load(root / "BraTS2021" / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz")
    assert img.shape == (240, 240, 155) and img.get_data_dtype() == np.int16
    assert np.allclose(nib.affines.voxel_sizes(img.affine), 1.0)
    assert "".join(nib.aff2axcodes(img.affine)) == "LPS"


def test_ensure_cohort_replaces_a_stale_work_cohort(tmp_path: Path, monkeypatch) -> None:
    from mmlib.data.phantom import cohort as C

    monkeypatch.setenv("MMLIB_WORK", str(tmp_path))
    small = with_counts(only(SMOKE, "isles2022"), isles2022=1)
    monkeypatch.setitem(C.PRESETS, "smoke", small)
    stale = tmp_path / "smoke" / "cohort"
    stale.mkdir(parents=True)
    (stale / "DONE").write_text("0123456789abcdef\n")
    root = C.ensure_cohort("smoke", workers=1)
    assert root == stale and (root / "DONE").read_text().strip() == C.spec_hash(small, 0)
    assert (root / "ISLES-2022" / "participants.tsv").is_file()


def test_curation_layouts_read_the_cohort_unchanged(cohort: Path) -> None:
    layouts = pytest.importorskip("mmlib.data.layouts")
    studies = layouts.discover(cohort)
    sources = {e["name"]: e for e in json.loads((cohort / "cohort.json").read_text())["sources"]}
    expected = {sid for e in sources.values() for sid in e.get("expected_problems", {})}
    assert not [(s.study, s.problems) for s in studies if s.problems and s.study not in expected]
    assert {s.study for s in studies if s.problems} == expected  # the messy entries, each found
    by_source: dict[str, list] = {}
    for st in studies:
        if st.study not in expected:
            by_source.setdefault(st.source, []).append(st)
    for src in SMOKE.sources:
        found = by_source[src.name]
        assert len(found) == src.n_subjects, src.name
        for st in found:
            assert set(st.modalities) == set(src.modalities), (src.name, st.study)
            if src.classes:
                assert st.attrs[src.class_column] in src.classes, (src.name, st.study)
            assert (st.label is not None) == (src.labels is not None), (src.name, st.study)
            assert st.task == src.task and st.role == src.role
            if src.class_column:
                assert st.attrs[src.class_column] in src.classes
    assert {s.attrs["grade"] for s in by_source["brats2018"]} == {"HGG", "LGG"}
    assert all("age_hours" in s.attrs for s in by_source["isles2022"])


def test_overlay_of_a_written_study_lands_on_its_lesion(cohort: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmlib.data.phantom import report as R
    from mmlib.viz.cohort import overlay_axial

    img, lab = R.load_source_study(cohort, SRC["brats2023_ped"], 1, "flair")
    assert lab is not None and lab.shape == img.shape and lab.max() > 0
    fig, ax = plt.subplots()
    z = overlay_axial(ax, img, lab, "PED")
    ras = R.to_ras(lab, img.affine)
    assert (ras[:, :, z] > 0).sum() == (ras > 0).sum(axis=(0, 1)).max()  # the largest lesion slice
    assert len(ax.images) == 2 and ax.get_title() == "PED"
    plt.close(fig)
    with pytest.raises(KeyError, match="has no pd"):
        R.load_source_study(cohort, SRC["brats2023_ped"], 1, "pd")
