"""Layouts: every real dataset layout is found, names mapped, attrs read, datalists round-trip.

The helpers at the top write tiny synthetic heads (an ellipsoid with WM, GM, CSF and
modality-specific contrasts) as NIfTI files; the other data tests import them.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mmlib.data.layouts import (
    detect_layout,
    discover,
    export_datalist,
    find_studies,
    source_counts,
)

# tissue intensities per modality: (background, csf, gm, wm, lesion)
CONTRAST = {
    "t1": (0, 25, 60, 90, 40),
    "t1c": (0, 25, 60, 90, 120),
    "t2": (0, 100, 70, 50, 90),
    "flair": (0, 8, 70, 55, 110),
    "pd": (0, 90, 80, 65, 85),
    "mra": (0, 10, 20, 15, 18),
    "dwi": (0, 15, 60, 55, 150),
    "adc": (0, 100, 45, 40, 15),
}


def head(shape=(36, 40, 32), seed=0, shift=(0, 0, 0)):
    """Tissue classes (0 bg, 1 CSF, 2 GM, 3 WM, 4 lesion) of an ellipsoidal head (X, Y, Z)."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    g = g - np.asarray(shift, dtype=float)[:, None, None, None]
    r = np.sqrt((g**2 / np.array([0.8, 0.85, 0.75])[:, None, None, None] ** 2).sum(0))
    tissue = np.zeros(shape, np.uint8)
    tissue[r < 1.0] = 2
    tissue[r < 0.75] = 3
    tissue[(np.abs(g[0]) < 0.12) & (r < 0.5)] = 1
    c = rng.uniform(-0.3, 0.3, 3)
    tissue[np.sqrt(((g - c[:, None, None, None]) ** 2).sum(0)) < 0.15] = 4
    return tissue


def synth(tissue, modality, seed=0, scale=10.0):
    """int16 image of ``modality`` for tissue classes, with Rician-ish noise."""
    rng = np.random.default_rng(seed)
    lut = np.asarray(CONTRAST[modality], dtype=np.float32)
    img = lut[tissue] * scale + rng.normal(0, 20, tissue.shape)
    return np.clip(img, 0, None).astype(np.int16)


def save(path, data, affine=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine
    if affine is None:
        aff[:3, 3] = -np.array(data.shape[:3]) * 1.5
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return path


def make_brats2021(root, n=3, seed=0):
    """BraTS 2021 folders: BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz."""
    for i in range(n):
        sid = f"BraTS2021_{i:05d}"
        t = head(seed=seed + i)
        for name, mod in (("flair", "flair"), ("t1", "t1"), ("t1ce", "t1c"), ("t2", "t2")):
            save(Path(root) / sid / f"{sid}_{name}.nii.gz", synth(t, mod, seed + i))
        seg = np.where(t == 4, 4, 0).astype(np.uint8)
        seg[(t == 3) & (np.roll(t, 2, 0) == 4)] = 2
        save(Path(root) / sid / f"{sid}_seg.nii.gz", seg)
    return Path(root)


def make_brats2023(root, subset="PED", n=2):
    for i in range(n):
        sid = f"BraTS-{subset}-{i:05d}-000"
        t = head(seed=10 + i)
        for name, mod in (("t1c", "t1c"), ("t1n", "t1"), ("t2f", "flair"), ("t2w", "t2")):
            save(Path(root) / sid / f"{sid}-{name}.nii.gz", synth(t, mod, i))
        save(Path(root) / sid / f"{sid}-seg.nii.gz", np.where(t == 4, 3, 0).astype(np.uint8))
    return Path(root)


def make_ixi(root, n=2):
    """IXI: one folder per modality, each on its own grid (PD/T2 LPS-ish, MRA anisotropic)."""
    for i in range(n):
        sid = f"IXI{i:03d}-Guys-{800 + i}"
        t = head(seed=20 + i)
        for mod, folder in (
            ("t1", "IXI-T1"),
            ("t2", "IXI-T2"),
            ("pd", "IXI-PD"),
            ("mra", "IXI-MRA"),
        ):
            aff = np.diag([3.0, 3.0, 3.0, 1.0])
            aff[:3, 3] = -np.array(t.shape) * 1.5
            if mod in ("t2", "pd"):  # flipped x (L->R stored as R->L), same world
                aff[0, 0] = -3.0
                aff[0, 3] = t.shape[0] * 1.5 - 3.0
                data = synth(t, mod, i)[::-1]
            else:
                data = synth(t, mod, i)
            save(Path(root) / folder / f"{sid}-{mod.upper()}.nii.gz", data, aff)
    (Path(root) / "participants.tsv").write_text(
        "participant_id\tage\tsex\n" + "".join(f"IXI{i:03d}\t{30 + i}\tF\n" for i in range(n))
    )
    return Path(root)


def make_isles(root, n=2):
    """ISLES 2022 BIDS: DWI/ADC at 3 mm, FLAIR on a finer, shifted grid; masks in derivatives."""
    for i in range(n):
        sub = f"sub-strokecase{i + 1:04d}"
        ses = Path(root) / sub / "ses-0001"
        t = head(seed=30 + i)
        save(ses / "dwi" / f"{sub}_ses-0001_dwi.nii.gz", synth(t, "dwi", i))
        save(ses / "dwi" / f"{sub}_ses-0001_adc.nii.gz", synth(t, "adc", i))
        (ses / "dwi" / f"{sub}_ses-0001_dwi.json").write_text("{}")
        tf = head(shape=(54, 60, 48), seed=30 + i)
        aff = np.diag([2.0, 2.0, 2.0, 1.0])
        aff[:3, 3] = -np.array(tf.shape) * 1.0 + 1.0
        save(ses / "anat" / f"{sub}_ses-0001_FLAIR.nii.gz", synth(tf, "flair", i), aff)
        save(
            Path(root) / "derivatives" / sub / "ses-0001" / f"{sub}_ses-0001_msk.nii.gz",
            (t == 4).astype(np.uint8),
        )
    (Path(root) / "participants.tsv").write_text(
        "participant_id\tstroke_age\n"
        + "".join(f"sub-strokecase{i + 1:04d}\tacute\n" for i in range(n))
    )
    return Path(root)


def make_decathlon(root, n=2):
    root = Path(root)
    training = []
    for i in range(n):
        t = head(seed=40 + i)
        img = np.stack([synth(t, m, i) for m in ("flair", "t1", "t1c", "t2")], axis=-1)
        save(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", img)
        save(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", np.where(t == 4, 3, 0).astype(np.uint8))
        training.append(
            {
                "image": f"./imagesTr/BRATS_{i:03d}.nii.gz",
                "label": f"./labelsTr/BRATS_{i:03d}.nii.gz",
            }
        )
    (root / "imagesTr" / "._BRATS_000.nii.gz").write_bytes(b"junk")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "BRATS",
                "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                "labels": {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"},
                "training": training,
                "test": [],
            }
        )
    )
    return root


