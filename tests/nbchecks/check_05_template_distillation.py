"""Checks of notebook 05's results.json at smoke scale."""

from __future__ import annotations

import pathlib

import nibabel as nib
import numpy as np


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["nifti_affine_ok"]
    img = nib.load(out_dir / "templates.nii.gz")
    spacing = results["template_spacing"]
    assert np.allclose(np.diag(img.affine)[:3], spacing)
    # the grid is centred on the head: the world position of its centre voxel is 0
    centre = img.affine @ np.r_[(np.asarray(img.shape[:3]) - 1) / 2, 1.0]
    assert np.allclose(centre[:3], 0.0, atol=1e-4)
    assert list(img.shape[:3]) == results["template_shape"] and img.shape[3] == 8
    # the mean image, used as a template, fills the masked cubes with the right anatomy
    assert results["standin_fill_corr"] > 0.5
    assert all(c >= 1 for c in results["mean_coverage"].values())
    # training template distillation alone lowers the loss and moves the templates off zero
    assert results["steps"] >= 2 and results["md_final"] < results["md_first"]
    assert 0 < results["masked_mse_after"] < results["masked_mse_before"]
    assert max(results["template_std"].values()) > 0
    assert all(-1.0 <= r <= 1.0 for r in results["template_corr"].values())
    # both template scalings trained and reported; the first (global) is template_corr
    by = results["template_corr_by_scaling"]
    assert set(by) == {"global", "crop"} and results["template_scaling"] == "global"
    assert by["global"] == results["template_corr"] and set(by["crop"]) == set(by["global"])
    assert (out_dir / "figures" / "templates_crop.png").stat().st_size > 1000
    assert pathlib.Path(results["run_dir"], "DONE").is_file()
    for name in (
        "template_space.png",
        "views.png",
        "loss.png",
        "reconstruction.png",
        "templates.png",
    ):
        assert (out_dir / "figures" / name).stat().st_size > 1000, name
    # the learned T1 template is set against the ICBM 2009a T1 on the template grid; smoke's
    # store is unregistered (a reference only), demo's and paper's are registered (affine)
    assert results["store_register"] == "none"
    assert -1.0 <= results["template_atlas_corr"] <= 1.0
    assert (out_dir / "figures" / "templates_icbm.png").is_file()
