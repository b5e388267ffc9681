"""Figures of the downstream chapters, built from run folders, tables, a store and a task.

The chapters call these; they hold no logic of their own: plots of the reports' tables
(:func:`plot_paired`, :func:`plot_label_efficiency`, :func:`plot_subsets`,
:func:`plot_replacement_pairs`, :func:`plot_loss_curves`), captions built from the data
(:func:`paired_caption`, :func:`label_efficiency_caption`) and :func:`show_figure` (a figure
with its caption, as the book shows it); notebook 07's task regions and qualitative
segmentations by initialisation; notebook 10's template fill of each modality.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from mmlib.data.labelled import Volumes
from mmlib.evaluate.reports import summary_table
from mmlib.evaluate.scoring import load_network
from mmlib.evaluate.tables import span_text
from mmlib.proxy.missing import fill_missing
from mmlib.runs import read_results
from mmlib.tasks import TaskSpec, brats_regions, task_rows, task_splits
from mmlib.viz.plots import BookFigure


def study_with_labels(store: Any, studies: Iterable[str], values: Iterable[int]) -> str:
    """The first of ``studies`` whose label map holds any of ``values`` (else the first study).

    Args:
        store: a :class:`mmlib.data.store.Store`.
        studies: candidate study ids, in order.
        values: label values looked for (e.g. ``{3, 4}``: enhancing tumour in either convention).

    Raises:
        ValueError: When ``studies`` is empty.
    """
    studies = list(studies)
    if not studies:
        raise ValueError("study_with_labels: no studies to choose from")
    wanted = {int(v) for v in values}
    for study in studies:
        if wanted & set(np.unique(np.asarray(store.label(study))).tolist()):
            return study
    return studies[0]


def regions_figure(store: Any, spec: TaskSpec, study: str, image: str = "flair") -> Figure:
    """One axial slice of a study: an image, its label map and each region the task scores.

    The slice is the one with the most voxels of the second region (the tumour core for BraTS
    regions), the region whose rules differ between label conventions.

    Args:
        store: the store.
        spec: a resolved segmentation task with BraTS-like regions.
        study: the study id.
        image: the modality drawn in the first panel. Defaults to "flair".

    Raises:
        ValueError: When the task is not a segmentation task.
    """
    if spec.regions is None:
        raise ValueError(f"regions_figure: task {spec.name} is not a segmentation task")
    label = np.asarray(store.label(study))
    regions = np.asarray(brats_regions(label, spec.regions.convention))
    z = int(np.argmax(regions[min(1, len(regions) - 1)].sum((0, 1))))
    fig = BookFigure(figsize=(2.6 * (2 + len(regions)), 2.8))
    axes = fig.subplots(1, 2 + len(regions))
    axes[0].imshow(np.asarray(store.image(study, image))[:, :, z].T, cmap="gray", origin="lower")
    axes[0].set_title(image.upper() if image == "flair" else image)
    axes[1].imshow(label[:, :, z].T, origin="lower", cmap="viridis", vmin=0, vmax=4)
    axes[1].set_title("labels")
    for ax, name, region in zip(axes[2:], spec.regions.names, regions):
        ax.imshow(region[:, :, z].T, origin="lower", cmap="gray")
        ax.set_title(f"{name}: {int(region.sum())} voxels")
    for ax in axes:
        ax.axis("off")
    return fig


def runs_by_init(runs: Sequence[str | Path], seed: int) -> dict[str, Path]:
    """The run folders of one seed, keyed by initialisation (``results.json``'s ``init``)."""
    out: dict[str, Path] = {}
    for run in runs:
        res = read_results(run) or {}
        if res.get("seed") == seed:
            out[str(res["init"])] = Path(run)
    return out


def qualitative_figure(runs: Sequence[str | Path], seed: int) -> Figure:
    """Input, ground truth and prediction of one saved test study, a row per initialisation.

    Args:
        runs: scored fine-tuning run folders (with ``predictions/``).
        seed: the fine-tuning seed whose runs are shown (paired: same study, same crops).

    Raises:
        ValueError: When no run has that seed.
    """
    chosen = runs_by_init(runs, seed)
    if not chosen:
        raise ValueError(f"qualitative_figure: no run with seed {seed} among {len(runs)} runs")
    fig = BookFigure(figsize=(9, 3 * len(chosen)))
    axes = fig.subplots(len(chosen), 3, squeeze=False)
    for row, (init, run) in zip(axes, chosen.items()):
        plot_segmentation(run, axes=row)
        row[2].set_title(f"prediction: {init}", fontsize=9)
    return fig


def template_fill_figure(run_dir: str | Path, store: Any, study: str | None = None) -> Figure:
    """Each input modality of a test study beside the template fill that would replace it.

    Args:
        run_dir: a fine-tuning run whose initialisation has templates.
        store: the store the run was trained on.
        study: a test study of the run's task. Defaults to None (the first test study).

    Raises:
        ValueError: When the run has no templates (a scratch initialisation).
    """
    _net, spec, templates, _cfg = load_network(run_dir)
    if templates is None:
        raise ValueError(
            f"{run_dir}: its initialisation has no templates (scratch); pass a "
            "run pre-trained with templates, e.g. init=brainmvp"
        )
    if study is None:
        study = task_splits(spec, task_rows(store.manifest, spec))["test"][0]
    sample = Volumes(store, [study], spec.modalities)[0]
    absent = torch.zeros(1, len(spec.modalities), dtype=torch.bool)
    filled = fill_missing(
        sample["image"][None],
        absent,
        spec.modalities,
        "template",
        templates,
        sample["template_origin"][None],
        sample["spacing"],
    )
    z = sample["image"].shape[-1] // 2
    n = len(spec.modalities)
    fig = BookFigure(figsize=(3 * n, 5.6))
    axes = fig.subplots(2, n, squeeze=False)
    for j, m in enumerate(spec.modalities):
        axes[0, j].imshow(sample["image"][j, :, :, z].T, cmap="gray", origin="lower")
        axes[0, j].set_title(f"{m}: the scan")
        axes[1, j].imshow(filled[0, j, :, :, z].T, cmap="gray", origin="lower")
        axes[1, j].set_title(f"{m}: template fill")
    for ax in axes.flat:
        ax.axis("off")
    return fig


def plot_label_efficiency(runs: pd.DataFrame, metric: str, task: str, ax: Any = None) -> Any:
    """Mean of ``metric`` over seeds against the label fraction, with its 95 % t interval
    (no bar for a point with one seed), one line per initialisation."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    tab = summary_table(runs[runs["task"] == task], metric, ("label_fraction", "init"))
    for init, sub in tab.groupby("init"):
        sub = sub.sort_values("label_fraction")
        x = 100 * sub["label_fraction"].to_numpy(float)
        mean = sub["mean"].to_numpy(float)
        err = np.nan_to_num(
            np.stack([mean - sub["ci_lo"].to_numpy(float), sub["ci_hi"].to_numpy(float) - mean]),
            nan=0.0,
        )
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=str(init))
    ax.set_xlabel("labelled training studies (%)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: label efficiency")
    ax.legend(fontsize=8)
    return ax


def plot_paired(
    diffs: pd.DataFrame, title: str = "", ax: Any = None, baseline: str = "scratch"
) -> Any:
    """Per-seed paired differences (dots) and their mean with its 95 % interval (square and
    bar: orange when the interval excludes zero, grey when not) per initialisation.

    Args:
        diffs: from :func:`paired_differences` (``ci_lo``/``ci_hi``; an older frame without
            them is drawn with ± sd).
        title: the axes' title. Defaults to "".
        ax: the axes. Defaults to None (a new figure).
        baseline: the baseline's name on the y axis. Defaults to "scratch".
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    labels = []
    for i, (_, row) in enumerate(diffs.iterrows()):
        vals = list(row["diffs"].values())
        ax.scatter([i] * len(vals), vals, color="k", s=14, zorder=3)
        m = float(row["mean_diff"])
        if "ci_lo" in row and np.isfinite(row["ci_lo"]):
            err = [[m - float(row["ci_lo"])], [float(row["ci_hi"]) - m]]
        else:
            err = [[0.0 if np.isnan(row["sd_diff"]) else float(row["sd_diff"])]] * 2
        ax.errorbar(
            [i],
            [m],
            yerr=err,
            fmt="s",
            color="C1" if row["resolved"] else "C7",
            capsize=4,
            zorder=2,
        )
        extra = f" {100 * row['label_fraction']:.0f}%" if "label_fraction" in row else ""
        labels.append(f"{row['init']}{extra}\nn={int(row['n_seeds'])}")
    ax.axhline(0, color="grey", lw=0.8)
    # long names (brainmvp_nocl) collide when level; tilted they stay readable
    tilt = len(labels) > 3
    ax.set_xticks(
        range(len(labels)),
        labels,
        fontsize=8,
        rotation=30 if tilt else 0,
        ha="right" if tilt else "center",
    )
    ax.set_ylabel(f"difference to {baseline} (paired by seed)")
    ax.set_title(title)
    return ax


def plot_subsets(table: pd.DataFrame, metric: str = "dice_mean", ax: Any = None) -> Any:
    """Modality-subset table as a heat map: rows subsets, columns fill (and init when present)."""
    import matplotlib.pyplot as plt

    cols = [c for c in ("init", "fill") if c in table.columns]
    pivot = table.pivot_table(index="subset", columns=cols, values=metric, sort=False)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.4 + 1.2 * pivot.shape[1], 0.6 + 0.32 * pivot.shape[0]))
    im = ax.imshow(
        pivot.to_numpy(float),
        aspect="auto",
        cmap="viridis",
        vmin=0,
        vmax=max(1e-6, float(np.nanmax(pivot.to_numpy(float)))),
    )
    ax.set_yticks(range(pivot.shape[0]), list(pivot.index), fontsize=8)
    ax.set_xticks(
        range(pivot.shape[1]),
        ["/".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in pivot.columns],
        fontsize=8,
        rotation=30,
    )
    for (i, j), v in np.ndenumerate(pivot.to_numpy(float)):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="w" if v < 0.6 * np.nanmax(pivot.to_numpy(float)) else "k",
            )
    ax.figure.colorbar(im, ax=ax, label=metric)
    return ax


