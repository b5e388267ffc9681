"""Checks on what notebooks/01_embedded_cohort.py writes (smoke scale)."""

from __future__ import annotations

import pathlib

from mmlib.data.phantom import cohort_spec


def check(results: dict, out_dir: pathlib.Path) -> None:
    spec = cohort_spec("smoke")
    assert results["scale"] == "smoke" and results["factor"] == spec.factor == 4
    assert results["n_studies"] == {s.name: s.n_subjects for s in spec.sources}
    assert results["n_sources"] == len(spec.sources) == 16  # the ten downstream tasks' sources
    assert results["n_pretrain"] == sum(s.n_subjects for s in spec.sources if s.role == "pretrain")
    assert results["memory_equals_disk"] is True
    c = results["contrasts"]
    assert c["t1_wm_gm"] > 1.05 and c["t1_gm_csf"] > 1.2  # T1: WM > GM > CSF
    assert c["t2_csf_gm"] > 1.2 and c["t2_gm_wm"] > 1.05  # T2: CSF > GM > WM
    assert c["flair_csf_wm"] < 0.5 and c["flair_oedema_wm"] > 1.3  # FLAIR: CSF nulled, oedema
    assert c["t1c_enh_wm"] > 1.5 * c["t1_enh_wm"]  # enhancing rim on T1c
    assert c["dwi_stroke_normal"] > 1.3 and c["adc_stroke_normal"] < 0.8
    for name, v in results["lesion_ml"].items():
        lo, hi = v["range"]
        assert lo <= v["min"] <= v["median"] <= v["max"] <= hi, name
    assert results["orientation"]["brats2021"] == "LPS"
    assert results["orientation"]["msd_task01"] == "RAS"
    for fig in (
        "anatomy",
        "signal_table",
        "modalities_ucsf",
        "modalities_ixi",
        "overlays",
        "classes",
        "tissue_intensities",
    ):
        assert (out_dir / f"{fig}.png").stat().st_size > 10_000, fig
