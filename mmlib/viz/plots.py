"""Static figures for the book: slices, montages, label overlays, proxy-task samples, loss curves
(the one loss-curve plot: pre-training terms and fine-tuning runs alike).

Every function returns a :class:`BookFigure` (a :class:`matplotlib.figure.Figure` built without
pyplot that IPython displays as PNG: a notebook cell shows it once, nothing leaks between
figures, no inline backend is needed); :func:`save` writes it. Slices of RAS
arrays are drawn in the neurological convention: anterior / superior up, the patient's right
on the right, with the aspect ratio of the voxel spacing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mmlib.runs import SAMPLE_KEYS, RunFolder, Samples
from mmlib.viz.data import SAMPLE_TITLES
from mmlib.viz.labels import LabelScheme, get_scheme


class BookFigure(Figure):
    """A matplotlib figure that IPython shows as PNG without pyplot or an inline backend."""

    def _repr_png_(self) -> bytes:
        import io

        from matplotlib.backends.backend_agg import FigureCanvasAgg

        buf = io.BytesIO()
        FigureCanvasAgg(self).print_png(buf)
        return buf.getvalue()


AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
"""Slice planes of RAS arrays ``(X, Y, Z)`` and the axis each cuts."""


def axis_index(axis: str | int) -> int:
    """The array axis of a plane name (``axial`` -> 2) or an axis number.

    Raises:
        ValueError: When ``axis`` is neither a plane nor 0, 1, 2.
    """
    if isinstance(axis, str):
        if axis not in AXES:
            raise ValueError(
                f"axis: unknown plane {axis!r}; choose one of {', '.join(AXES)} or 0, 1, 2"
            )
        return AXES[axis]
    if axis not in (0, 1, 2):
        raise ValueError(f"axis: expected 0, 1 or 2, got {axis}")
    return int(axis)


def plane_name(axis: str | int) -> str:
    """The plane name of an axis (2 -> ``axial``)."""
    return [k for k, v in AXES.items() if v == axis_index(axis)][0]


def take_slice(volume: np.ndarray, axis: str | int, index: int | None = None) -> np.ndarray:
    """The 2-D slice ``index`` (the middle when None) along ``axis``, transposed for
    ``imshow(origin="lower")``: rows are the second in-plane axis."""
    a = axis_index(axis)
    v = np.asarray(volume)
    i = v.shape[a] // 2 if index is None else int(np.clip(index, 0, v.shape[a] - 1))
    return np.take(v, i, axis=a).T


def best_slice(volume: np.ndarray, axis: str | int) -> int:
    """The slice with the most non-zero voxels (a label's largest cross-section), else the
    middle."""
    a = axis_index(axis)
    v = np.asarray(volume)
    counts = (v != 0).sum(axis=tuple(i for i in range(3) if i != a))
    return int(np.argmax(counts)) if counts.max() > 0 else v.shape[a] // 2


def _aspect(spacing: Sequence[float], axis: int) -> float:
    cols, rows = [i for i in range(3) if i != axis]
    return float(spacing[rows]) / float(spacing[cols])


def overlay_rgba(label_slice: np.ndarray, scheme: LabelScheme, alpha: float) -> np.ndarray:
    """RGBA ``(H, W, 4)`` of a 2-D label slice in the scheme's colours (background transparent)."""
    lab = np.asarray(label_slice).astype(np.int64)
    lut = scheme.lut(max(int(lab.max()) + 1, max(scheme.colors) + 1))
    rgba = lut[np.clip(lab, 0, len(lut) - 1)].copy()
    rgba[..., 3] *= alpha
    return rgba


def draw_slice(
    ax: Axes,
    volume: np.ndarray,
    axis: str | int = "axial",
    index: int | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    label: np.ndarray | None = None,
    scheme: str | LabelScheme | None = None,
    alpha: float = 0.5,
    title: str | None = None,
) -> None:
    """Draw one slice of ``volume`` (and of ``label`` on top) into ``ax``."""
    a = axis_index(axis)
    img = take_slice(volume, a, index)
    if vmin is None or vmax is None:
        lo, hi = (
            (0.0, 1.0)
            if (np.min(volume) >= 0 and np.max(volume) <= 1)
            else np.percentile(volume, [0.5, 99.5])
        )
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    ax.imshow(
        img,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        origin="lower",
        aspect=_aspect(spacing, a),
        interpolation="nearest",
    )
    if label is not None and alpha > 0:
        sch = get_scheme(scheme, label)
        ax.imshow(
            overlay_rgba(take_slice(label, a, index), sch, alpha),
            origin="lower",
            aspect=_aspect(spacing, a),
            interpolation="nearest",
        )
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def label_legend(
    fig: Figure,
    scheme: str | LabelScheme | None,
    label: np.ndarray | None = None,
    ncol: int | None = None,
) -> None:
    """A legend below the panels of the label names present in ``label`` (all of the
    scheme's when None)."""
    sch = get_scheme(scheme, label)
    present = set(np.unique(label).tolist()) if label is not None else set(sch.names)
    handles = [
        Patch(color=sch.colors[v][:3], label=f"{v} {n}")
        for v, n in sch.names.items()
        if v in present
    ]
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(len(handles), ncol or len(handles)),
            fontsize=8,
            frameon=False,
        )