def make_brats2018(root):
    for grade, n in (("HGG", 2), ("LGG", 1)):
        for i in range(n):
            sid = f"Brats18_TCIA_{grade}_{i}"
            t = head(seed=50 + i)
            for name, mod in (("flair", "flair"), ("t1", "t1"), ("t1ce", "t1c"), ("t2", "t2")):
                save(Path(root) / grade / sid / f"{sid}_{name}.nii.gz", synth(t, mod, i))
    return Path(root)


def make_ucsf(root, n=2):
    for i in range(n):
        sid = f"UCSF-PDGM-{i + 4:04d}"
        t = head(seed=60 + i)
        for name, mod in (
            ("T1", "t1"),
            ("T1c", "t1c"),
            ("T2", "t2"),
            ("FLAIR", "flair"),
            ("DWI", "dwi"),
            ("ADC", "adc"),
        ):
            save(Path(root) / f"{sid}_nifti" / f"{sid}_{name}.nii.gz", synth(t, mod, i))
        save(Path(root) / f"{sid}_nifti" / f"{sid}_T1_bias.nii.gz", synth(t, "t1", i))
        save(
            Path(root) / f"{sid}_nifti" / f"{sid}_tumor_segmentation.nii.gz",
            np.where(t == 4, 1, 0).astype(np.uint8),
        )
    return Path(root)


# ----------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("maker", "layout", "n", "mods", "labelled"),
    [
        (make_brats2021, "brats2021", 3, ["flair", "t1", "t1c", "t2"], True),
        (make_brats2023, "brats2023", 2, ["flair", "t1", "t1c", "t2"], True),
        (make_ixi, "ixi", 2, ["t1", "t2", "mra", "pd"], False),
        (make_isles, "isles2022", 2, ["flair", "dwi", "adc"], True),
        (make_decathlon, "decathlon", 2, ["flair", "t1", "t1c", "t2"], True),
        (make_brats2018, "brats2018", 3, ["flair", "t1", "t1c", "t2"], False),
        (make_ucsf, "ucsf_pdgm", 2, ["flair", "t1", "t1c", "t2", "dwi", "adc"], True),
    ],
)
def test_layout_detected_and_read(tmp_path, maker, layout, n, mods, labelled):
    root = maker(tmp_path / layout)
    assert detect_layout(root) == layout
    studies = find_studies(root)
    assert len(studies) == n
    for st in studies:
        assert st.layout == layout and not st.problems, st.problems
        assert list(st.modalities) == mods
        assert (st.label is not None) == labelled
        for ref in st.modalities.values():
            assert Path(ref.path).is_file()


