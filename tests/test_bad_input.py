"""A corpus of broken studies: each fails with a one-line reason, the good ones are curated,
the exit status says some failed, and nothing half-written remains in the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_layouts import head, make_brats2021, save, synth

from mmlib.cli import main
from mmlib.data.store import Store

MODS = (("flair", "flair"), ("t1", "t1"), ("t1ce", "t1c"), ("t2", "t2"))


def _study(root, sid, seed, **override):
    """A BraTS 2021 study; ``override`` maps a file suffix to an array (or None: skip)."""
    t = head(seed=seed)
    files = {name: synth(t, mod, seed) for name, mod in MODS}
    files["seg"] = np.where(t == 4, 4, 0).astype(np.uint8)
    files.update(override)
    for name, data in files.items():
        if data is not None:
            save(Path(root) / sid / f"{sid}_{name}.nii.gz", data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    root = make_brats2021(base / "BraTS2021", n=2)  # BraTS2021_00000, _00001: good
    t = head(seed=5)
    nan = synth(t, "t1").astype(np.float32)
    nan[10, 10, 10] = np.nan
    nan[11, 10, 10] = np.inf
    expected = {}
    _study(root, "BraTS2021_00010", 10)
    trunc = root / "BraTS2021_00010" / "BraTS2021_00010_t2.nii.gz"
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 2])
    expected["BraTS2021_00010"] = "truncated or corrupt"
    _study(root, "BraTS2021_00011", 11, t1=nan)
    expected["BraTS2021_00011"] = "2 NaN/Inf voxels"
    _study(root, "BraTS2021_00012", 12, flair=np.stack([synth(t, "flair")] * 3, axis=-1))
    expected["BraTS2021_00012"] = "where a 3-D volume is expected"
    _study(root, "BraTS2021_00013", 13)
    far = np.diag([3.0, 3.0, 3.0, 1.0])
    far[:3, 3] = [500.0, 0.0, 0.0]  # 50 cm away from the other modalities
    save(root / "BraTS2021_00013" / "BraTS2021_00013_t2.nii.gz", synth(t, "t2"), far)
    expected["BraTS2021_00013"] = "do not overlap in physical space"
    _study(root, "BraTS2021_00014", 14, t3=synth(t, "t2"))
    expected["BraTS2021_00014"] = "unknown modality 't3'"
    _study(root, "BraTS2021_00015", 15, t1ce=np.zeros(t.shape, np.int16))
    expected["BraTS2021_00015"] = "constant volume"
    _study(root, "BraTS2021_00016", 16, seg=np.where(t == 4, 7, 0).astype(np.uint8))
    expected["BraTS2021_00016"] = "unexpected values [7]"
    # a JSON list with an entry outside its dataset root, and a study id seen twice
    other = make_brats2021(base / "Other" / "data", n=1, seed=40)
    (base / "Other" / "outside").mkdir()
    listing = {
        "training": [
            {"image": [f"BraTS2021_00000/BraTS2021_00000_{m}.nii.gz" for m, _ in MODS]},
            {"image": ["../outside/BraTS2021_00099_t1.nii.gz"]},
        ]
    }
    (base / "Other" / "list.json").write_text(json.dumps(listing))
    expected["BraTS2021_00099"] = "points outside the dataset root"
    return base, root, other, expected


def test_corpus_reports_each_failure_and_curates_the_rest(corpus, tmp_path, capsys):
    base, root, other, expected = corpus
    out = tmp_path / "store"
    status = main(["curate", "--out", str(out), "--spacing", "4", "--quiet", str(root)])
    assert status == 3
    printed = capsys.readouterr().out
    report = json.loads((out / "reports" / "curate.json").read_text())
    local = {k: v for k, v in expected.items() if k != "BraTS2021_00099"}
    assert set(report["failed"]) == set(local)
    for sid, reason in local.items():
        assert reason in report["failed"][sid], (sid, report["failed"][sid])
        assert "\n" not in report["failed"][sid]
        assert f"FAILED {sid}: " in printed
    assert sorted(report["curated"]) == ["BraTS2021_00000", "BraTS2021_00001"]
    names = sorted(p.name for p in (out / "studies").iterdir())
    assert names == ["BraTS2021_00000", "BraTS2021_00001"]  # no temp or partial folders
    assert Store(out).studies() == ["BraTS2021_00000", "BraTS2021_00001"]


def test_list_outside_root_and_duplicate_ids(corpus, tmp_path):
    base, root, other, expected = corpus
    out = tmp_path / "store"
    # the JSON list repeats BraTS2021_00000 (already found in the folder source)
    status = main(
        [
            "curate",
            "--out",
            str(out),
            "--spacing",
            "4",
            "--quiet",
            "--layout",
            "brainmvp_json",
            "--root",
            str(other),
            str(base / "Other" / "list.json"),
        ]
    )
    assert status == 3
    report = json.loads((out / "reports" / "curate.json").read_text())
    assert "points outside the dataset root" in report["failed"]["BraTS2021_00099"]
    assert report["curated"] == ["BraTS2021_00000"]
    status = main(
        [
            "curate",
            "--out",
            str(tmp_path / "s2"),
            "--spacing",
            "4",
            "--quiet",
            "--no-qc",
            str(root / ".." / "BraTS2021"),
            str(other),
        ]
    )
    report = json.loads((tmp_path / "s2" / "reports" / "curate.json").read_text())
    assert (
        status == 3 and "duplicate study id BraTS2021_00000" in report["failed"]["BraTS2021_00000"]
    )
    # the first copy was curated, from the first source
    assert Store(tmp_path / "s2").row("BraTS2021_00000")["source"] == "BraTS2021"


def test_rerun_after_fixing_curates_only_the_fixed_study(corpus, tmp_path):
    base, root, other, expected = corpus
    good = make_brats2021(tmp_path / "BraTS2021", n=2)
    _study(good, "BraTS2021_00015", 15, t1ce=np.zeros(head().shape, np.int16))
    out = tmp_path / "s"
    assert main(["curate", "--out", str(out), "--spacing", "4", "--quiet", str(good)]) == 3
    _study(good, "BraTS2021_00015", 15)  # the scan is re-exported correctly
    assert main(["curate", "--out", str(out), "--spacing", "4", "--quiet", str(good)]) == 0
    report = json.loads((out / "reports" / "curate.json").read_text())
    assert report["curated"] == ["BraTS2021_00015"] and len(report["skipped"]) == 2