def _grid(n: int, ncols: int | None, size: float) -> tuple[Figure, np.ndarray]:
    cols = min(n, ncols or n)
    rows = int(np.ceil(n / cols))
    fig = BookFigure(figsize=(size * cols, size * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes


def modality_grid(
    volumes: Mapping[str, np.ndarray],
    axis: str | int = "axial",
    index: int | None = None,
    *,
    label: np.ndarray | None = None,
    scheme: str | LabelScheme | None = None,
    alpha: float = 0.5,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ncols: int | None = None,
    size: float = 2.6,
    title: str | None = None,
) -> Figure:
    """One panel per volume (modality, template, run) at the same slice, with the label on top.

    Args:
        volumes: name -> ``(X, Y, Z)``, all of one shape.
        axis: ``axial``, ``coronal``, ``sagittal`` or 0-2. Defaults to ``"axial"``.
        index: the slice. Defaults to None (the label's largest cross-section, else the middle).
        label: label map ``(X, Y, Z)`` drawn on every panel. Defaults to None.
        scheme: label scheme. Defaults to None (guessed).
        alpha: label opacity. Defaults to 0.5.
        spacing: voxel size in mm. Defaults to (1, 1, 1).
        ncols: panels per row. Defaults to None (one row).
        size: inches per panel. Defaults to 2.6.
        title: figure title. Defaults to None.
    """
    if not volumes:
        raise ValueError("volumes: nothing to draw (empty mapping)")
    a = axis_index(axis)
    if index is None:
        index = best_slice(label, a) if label is not None else None
    fig, axes = _grid(len(volumes), ncols, size)
    for ax, (name, vol) in zip(axes, volumes.items()):
        draw_slice(
            ax, vol, a, index, spacing=spacing, label=label, scheme=scheme, alpha=alpha, title=name
        )
    if label is not None and alpha > 0:
        label_legend(fig, scheme, label, ncol=2 * min(len(volumes), ncols or len(volumes)))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def montage(
    volume: np.ndarray,
    axis: str | int = "axial",
    n: int = 8,
    *,
    label: np.ndarray | None = None,
    scheme: str | LabelScheme | None = None,
    alpha: float = 0.5,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ncols: int = 4,
    size: float = 2.2,
    title: str | None = None,
    extent: str = "image",
) -> Figure:
    """``n`` slices evenly spread along ``axis`` over the foreground of ``volume``, or over the
    label's extent when ``extent="label"`` (the slices through a lesion)."""
    a = axis_index(axis)
    v = np.asarray(volume)
    if extent not in ("image", "label"):
        raise ValueError(f"extent: expected 'image' or 'label', got {extent!r}")
    if extent == "label" and label is None:
        raise ValueError("extent='label' needs a label map")
    ref = (np.asarray(label) > 0) if extent == "label" else (v > v.min())
    fg = np.nonzero(ref.sum(axis=tuple(i for i in range(3) if i != a)))[0]
    lo, hi = (int(fg[0]), int(fg[-1])) if fg.size else (0, v.shape[a] - 1)
    indices = (
        (np.linspace(lo, hi, n) if extent == "label" else np.linspace(lo, hi, n + 2)[1:-1])
        .round()
        .astype(int)
    )
    fig, axes = _grid(n, ncols, size)
    for ax, i in zip(axes, indices):
        draw_slice(
            ax,
            v,
            a,
            int(i),
            spacing=spacing,
            label=label,
            scheme=scheme,
            alpha=alpha,
            title=f"{plane_name(a)} {i}",
        )
    if label is not None and alpha > 0:
        label_legend(fig, scheme, label)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    axis: str | int = "axial",
    index: int | None = None,
    *,
    scheme: str | LabelScheme | None = None,
    alpha: float = 0.5,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    size: float = 4.0,
    title: str | None = None,
) -> Figure:
    """One slice of ``image`` with ``label`` on top, and a legend of the label names."""
    a = axis_index(axis)
    index = best_slice(label, a) if index is None else index
    fig = BookFigure(figsize=(size, size + 0.5), layout="constrained")
    ax = fig.subplots()
    draw_slice(
        ax, image, a, index, spacing=spacing, label=label, scheme=scheme, alpha=alpha, title=title
    )
    label_legend(fig, scheme, label, ncol=2)
    return fig


def sample_figure(
    samples: Samples | Mapping[str, np.ndarray],
    entries: Sequence[int] | None = None,
    axis: str | int = "axial",
    index: int | None = None,
    *,
    keys: Sequence[str] = SAMPLE_KEYS,
    size: float = 2.0,
    title: str | None = None,
) -> Figure:
    """Proxy-task samples: one row per entry, columns target, mask, views, reconstructions.

    Args:
        samples: :class:`~mmlib.runs.Samples` or a mapping of ``(N, X, Y, Z)`` arrays.
        entries: which entries (rows). Defaults to None (all, at most 4).
        axis: the slice plane. Defaults to ``"axial"``.
        index: the slice. Defaults to None (the middle).
        keys: the columns. Defaults to :data:`~mmlib.runs.SAMPLE_KEYS`.
        size: inches per panel. Defaults to 2.0.
        title: figure title. Defaults to None.
    """
    arrays = (
        samples.arrays
        if isinstance(samples, Samples)
        else {k: np.asarray(v) for k, v in samples.items()}
    )
    keys = [k for k in keys if k in arrays]
    n = next(iter(arrays.values())).shape[0]
    rows = list(entries) if entries is not None else list(range(min(n, 4)))
    fig = BookFigure(figsize=(size * len(keys), size * len(rows) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), len(keys), squeeze=False)
    for r, e in enumerate(rows):
        for c, k in enumerate(keys):
            vol = arrays[k][e]
            lim = (0.0, 1.0) if k == "mask" else (None, None)
            draw_slice(
                axes[r, c],
                vol,
                axis,
                index,
                cmap="magma" if k == "mask" else "gray",
                vmin=lim[0],
                vmax=lim[1],
                title=SAMPLE_TITLES.get(k, k) if r == 0 else None,
            )
        if isinstance(samples, Samples):
            axes[r, 0].text(
                -0.05,
                0.5,
                f"{samples.study[e]}\n{samples.modality[e]}",
                transform=axes[r, 0].transAxes,
                ha="right",
                va="center",
                fontsize=8,
            )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _metrics_frame(m: Any) -> Any:
    """``metrics.csv`` of a run as a DataFrame, from a DataFrame, a RunFolder, a run folder or a
    ``metrics.csv`` path."""
    import pandas as pd

    if isinstance(m, pd.DataFrame):
        return m
    if isinstance(m, RunFolder):
        return m.metrics()
    p = Path(m)
    return RunFolder(p).metrics() if p.is_dir() else pd.read_csv(p)


def _runs_of(metrics: Any) -> dict[str, Any]:
    """Run name -> metrics DataFrame for :func:`loss_curves`'s ``metrics`` argument."""
    if isinstance(metrics, Mapping):
        return {str(k): _metrics_frame(v) for k, v in metrics.items()}
    if isinstance(metrics, list | tuple):
        return {name: r.metrics() for name, r in _named_folders(metrics).items()}
    return {"": _metrics_frame(metrics)}


def _named_folders(folders: Sequence[Any]) -> dict[str, RunFolder]:
    """Run folders by folder name (by path when two share a name)."""
    runs = [m if isinstance(m, RunFolder) else RunFolder(m) for m in folders]
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    return dict(zip(names, runs, strict=True))


def draw_loss_curves(
    ax: Axes,
    runs: Mapping[str, Any],
    key: str,
    *,
    x: str = "step",
    smooth: int = 1,
    groups: Mapping[str, str] | None = None,
) -> None:
    """Draw column ``key`` of each run's metrics as one line into ``ax``.

    Args:
        ax: the axes.
        runs: run name -> metrics DataFrame.
        key: the column.
        x: the x column. Defaults to ``"step"`` (the row number when absent).
        smooth: rolling-mean window in rows. Defaults to 1 (raw).
        groups: run name -> group (e.g. its initialisation): the lines of a group share a
            colour and one legend entry. Defaults to None (a colour and an entry per run).
    """
    order = sorted(set(groups.values())) if groups else []
    seen: set[str] = set()
    for name, df in runs.items():
        if key not in df:
            continue
        d = df[[c for c in (x, key) if c in df]].dropna(subset=[key])
        xs = d[x] if x in d else np.arange(len(d))
        ys = d[key].rolling(max(smooth, 1), min_periods=1).mean()
        if groups:
            g = groups[name]
            ax.plot(
                xs,
                ys,
                color=f"C{order.index(g) % 10}",
                alpha=0.7,
                lw=1,
                label=None if g in seen else g,
            )
            seen.add(g)
        else:
            ax.plot(xs, ys, label=name or None, lw=1.2)


def loss_curves(
    metrics: Any,
    keys: Sequence[str] | None = None,
    *,
    x: str = "step",
    log: bool = True,
    smooth: int = 1,
    group: str | None = None,
    size: tuple[float, float] = (4.0, 3.0),
    title: str | None = None,
) -> Figure:
    """Loss curves, one panel per metric, one line per run (the book's one loss-curve plot).

    Args:
        metrics: a DataFrame, a ``metrics.csv`` path, a :class:`~mmlib.runs.RunFolder`, a
            mapping of run name -> any of those, or a list of run folders (named by folder).
        keys: the columns to plot. Defaults to None (every numeric column but ``x`` and the
            bookkeeping ones: epoch, lr, time).
        x: the x column. Defaults to ``"step"`` (the row number when absent).
        log: logarithmic y axis. Defaults to True.
        smooth: rolling-mean window in rows. Defaults to 1 (raw).
        group: a ``results.json`` key of run folders (e.g. ``"init"``): runs with the same
            value share a colour and a legend entry. Defaults to None.
        size: inches per panel. Defaults to (4, 3).
        title: figure title. Defaults to None.

    Raises:
        ValueError: When there is nothing to plot, or ``group`` is given without run folders.
    """
    runs = _runs_of(metrics)
    groups = None
    if group is not None:
        if not isinstance(metrics, list | tuple):
            raise ValueError(
                "loss_curves: group= needs a list of run folders (their "
                "results.json holds the group)"
            )
        groups = {name: str(r.results.get(group)) for name, r in _named_folders(metrics).items()}
    skip = {x, "epoch", "lr", "time", "seconds", "wall", "split"}
    if keys is None:
        keys = list(
            dict.fromkeys(
                c
                for df in runs.values()
                for c in df.select_dtypes("number").columns
                if c not in skip
            )
        )
    keys = [k for k in keys if any(k in df for df in runs.values())]
    if not keys:
        raise ValueError(
            "metrics: no numeric columns to plot; pass keys=[...] naming columns of metrics.csv"
        )
    fig = BookFigure(figsize=(size[0] * len(keys), size[1]), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(keys), squeeze=False)).ravel()
    for ax, k in zip(axes, keys, strict=False):
        draw_loss_curves(ax, runs, k, x=x, smooth=smooth, groups=groups)
        if log and all((df[k].dropna() > 0).all() for df in runs.values() if k in df):
            ax.set_yscale("log")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def image_figure(image: np.ndarray, title: str | None = None, width: float = 8.0) -> Figure:
    """A figure showing an RGB(A) image (a napari screenshot) at its aspect ratio."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    fig = BookFigure(figsize=(width, width * h / w + (0.3 if title else 0.0)), layout="constrained")
    ax = fig.subplots()
    ax.imshow(img)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` (PNG, SVG or PDF by suffix), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