def test_attrs_from_participants_and_folders(tmp_path):
    ixi = find_studies(make_ixi(tmp_path / "ixi"))
    assert ixi[0].study == "IXI000-Guys-800" and ixi[0].attrs == {"age": 30, "sex": "F"}
    isles = find_studies(make_isles(tmp_path / "isles"))
    assert isles[0].study == "sub-strokecase0001"
    assert isles[0].attrs["stroke_age"] == "acute"
    grades = {s.study: s.attrs["grade"] for s in find_studies(make_brats2018(tmp_path / "b18"))}
    assert sorted(grades.values()) == ["HGG", "HGG", "LGG"]
    b23 = find_studies(make_brats2023(tmp_path / "b23", subset="MET"))
    assert b23[0].attrs["subset"] == "MET"
    dec = find_studies(make_decathlon(tmp_path / "dec"))
    assert [r.channel for r in dec[0].modalities.values()] == [0, 1, 2, 3]
    assert dec[0].label_values == (0, 1, 2, 3)


def test_cohort_json_and_counts(tmp_path):
    make_brats2021(tmp_path / "cohort" / "BraTS2021", n=2)
    make_ixi(tmp_path / "cohort" / "IXI", n=1)
    make_brats2021(tmp_path / "cohort" / "flat", n=2)
    (tmp_path / "cohort" / "cohort.json").write_text(
        json.dumps(
            {
                "sources": [
                    {
                        "name": "brats21",
                        "path": "BraTS2021",
                        "layout": "brats2021",
                        "role": "pretrain",
                        "task": "pretrain",
                        "modalities": ["flair", "t1", "t1c", "t2"],
                    },
                    {
                        "name": "ixi",
                        "path": "IXI",
                        "layout": "ixi",
                        "role": "pretrain",
                        "task": "pretrain",
                        "modalities": ["t1", "t2"],
                    },
                    {
                        "name": "custom",
                        "path": "flat",
                        "layout": "pattern",
                        "role": "downstream",
                        "task": "seg",
                        "pattern": "{subject}/{subject}_{modality}.nii.gz",
                        "label_pattern": "{subject}/{subject}_seg.nii.gz",
                        "modalities": ["t1", "flair"],
                    },
                ]
            }
        )
    )
    studies = discover(tmp_path / "cohort")
    assert detect_layout(tmp_path / "cohort") == "cohort"
    counts = source_counts(studies)
    assert counts.loc["brats21", "studies"] == 2 and counts.loc["brats21", "labelled"] == 2
    assert counts.loc["ixi", "scans"] == 2  # restricted to the listed modalities
    custom = [s for s in studies if s.source == "custom"]
    assert [list(s.modalities) for s in custom] == [["flair", "t1"]] * 2
    assert all(s.label and s.task == "seg" and s.role == "downstream" for s in custom)
    # the same ids in two sources: the second copy is a problem, not a silent overwrite
    dups = [s for s in studies if s.problems]
    assert len(dups) == 2 and all("duplicate study id" in s.problems[0] for s in dups)


def test_several_folders_at_once(tmp_path):
    studies = discover(make_brats2021(tmp_path / "BraTS2021", n=2), make_ixi(tmp_path / "IXI", n=1))
    assert [s.source for s in studies] == ["BraTS2021", "BraTS2021", "IXI"]


