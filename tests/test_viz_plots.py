"""mmlib.viz.plots and mmlib.viz.widgets: static figures and ipywidgets viewers
(no display needed)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure
from test_viz_data import SHAPE, write_run, write_study

from mmlib.proxy.templates import load_templates
from mmlib.runs import RunFolder, write_json
from mmlib.viz import plots as P
from mmlib.viz import widgets as W
from mmlib.viz.data import load_study_folder
from mmlib.viz.labels import SCHEMES


def _pixels(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def test_take_slice_orientation() -> None:
    v = np.zeros((4, 5, 6))
    v[3, 1, 2] = 1  # right, posterior, middle
    ax = P.take_slice(v, "axial", 2)
    assert ax.shape == (5, 4) and ax[1, 3] == 1  # rows = y (drawn with origin lower), columns = x
    assert P.take_slice(v, "coronal", 1).shape == (6, 4)
    assert P.take_slice(v, "sagittal", 3)[2, 1] == 1
    with pytest.raises(ValueError, match="axis: unknown plane 'transverse'"):
        P.take_slice(v, "transverse")


def test_best_slice_is_largest_label_section() -> None:
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:5, 2:5, 7] = 1
    lab[4, 4, 3] = 2
    assert P.best_slice(lab, "axial") == 7
    assert P.best_slice(np.zeros((10, 10, 10)), 0) == 5


def test_overlay_rgba_uses_scheme_colours() -> None:
    sl = np.array([[0, 1], [2, 4]])
    rgba = P.overlay_rgba(sl, SCHEMES["brats2021"], 0.5)
    assert rgba[0, 0, 3] == 0 and rgba[1, 1, 3] == pytest.approx(0.5)
    np.testing.assert_allclose(rgba[0, 1, :3], SCHEMES["brats2021"].colors[1][:3])


def test_study_figures(tmp_path: Path) -> None:
    st = load_study_folder(write_study(tmp_path / "BraTS2021_00001"))
    vols = {m: v.data for m, v in st.images.items()}
    fig = P.modality_grid(vols, label=st.label.data, title="x")
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.images]) == 4
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].texts] == [
        "1 necrotic / non-enhancing core",
        "2 oedema",
        "4 enhancing tumour",
    ]
    m = P.montage(vols["t1"], "coronal", n=6, ncols=3)
    assert len([a for a in m.axes if a.images]) == 6
    lesion = P.montage(vols["t1"], "axial", n=3, label=st.label.data, extent="label")
    assert [a.get_title() for a in lesion.axes if a.images] == [
        "axial 7",
        "axial 8",
        "axial 10",
    ]  # seg z 7..10
    with pytest.raises(ValueError, match="needs a label map"):
        P.montage(vols["t1"], extent="label")
    out = P.save(P.overlay(vols["t2"], st.label.data), tmp_path / "fig" / "o.png")
    assert out.is_file() and matplotlib.image.imread(out).std() > 0.01
    with pytest.raises(ValueError, match="volumes: nothing to draw"):
        P.modality_grid({})


def test_sample_figure_and_loss_curves(tmp_path: Path) -> None:
    run = RunFolder(write_run(tmp_path / "pretrain" / "r1"))
    fig = P.sample_figure(run.samples())
    assert len([a for a in fig.axes if a.images]) == 3 * 6
    assert fig.axes[2].get_title() == "view A (template fill)"
    curves = P.loss_curves(run)
    assert [a.get_title() for a in curves.axes] == ["loss", "md", "cmr"]  # lr is bookkeeping
    assert curves.axes[0].get_yscale() == "log"
    two = P.loss_curves({"a": run, "b": run.path / "metrics.csv"}, keys=["loss"], smooth=3)
    assert len(two.axes[0].lines) == 2 and two.axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="no numeric columns"):
        P.loss_curves(run, keys=["nope"])


def _finetuned(root: Path, init: str, seed: int) -> Path:
    run = write_run(root / f"{init}-{seed}", steps=(10,))
    write_json(run / "results.json", {"init": init, "seed": seed})
    return run


def test_loss_curves_of_runs_grouped_by_initialisation(tmp_path: Path) -> None:
    runs = [_finetuned(tmp_path, init, seed) for init in ("scratch", "brainmvp") for seed in (0, 1)]
    fig = P.loss_curves(runs, keys=["loss"], group="init", log=False, smooth=5)
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and ax.get_yscale() == "linear"
    # one colour and one legend entry per initialisation, however many seeds
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["brainmvp", "scratch"]
    colours = {line.get_color() for line in ax.lines}
    assert len(colours) == 2
    y = ax.lines[0].get_ydata()
    assert y[0] == pytest.approx(1.0) and y[4] == pytest.approx(
        np.mean([1 / (s + 1) for s in range(5)])
    )
    with pytest.raises(ValueError, match="group= needs a list of run folders"):
        P.loss_curves(RunFolder(runs[0]), group="init")
    # the fine-tuning chapters' pyplot name draws the same lines
    import matplotlib.pyplot as plt

    from mmlib.evaluate.figures import plot_loss_curves

    axes = plot_loss_curves(runs)
    assert [tuple(line.get_ydata()) for line in axes.lines] == [
        tuple(line.get_ydata()) for line in ax.lines
    ]
    assert axes.get_ylabel() == "training loss" and len(axes.get_legend().get_texts()) == 2
    plt.close("all")


def test_slice_viewer_controls_change_the_image(tmp_path: Path) -> None:
    st = load_study_folder(write_study(tmp_path / "BraTS2021_00001"))
    v = W.study_viewer(st)
    assert v.volume.options == ("flair", "t1", "t1c", "t2", W.SIDE_BY_SIDE)
    assert v.slice.value == P.best_slice(st.label.data, "axial") and v.slice.max == SHAPE[2] - 1
    assert not v.opacity.disabled
    first = _pixels(bytes(v.image.value))
    v.opacity.value = 0.0
    no_overlay = _pixels(bytes(v.image.value))
    assert not np.array_equal(first, no_overlay)
    v.axis.value = "sagittal"
    assert v.slice.max == SHAPE[0] - 1
    v.volume.value = W.SIDE_BY_SIDE
    assert len([a for a in v.figure().axes if a.images]) == 4
    bundle = v._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert _pixels(base64.b64decode(bundle["image/png"])).std() > 0.01


def test_sample_and_template_viewers(tmp_path: Path) -> None:
    run = RunFolder(write_run(tmp_path / "r"))
    sv = W.sample_viewer(run.samples(), study="s1")
    assert (
        sv.volume.value == W.SIDE_BY_SIDE and sv.opacity.disabled and "s1 / t2, step 20" in sv.title
    )
    assert len([a for a in sv.figure().axes if a.images]) == 6
    tv = W.template_viewer(load_templates(run.checkpoint()), modalities=["t1", "t2"])
    assert list(tv.volumes) == ["t1", "t2"] and tv.spacing == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="one shape"):
        W.SliceViewer({"a": np.zeros((4, 4, 4)), "b": np.zeros((5, 4, 4))})