def plot_replacement_pairs(pairs: pd.DataFrame, ax: Any = None) -> Any:
    """Gain of template-replacement fine-tuning per modality subset, one dot per seed.

    Args:
        pairs: :func:`mmlib.evaluate.robustness.replacement_pairs` rows.
        ax: the axes. Defaults to None (a new figure).

    Returns:
        The axes: a horizontal bar per subset (mean gain over seeds) with each seed's gain as
        a dot, and the zero line.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(pairs)))
    y = np.arange(len(pairs))[::-1]
    ax.barh(y, pairs["gain"], color=["tab:green" if g > 0 else "tab:red" for g in pairs["gain"]])
    seeds = [c for c in pairs.columns if c.startswith("gain_s")]
    for c in seeds:
        ax.scatter(pairs[c], y, s=12, color="k", zorder=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, list(pairs["subset"]), fontsize=8)
    ax.set_xlabel(f"Dice with minus without template replacement ({len(seeds)} seeds)")
    return ax


def seeds_and_studies(runs: pd.DataFrame) -> str:
    """How many seeds and test studies a set of runs rests on, for captions.

    Returns:
        E.g. ``"3 seeds (0, 1, 2), 12 test studies per run"`` (ranges when groups differ).
    """
    if runs.empty:
        return "no runs"
    seeds = sorted(int(s) for s in runs["seed"].dropna().unique())
    n_test = span_text(runs["n_test"]) if "n_test" in runs.columns else "?"
    return (
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}), "
        f"{n_test} test studies per run"
    )


def paired_caption(
    diffs: pd.DataFrame, metric: str = "Dice", baseline: str = "scratch", what: str = ""
) -> str:
    """The caption of a :func:`plot_paired` figure, from the comparisons it draws.

    Args:
        diffs: the frame drawn (from :func:`paired_differences`).
        metric: the score's name. Defaults to "Dice".
        baseline: the baseline. Defaults to "scratch".
        what: a first sentence (the task, the setting). Defaults to "".
    """
    resolved = int(diffs["resolved"].sum()) if len(diffs) else 0
    return (
        f"{what + ' ' if what else ''}Paired {metric} differences to {baseline}: each dot is "
        f"one fine-tuning seed (the initialisation's score minus {baseline}'s at that seed), "
        "the square the mean over seeds with its 95 % paired-t interval, orange where the "
        f"interval excludes zero (resolved: {resolved} of {len(diffs)}), grey where it does "
        f"not. Seeds per comparison: {span_text(diffs.get('n_seeds', []))}; test studies per run: "
        f"{span_text(diffs.get('n_test', []))}."
    )


def label_efficiency_caption(runs: pd.DataFrame, task: str, metric: str = "Dice") -> str:
    """The caption of a :func:`plot_label_efficiency` figure, from its runs."""
    sel = runs[runs["task"] == task]
    fractions = sorted(sel["label_fraction"].dropna().unique())
    labelled = (
        {
            float(cast(float, f)): span_text(g["n_labelled"])
            for f, g in sel.groupby("label_fraction")
        }
        if "n_labelled" in sel.columns
        else {}
    )
    per = sel.groupby(["label_fraction", "init"])["seed"].nunique()
    has_steps = "steps" in sel.columns
    steps = (
        {float(cast(float, f)): span_text(g["steps"]) for f, g in sel.groupby("label_fraction")}
        if has_steps
        else {}
    )
    one_budget = has_steps and sel["steps"].nunique() == 1
    points = ", ".join(
        f"{100 * f:.0f} %: {labelled.get(float(f), '?')} studies"
        + ("" if one_budget else f", {steps.get(float(f), '?')} steps")
        for f in fractions
    )
    budget = (
        f"every point trained {span_text(sel['steps'])} steps."
        if one_budget
        else "each point trained for the same number of passes over its labelled studies "
        "(train.epochs), so a larger labelled set also gets more steps."
        if has_steps
        else "training steps not recorded."
    )
    return (
        f"Mean {metric} on the {task} test studies against the fraction of labelled training "
        f"studies ({points}), one line per initialisation; bars: the 95 % t interval of the mean "
        f"over seeds ({span_text(per.to_numpy())} seeds per point; none with one seed); "
        f"{span_text(sel['n_test'])} test studies per run; {budget}"
    )


def show_figure(fig: Any, caption: str, dpi: int = 80) -> Any:
    """A figure with its caption, as one HTML ``<figure>`` (``display(show_figure(fig, text))``).

    The figure is rendered to PNG (embedded) and closed, so that the inline backend does not
    show it a second time.

    Returns:
        An ``IPython.display.HTML``.
    """
    import base64
    import html
    import io

    import matplotlib.pyplot as plt
    from IPython.display import HTML

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return HTML(
        f'<figure style="margin: 0 0 1em 0"><img src="data:image/png;base64,{data}" '
        f'style="max-width: 100%" alt="{html.escape(caption[:120])}"/>'
        f'<figcaption style="font-size: 0.9em">{html.escape(caption)}</figcaption></figure>'
    )


def plot_loss_curves(run_dirs: Sequence[str | Path], ax: Any = None, smooth: int = 5) -> Any:
    """Training loss of fine-tuning run folders into pyplot axes, one line each, coloured by
    initialisation (drawn by :func:`mmlib.viz.plots.draw_loss_curves`, the one loss-curve plot).
    """
    import matplotlib.pyplot as plt

    from mmlib.runs import RunFolder
    from mmlib.viz.plots import draw_loss_curves

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    runs = {str(r): RunFolder(r) for r in run_dirs}
    draw_loss_curves(
        ax,
        {k: r.metrics() for k, r in runs.items()},
        "loss",
        smooth=smooth,
        groups={k: str(r.results["init"]) for k, r in runs.items()},
    )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    return ax


def plot_segmentation(
    run_dir: str | Path, study: str | None = None, channel: int = 0, axes: Any = None
) -> Any:
    """Image, ground-truth regions and predicted regions of one saved test study (middle slice
    through the lesion), from the run's ``predictions/<study>.npz``."""
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    files = sorted((run_dir / "predictions").glob("*.npz"))
    if not files:
        raise FileNotFoundError(
            f"{run_dir}: no predictions/*.npz (run with eval.n_predictions > 0)"
        )
    path = run_dir / "predictions" / f"{study}.npz" if study else files[0]
    data = np.load(path)
    image, label, pred = data["image"].astype(np.float32), data["label"], data["pred"]
    res = json.loads((run_dir / "results.json").read_text())
    names = res["spec"].get("regions", {}).get("names", [])
    from mmlib.tasks.regions import RegionSpec

    spec = RegionSpec(
        tuple(names), res["spec"]["regions"]["kind"], res["spec"]["regions"]["convention"]
    )
    import torch

    target = spec.targets(torch.from_numpy(label.astype(np.int64))[None, None])[0].numpy()
    fg = target.any(0)
    z = int(np.argmax(fg.sum((0, 1)))) if fg.any() else image.shape[-1] // 2
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(9, 3.2))

    def overlay(masks: np.ndarray) -> np.ndarray:
        rgb = np.zeros((*masks.shape[1:3], 4))
        for r in range(masks.shape[0]):
            col = plt.cm.tab10(r)
            m = masks[r, :, :, z] > 0
            rgb[m] = (*col[:3], 0.45)
        return rgb

    for ax, title, masks in zip(
        axes, ["input", "ground truth", "prediction"], [None, target, pred]
    ):
        ax.imshow(image[channel, :, :, z].T, cmap="gray", origin="lower")
        if masks is not None:
            ax.imshow(np.transpose(overlay(masks), (1, 0, 2)), origin="lower")
        ax.set_title(
            f"{title}"
            + (f" ({', '.join(names)})" if masks is not None and title == "ground truth" else ""),
            fontsize=9,
        )
        ax.axis("off")
    axes[0].figure.suptitle(
        f"{res['task']} · {res['init']} · seed {res['seed']} · {path.stem}", fontsize=9
    )
    return axes