def test_unknown_modality_is_a_problem_naming_the_file(tmp_path):
    root = make_brats2021(tmp_path / "b", n=2)
    bad = root / "BraTS2021_00001" / "BraTS2021_00001_t3.nii.gz"
    bad.write_bytes((root / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz").read_bytes())
    studies = find_studies(root)
    assert not studies[0].problems
    assert len(studies[1].problems) == 1
    assert "BraTS2021_00001_t3.nii.gz" in studies[1].problems[0]
    assert "'t3'" in studies[1].problems[0]


def test_brainmvp_json_and_outside_root(tmp_path):
    root = make_brats2021(tmp_path / "BraTS2021", n=2)
    entries = [
        {
            "image": [
                f"BraTS2021_{i:05d}/BraTS2021_{i:05d}_{m}.nii.gz"
                for m in ("flair", "t1", "t1ce", "t2")
            ]
        }
        for i in range(2)
    ]
    entries.append({"image": ["../elsewhere/x_flair.nii.gz"]})
    listing = tmp_path / "dataset_BraTS2021.json"
    listing.write_text(json.dumps({"training": entries[:1], "validation": entries[1:]}))
    assert detect_layout(listing) == "brainmvp_json"
    studies = find_studies(listing, root=root)
    assert [s.study for s in studies[:2]] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert list(studies[0].modalities) == ["flair", "t1", "t1c", "t2"]
    assert studies[0].split == "train" and studies[1].split == "val"
    assert "outside the dataset root" in studies[2].problems[0]


def test_pattern_layout(tmp_path):
    t = head()
    for sid in ("s01", "s02"):
        for mod in ("T1w", "T2w"):
            save(tmp_path / sid / "anat" / f"{sid}_{mod}.nii.gz", synth(t, mod.lower()[:2]))
        save(tmp_path / "labels" / f"{sid}.nii.gz", (t == 4).astype(np.uint8))
    studies = find_studies(
        tmp_path,
        pattern="{subject}/anat/{subject}_{modality}.nii.gz",
        label_pattern="labels/{subject}.nii.gz",
    )
    assert [s.study for s in studies] == ["s01", "s02"]
    assert list(studies[0].modalities) == ["t1", "t2"] and studies[0].label
    with pytest.raises(ValueError, match="subject"):
        find_studies(tmp_path, pattern="{modality}.nii.gz")


def test_datalist_round_trip_and_monai_reads_it(tmp_path):
    from monai.data import load_decathlon_datalist

    root = make_brats2021(tmp_path / "BraTS2021", n=3)
    studies = find_studies(root)
    path = export_datalist(studies, tmp_path / "datalist.json", splits={"BraTS2021_00002": "val"})
    back = find_studies(path)
    assert detect_layout(path) == "monai_datalist"
    assert [s.study for s in back] == [s.study for s in studies]
    assert [s.split for s in back] == ["train", "train", "val"]
    for a, b in zip(studies, back):
        assert {m: Path(r.path).resolve() for m, r in a.modalities.items()} == {
            m: Path(r.path).resolve() for m, r in b.modalities.items()
        }
        assert Path(a.label).resolve() == Path(b.label).resolve()
    monai_list = load_decathlon_datalist(str(path), data_list_key="training")
    assert len(monai_list) == 2 and Path(monai_list[0]["t1"]).is_file()


def test_undetectable_folder_says_how_to_fix(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="pattern"):
        detect_layout(tmp_path)
    with pytest.raises(ValueError, match="unknown layout"):
        find_studies(tmp_path, layout="nope")


def test_pattern_numeric_subjects_get_the_source_prefix(tmp_path):
    t = head()
    for sid in ("1", "2"):
        save(tmp_path / "TrainingData" / sid / "T1.nii.gz", synth(t, "t1"))
        save(tmp_path / "TrainingData" / sid / "T2_FLAIR.nii.gz", synth(t, "flair"))
        save(
            tmp_path / "TrainingLabels" / f"{sid}_LabelsForTesting.nii.gz", (t > 0).astype(np.uint8)
        )
    (tmp_path / "participants.tsv").write_text("participant_id\tage\n1\t40\n2\t50\n")
    studies = find_studies(
        tmp_path,
        source="mrbrains",
        pattern="TrainingData/{subject}/{modality}.nii.gz",
        label_pattern="TrainingLabels/{subject}_LabelsForTesting.nii.gz",
    )
    assert [s.study for s in studies] == ["mrbrains-1", "mrbrains-2"]
    assert [s.attrs["age"] for s in studies] == [40, 50]
    assert list(studies[0].modalities) == ["flair", "t1"] and studies[1].label.endswith(
        "2_LabelsForTesting.nii.gz"
    )


def test_export_refuses_channels_of_a_4d_file(tmp_path):
    studies = find_studies(make_decathlon(tmp_path / "dec", n=1))
    with pytest.raises(ValueError, match="4-D file"):
        export_datalist(studies, tmp_path / "list.json")


def test_participants_tsv_values(tmp_path):
    from mmlib.data.layouts import read_participants

    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tgroup\tnote\nsub-01\t71.5\tMCI\tn/a\n"
    )
    table = read_participants(tmp_path)
    assert table["sub-01"] == {"age": 71.5, "group": "MCI"} and table["01"] is table["sub-01"]
    (tmp_path / "participants.tsv").write_text("id\tage\n1\t2\n")
    with pytest.raises(ValueError, match="participant_id"):
        read_participants(tmp_path)
