"""mmlib.viz in a real napari viewer (Xvfb): layers, labels, grid, screenshots, the dock
widget, mmlib view.

These tests need an X display: pytest-xvfb provides one for the session when Xvfb is installed;
without pytest-xvfb, :func:`mmlib.viz.display.ensure_display` starts one. They are skipped,
with the reason, only where Xvfb is missing, and fail instead when ``MMLIB_CI`` is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmlib.viz.display import ensure_display, has_display, no_display_reason, xvfb_available

CAN_DISPLAY = has_display() or xvfb_available()
if not CAN_DISPLAY and os.environ.get("MMLIB_CI"):
    raise RuntimeError(f"GUI tests cannot run in CI: {no_display_reason()}")
pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not CAN_DISPLAY, reason=no_display_reason() or "no display"),
]
if CAN_DISPLAY:
    ensure_display()  # a private Xvfb when pytest-xvfb has not set DISPLAY; selects Qt's xcb

from test_viz_data import SHAPE, write_run, write_study  # noqa: E402

from mmlib.modalities import MODALITIES  # noqa: E402
from mmlib.runs import SAMPLE_KEYS, RunFolder  # noqa: E402
from mmlib.viz import napari as mv  # noqa: E402
from mmlib.viz.data import load_study_folder  # noqa: E402

BLANK = 5.0  # RGB std of a screenshot below which it counts as blank (black canvas: 0)


@pytest.fixture
def shown(make_napari_viewer):
    """A shown viewer (hidden canvases render black)."""
    return make_napari_viewer(show=True)


def test_open_study_layers(tmp_path: Path, make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layers = mv.open_study(write_study(tmp_path / "BraTS2021_00001"), viewer)
    assert [layer.name for layer in viewer.layers] == [
        "BraTS2021_00001/flair",
        "BraTS2021_00001/t1",
        "BraTS2021_00001/t1c",
        "BraTS2021_00001/t2",
        "BraTS2021_00001/segmentation",
    ]
    assert layers == list(viewer.layers)
    for layer in viewer.layers:
        assert layer.data.shape == SHAPE
        np.testing.assert_allclose(layer.scale, (2.0, 2.0, 2.0))
    assert viewer.dims.order == (2, 1, 0)  # axial plane shown, z on the slider
    seg = viewer.layers["BraTS2021_00001/segmentation"]
    assert seg.metadata["mmlib"]["scheme"] == "brats2021"
    np.testing.assert_allclose(seg.get_color(2)[:3], (0.15, 0.80, 0.20), atol=1e-3)  # oedema green
    np.testing.assert_allclose(
        seg.get_color(4)[:3], (1.00, 0.90, 0.10), atol=1e-3
    )  # enhancing yellow
    assert (
        dict(zip(seg.features["index"], seg.features["name"]))[1] == "necrotic / non-enhancing core"
    )


def test_affine_places_layers_in_world(tmp_path: Path, make_napari_viewer) -> None:
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    aff[:3, 3] = [-10, -20, 5]
    st = load_study_folder(write_study(tmp_path / "s", affine=aff))
    viewer = make_napari_viewer()
    mv.open_study(st, viewer, modalities=["t1", "t2"])
    layer = viewer.layers["s/t1"]
    np.testing.assert_allclose(layer.scale, (1.5, 1.5, 3.0))
    np.testing.assert_allclose(layer.data_to_world((2, 3, 4)), aff[:3] @ [2, 3, 4, 1])
    with pytest.raises(KeyError, match="s has no pd"):
        mv.open_study(st, viewer, modalities=["pd"])


def test_grid_mode_compares_modalities(tmp_path: Path, make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    mv.open_study(write_study(tmp_path / "BraTS2021_00001"), viewer, grid=True)
    grid = mv.grid_of(viewer)
    assert (
        grid.enabled and grid.stride == 2 and len(viewer.layers) == 8
    )  # image + its own label copy
    mv.set_grid(viewer, False)
    assert not grid.enabled


def test_open_sample_templates_and_runs(tmp_path: Path, make_napari_viewer) -> None:
    run = write_run(tmp_path / "pretrain" / "r1")
    other = write_run(tmp_path / "pretrain" / "r2", seed=1)
    viewer = make_napari_viewer()
    layers = mv.open_sample(
        RunFolder(run).samples(10), viewer, study="s0", modality="flair", spacing=(2, 2, 2)
    )
    assert [layer.name for layer in layers] == [f"s0/flair: {k}" for k in SAMPLE_KEYS]
    assert all(
        layer.data.shape == (16, 16, 16) and tuple(layer.scale) == (2, 2, 2) for layer in layers
    )
    assert layers[0].metadata["mmlib"]["step"] == 10
    viewer.layers.clear()
    tpl = mv.open_templates(
        run / "checkpoints" / "step_0000020", viewer, modalities=["flair", "adc"]
    )
    assert [layer.name for layer in tpl] == ["template/flair", "template/adc"]
    np.testing.assert_allclose(tpl[0].scale, (3.0, 3.0, 3.0))
    np.testing.assert_allclose(tpl[0].translate, (-18, -21, -15))
    viewer.layers.clear()
    cmp = mv.compare_runs([run, other], viewer, study="s1")
    assert [layer.name for layer in cmp] == [
        "s1/t2: target",
        "pretrain/r1: recon_a",
        "pretrain/r2: recon_a",
    ]
    assert mv.grid_of(viewer).enabled


def test_screenshots_are_not_blank(tmp_path: Path, shown) -> None:
    mv.open_study(write_study(tmp_path / "BraTS2021_00001"), shown, grid=True)
    image = mv.screenshot(shown, tmp_path / "study.png")
    assert image.ndim == 3 and image.shape[2] == 4 and (tmp_path / "study.png").is_file()
    assert mv.pixel_std(image) > BLANK
    shown.layers.clear()
    mv.set_grid(shown, False)
    mv.open_study(write_study(tmp_path / "BraTS2021_00001"), shown, modalities=["t1c"])
    surfaces = mv.set_3d(shown)
    assert shown.dims.ndisplay == 3 and shown.layers[0].rendering == "attenuated_mip"
    assert [s.name for s in surfaces] == [
        f"BraTS2021_00001/segmentation: {n}"
        for n in ("necrotic / non-enhancing core", "oedema", "enhancing tumour")
    ]
    assert not shown.layers["BraTS2021_00001/segmentation"].visible
    # the surfaces sit where the label voxels are: world bounds within the labels' world bounds
    oedema = surfaces[1]
    lo, hi = oedema.data[0].min(axis=0), oedema.data[0].max(axis=0)
    np.testing.assert_allclose(oedema.data_to_world(lo), np.array([8, 10, 7]) * 2.0, atol=2.0)
    np.testing.assert_allclose(oedema.data_to_world(hi), np.array([11, 13, 10]) * 2.0, atol=2.0)
    assert mv.pixel_std(mv.screenshot(shown, reset_view=False)) > BLANK
    shown.dims.ndisplay = 2
    shown.layers.clear()
    mv.open_sample(RunFolder(write_run(tmp_path / "r")).samples(), shown)
    assert mv.pixel_std(mv.screenshot(shown, canvas_only=False)) > BLANK


def test_screenshot_of_hidden_viewer_is_refused(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=False)
    with pytest.raises(RuntimeError, match="the viewer is hidden"):
        mv.screenshot(viewer)


def test_dock_widget_browses_a_run(tmp_path: Path, make_napari_viewer) -> None:
    from mmlib.viz._widget import TEMPLATES, RunBrowser

    run = write_run(tmp_path / "pretrain" / "r1")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 4, 4)), name="mine")  # not the browser's: must survive
    browser = RunBrowser(viewer, run_dir=run)
    viewer.window.add_dock_widget(browser, name="mmlib run browser")  # napari resets choices here
    assert browser._step.choices == (10, 20) and browser._step.value == 20
    assert browser._study.choices == ("s0", "s1") and browser._modality.choices == ("t1", "flair")
    assert [layer.name for layer in viewer.layers][1:] == [f"s0/t1: {k}" for k in SAMPLE_KEYS]
    browser.select(step=10, study="s1")
    assert browser._modality.choices == ("t2",)
    assert [layer.name for layer in viewer.layers] == ["mine"] + [
        f"s1/t2: {k}" for k in SAMPLE_KEYS
    ]
    assert viewer.layers[-1].metadata["mmlib"]["step"] == 10
    browser.select(what=TEMPLATES)
    assert [layer.name for layer in viewer.layers] == ["mine"] + [
        f"template/{m}" for m in MODALITIES
    ]
    assert browser.info == "step 10: templates"
    browser.load(tmp_path)
    assert "not a run folder" in browser.info


def test_plugin_reader_and_dock_widget(tmp_path: Path, make_napari_viewer) -> None:
    from npe2 import PluginManager

    from mmlib.viz._widget import RunBrowser

    pm = PluginManager.instance()
    if "mmlib" not in pm:
        pm.discover()
    viewer = make_napari_viewer()
    opened = viewer.open(str(write_study(tmp_path / "BraTS2021_00001")), plugin="mmlib")
    assert [layer.name for layer in opened][-1] == "BraTS2021_00001/segmentation"
    np.testing.assert_allclose(opened[0].scale, (2.0, 2.0, 2.0))
    viewer.layers.clear()
    _, browser = viewer.window.add_plugin_dock_widget("mmlib", "Run browser")
    assert isinstance(browser, RunBrowser)  # napari hands plugins a public-only proxy of the viewer
    browser.load(write_run(tmp_path / "pretrain" / "r1"))
    assert len(viewer.layers) == len(SAMPLE_KEYS)


def _view_args(*argv: str):
    import argparse

    from mmlib.cli import view as cli

    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    return parser.parse_args(list(argv))


def test_mmlib_view_opens_each_kind_of_path(tmp_path: Path, make_napari_viewer) -> None:
    from mmlib.cli.view import open_path

    study = write_study(tmp_path / "BraTS2021_00001")
    run = write_run(tmp_path / "pretrain" / "r1")
    viewer = make_napari_viewer()
    assert (
        open_path(viewer, _view_args(str(study), "--plane", "coronal", "--scheme", "brats2023"))
        is None
    )
    assert len(viewer.layers) == 5 and viewer.dims.order == (1, 2, 0)
    assert viewer.layers[-1].metadata["mmlib"]["scheme"] == "brats2023"
    viewer.layers.clear()
    open_path(viewer, _view_args(str(run / "samples" / "step_0000010.npz"), "--study", "s1"))
    assert viewer.layers[0].name == "s1/t2: target"
    viewer.layers.clear()
    open_path(viewer, _view_args(str(study / "BraTS2021_00001_seg.nii.gz")))
    assert viewer.layers[0].name == "BraTS2021_00001_seg" and viewer.layers[0].data.shape == SHAPE
    viewer.layers.clear()
    browser = open_path(viewer, _view_args(str(run), "--step", "10", "--modality", "flair"))
    assert browser.info == "step 10: s0 / flair" and len(viewer.layers) == len(SAMPLE_KEYS)


@pytest.mark.slow
def test_mmlib_view_screenshot_command(tmp_path: Path) -> None:
    run = write_run(tmp_path / "pretrain" / "r1")
    out = tmp_path / "run.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmlib",
            "view",
            str(run),
            "--study",
            "s1",
            "--screenshot",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(step 20: s1 / t2)" in proc.stdout
    std = float(proc.stdout.split("std ")[1].split()[0])
    assert out.is_file() and std > BLANK, proc.stdout
