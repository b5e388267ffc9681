"""``mmlib evaluate segmentation``: predictions scored against references by study id."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mmlib.cli import main
from mmlib.evaluate.challenge import SCHEMES, detect_scheme, score_folder, summary
from mmlib.evaluate.lesions import lesion_scores
from mmlib.evaluate.segmentation import dice

SHAPE = (20, 22, 18)
AFFINE = np.array([[-1.0, 0, 0, 90], [0, -1.2, 0, 120], [0, 0, 1.5, -70], [0, 0, 0, 1]])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), str(path))
    return path


def _tumour(et: int, shift: int = 0, split: bool = False) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[4 + shift : 14 + shift, 4:14, 4:12] = 2  # oedema
    lab[6 + shift : 12 + shift, 6:12, 5:10] = 1  # necrosis
    lab[7 + shift : 11 + shift, 7:11, 6:9] = et  # enhancing
    if split:
        lab[16:18, 16:18, 14:16] = et  # a second, small enhancing lesion
    return lab


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _save(ref / "a.nii.gz", _tumour(3, split=True))
    _save(ref / "b.nii.gz", _tumour(3))
    _save(ref / "c.nii.gz", np.zeros(SHAPE, np.uint8))  # every region empty
    _save(ref / "d.nii.gz", _tumour(3))  # no prediction: scored empty
    _save(pred / "a.nii.gz", _tumour(3, shift=1))
    _save(pred / "b.nii.gz", _tumour(3))
    _save(pred / "c.nii.gz", _tumour(3))
    return pred, ref


def test_scores_per_study_and_region(folders: tuple[Path, Path]) -> None:
    pred, ref = folders
    res = score_folder(pred, ref)
    assert res.scheme == "brats2023" and res.status == 0 and res.missing == ["d"]
    t = res.table
    assert list(t["region"].unique()) == ["et", "tc", "wt", "netc", "snfh"]
    assert set(t["study"]) == {"a", "b", "c", "d"} and len(t) == 20
    row = t[(t.study == "a") & (t.region == "et")].iloc[0]
    # the same numbers as the metric functions on the region masks
    p = nib.load(str(pred / "a.nii.gz")).get_fdata() == 3
    r = nib.load(str(ref / "a.nii.gz")).get_fdata() == 3
    import torch

    want_dice = float(dice(torch.from_numpy(p)[None, None], torch.from_numpy(r)[None, None])[0, 0])
    assert row["dice"] == pytest.approx(want_dice)
    lw = lesion_scores(p, r)
    assert (row["tp"], row["fp"], row["fn"]) == (1, 0, 1) == (lw["tp"], lw["fp"], lw["fn"])
    assert row["lesion_dice"] == pytest.approx(lw["lesion_dice"])
    assert row["lesion_f1"] == pytest.approx(1 / 1.5)
    b = t[t.study == "b"]
    assert (b["dice"] == 1).all() and (b["hd95"] == 0).all() and (b["lesion_f1"] == 1).all()
    c = t[t.study == "c"]
    assert (c["reference_empty"] == 1).all() and (c["dice"] == 0).all()
    assert (c["lesion_dice"] == 0).all() and (c["fp"] >= 1).all()
    d = t[t.study == "d"]
    assert (d["prediction_missing"] == 1).all() and (d["fn"] == 1).all() and (d["dice"] == 0).all()
    s = summary(t).set_index("region")
    assert s.loc["et", "reference_empty"] == 1 and s.loc["et", "n"] == 4
    assert "±" in s.loc["et", "lesion_dice"]


def test_cli_writes_the_csv_and_reports_missing(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, ref = folders
    out = tmp_path / "scores" / "s.csv"
    assert (
        main(
            [
                "evaluate",
                "segmentation",
                "--pred",
                str(pred),
                "--ref",
                str(ref),
                "--scheme",
                "brats2023",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "MISSING d" in text and "mean ± sd" in text and "snfh" in text
    csv = pd.read_csv(out)
    for col in (
        "study",
        "region",
        "dice",
        "hd95",
        "lesion_dice",
        "lesion_f1",
        "tp",
        "fp",
        "fn",
        "reference_empty",
    ):
        assert col in csv.columns
    assert len(csv) == 20


def test_bad_input_costs_only_its_study(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, ref = folders
    _save(pred / "b.nii.gz", _tumour(3), affine=AFFINE @ np.diag([2.0, 1, 1, 1]))  # other grid
    _save(pred / "c.nii.gz", np.zeros(SHAPE[::-1], np.uint8))  # other shape
    _save(pred / "zz.nii.gz", _tumour(3))  # no reference
    _save(pred / "a.nii.gz", _tumour(4))  # 4 in 2023
    assert (
        main(
            [
                "evaluate",
                "segmentation",
                "--pred",
                str(pred),
                "--ref",
                str(ref),
                "--scheme",
                "brats2023",
                "--quiet",
            ]
        )
        == 3
    )
    lines = capsys.readouterr().out.splitlines()
    failed = {ln.split(":")[0].split()[1]: ln for ln in lines if ln.startswith("FAILED")}
    assert set(failed) == {"a", "b", "c", "zz"}
    assert "affine differs" in failed["b"] and "shape" in failed["c"]
    assert "matches no reference" in failed["zz"] and "outside the brats2023" in failed["a"]
    assert any("1 studies scored" in ln for ln in lines)  # d, scored as empty
    # usage errors: exit 2
    assert (
        main(["evaluate", "segmentation", "--pred", str(tmp_path / "nope"), "--ref", str(ref)]) == 2
    )
    assert (
        main(["evaluate", "segmentation", "--pred", str(pred), "--ref", str(tmp_path / "nope")])
        == 2
    )
    with pytest.raises(SystemExit) as exc:  # argparse: --ref is required
        main(["evaluate", "segmentation", "--pred", str(pred)])
    assert exc.value.code == 2


def test_references_from_a_dataset_folder(tmp_path: Path) -> None:
    """References found through the layouts (a BraTS 2023 folder), label file per study."""
    root = tmp_path / "BraTS2023"
    pred = tmp_path / "pred"
    for i in range(2):
        sid = f"BraTS-PED-0000{i}-000"
        for m in ("t1c", "t1n", "t2f", "t2w"):
            _save(root / sid / f"{sid}-{m}.nii.gz", np.ones(SHAPE, np.uint8))
        _save(root / sid / f"{sid}-seg.nii.gz", _tumour(3))
        _save(pred / f"{sid}.nii.gz", _tumour(3, shift=i))
    res = score_folder(pred, root, "brats2023")
    assert res.status == 0 and set(res.table["study"]) == {
        "BraTS-PED-00000-000",
        "BraTS-PED-00001-000",
    }
    t = res.table.set_index(["study", "region"])
    assert t.loc[("BraTS-PED-00000-000", "wt"), "dice"] == 1.0
    assert t.loc[("BraTS-PED-00001-000", "wt"), "dice"] < 1.0


def test_schemes_and_detection(tmp_path: Path) -> None:
    assert detect_scheme([0, 1])[0] == "binary"
    assert detect_scheme([0, 1, 2, 4])[0] == "brats2021"
    assert detect_scheme([0, 2, 3])[0] == "brats2023"
    with pytest.raises(ValueError, match="fit no scheme"):
        detect_scheme([0, 3, 4])
    lab = _tumour(4)
    m = SCHEMES["brats2021"].masks(lab)
    assert m.shape == (5, *SHAPE) and (m[0] == (lab == 4)).all()
    assert (m[2] == (lab > 0)).all()
    ref, pred = tmp_path / "r", tmp_path / "p"
    les = np.zeros(SHAPE, np.uint8)
    les[2:5, 2:5, 2:5] = 1
    _save(ref / "x.nii.gz", les)
    _save(pred / "x.nii.gz", np.zeros(SHAPE, np.uint8))
    res = score_folder(pred, ref)
    assert res.scheme == "binary" and list(res.table["region"]) == ["lesion"]
    row = res.table.iloc[0]
    assert row["fn"] == 1 and row["lesion_f1"] == 0 and not math.isnan(row["hd95"])
    with pytest.raises(ValueError, match="unknown scheme"):
        score_folder(pred, ref, "brats2019")
