"""Checks on what notebooks/11_visual_inspection.py writes (smoke scale)."""

from __future__ import annotations

import math
import os
import pathlib
import shutil

import matplotlib.image

from mmlib.modalities import MODALITIES
from mmlib.viz.labels import SCHEMES


def _png_std(path: pathlib.Path) -> float:
    return float(matplotlib.image.imread(path)[..., :3].std())


def check(results: dict, out_dir: pathlib.Path) -> None:
    figures = out_dir / "figures"
    assert results["scale"] == "smoke"

    study = results["study"]
    assert study["modalities"] and set(study["modalities"]) <= set(MODALITIES)
    assert len(study["shape"]) == 3 and all(n > 8 for n in study["shape"])
    assert all(s > 0 for s in study["spacing"])
    assert results["widget_slice_range"] == [0, study["shape"][2] - 1]  # the axial slider spans z
    assert _png_std(figures / "study_slices.png") > 0.02
    if "label_voxels" in results:
        scheme = SCHEMES[study["scheme"]]
        assert results["label_voxels"] and {int(k) for k in results["label_voxels"]} <= set(
            scheme.names
        )
        assert _png_std(figures / "segmentation_montage.png") > 0.02

    run = results["run"]  # the smoke book pre-trains (chapter 6) before this chapter
    assert run["n_samples"] >= 1 and run["step"] == run["steps"][-1] and len(run["shape"]) == 3
    mse = results["sample_mse"]
    assert set(mse) == {"view_a", "view_b", "recon_a", "recon_b"}
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in mse.values())
    assert _png_std(figures / "samples.png") > 0.02
    assert results["templates"]["shape"][0] == len(MODALITIES)

    napari = results["napari"]
    if shutil.which("Xvfb") or os.environ.get("DISPLAY"):
        assert napari["used"], (
            f"napari figures were not made although a display can be had: {napari['reason']}"
        )
    if napari["used"]:
        assert set(napari["screenshots"]) == {"study", "study_3d", "samples", "templates"}
        for name, shot in napari["screenshots"].items():
            assert shot["pixel_std"] > 5.0, f"napari screenshot {name!r} is blank"
            assert _png_std(figures / f"napari_{name}.png") > 0.02
        assert napari["browser"]["layers"] == 6 and napari["browser"]["info"].startswith("step ")
        assert (figures / "napari_run_browser.png").stat().st_size > 10_000
    else:
        assert napari["reason"]
