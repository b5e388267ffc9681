"""Checks on what notebooks/02_data_curation.py writes (smoke scale)."""

from __future__ import annotations

import pathlib


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["scale"] == "smoke" and results["spacing_mm"] == 4.0
    # every study of the embedded cohort is found and curated, none fails
    assert results["sources"] >= 5 and results["studies_found"] >= 20
    # the default cohort plants no unusable table entries (tests/test_cls_tasks.py writes a
    # messy one): every study found is curated
    assert results["expected_problems"] == 0
    assert results["studies_curated"] == results["studies_found"]
    assert results["curation_failed"] == 0
    assert sum(results["per_source"].values()) == results["studies_curated"]
    assert set(results["splits"]) <= {"train", "val", "test"} and results["splits"]["train"] > 0
    assert results["suspicious_in_cohort"] == 0
    # the planted defects: the truncated file fails its study only, the swap is flagged exactly
    check = results["check"]
    assert check["status"] == 3 and list(check["failed"]) == [check["truncated"]]
    assert "truncated or corrupt" in check["failed"][check["truncated"]]
    assert check["curated"] == 5
    assert sorted(map(tuple, check["flagged"])) == [
        (check["swapped"], "t1", "t2"),
        (check["swapped"], "t2", "t1"),
    ]
    # the sampler batch follows the contract
    b = results["batch"]
    assert b["image"] == [4, 4, results["crop"], results["crop"], results["crop"]]
    assert 0.0 <= b["min"] <= b["max"] <= 1.0 and b["max"] > 0.5 and 0.25 <= b["present"] <= 1.0
    assert results["segmentation_task"]
    for name in ("study.png", "histograms.png", "spacing.png", "crops.png"):
        assert (out_dir / name).stat().st_size > 5_000, name
    # registration to the ICBM template: affine places the brain closer to the simulator's
    # truth than head-centring, in the sources with neck and skull most of all
    reg = results["registration"]
    for src in ("ixi", "adni", "brats2021", "isles2022"):
        assert reg[f"{src}/affine"]["error_mm"] < reg[f"{src}/none"]["error_mm"], src
    for src in ("ixi", "adni"):
        assert reg[f"{src}/affine"]["error_mm"] < 4.0 < 6.0 < reg[f"{src}/none"]["error_mm"], src
    assert (out_dir / "registration.png").is_file()
