"""Gather fine-tuning run folders into tables and plots: mean ± sd over seeds, paired differences.

Every number comes from the run folders (``results.json`` of
:func:`mmlib.engine.finetune.finetune`),
never from a notebook's text. The comparison of two initialisations is paired by seed: runs at
one seed share the labelled studies, the crop order and the decoder's initialisation, so the
per-seed difference isolates the encoder's initialisation. :func:`paired_differences` reports
its mean, its standard deviation over seeds, the number of seeds, how many seeds favour the
initialisation, a paired t-test, and whether the mean difference exceeds the seed spread
(``resolved``: ``|mean| > sd``, the issue's criterion; with three seeds this is a weak test and
is reported as such, not as significance).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmlib.runs import KEYS, collect_runs, json_safe, write_results  # noqa: F401  (their home is mmlib.runs)


def summary_table(
    runs: pd.DataFrame, metric: str, by: Sequence[str] = ("task", "label_fraction", "init")
) -> pd.DataFrame:
    """Mean ± sd of ``metric`` over seeds per group.

    Returns:
        Columns ``*by``, ``mean``, ``sd`` (over seeds, ddof=1; NaN for one seed), ``n_seeds``,
        and ``mean ± sd`` (text).

    Raises:
        ValueError: When the metric is not a column.
    """
    if metric not in runs.columns:
        raise ValueError(
            f"metric {metric!r} not in the runs; have "
            f"{', '.join(c for c in runs.columns if c not in KEYS)}"
        )
    g = runs.groupby(list(by), dropna=False)[metric]
    out = g.agg(mean="mean", sd="std", n_runs="count").reset_index()
    out.insert(
        len(by) + 2, "n_seeds", runs.groupby(list(by), dropna=False)["seed"].nunique().to_numpy()
    )
    out = out.drop(columns="n_runs")
    out["mean ± sd"] = [
        f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}"
        for m, s in zip(out["mean"], out["sd"])
    ]
    return out


def lesion_summary(
    runs: pd.DataFrame, by: Sequence[str] = ("task", "label_fraction", "init")
) -> pd.DataFrame:
    """Lesion-wise Dice and F1 (the BraTS evaluation, :mod:`mmlib.evaluate.lesions`) per group.

    Each run's scores are averaged over its regions (``lesion_dice_<region>``,
    ``lesion_f1_<region>`` of ``results.json["test"]``), then over seeds.

    Args:
        runs: from :func:`collect_runs` (segmentation runs).
        by: the grouping columns. Defaults to ``("task", "label_fraction", "init")``.

    Returns:
        Columns ``*by``, ``n_seeds``, ``lesion_dice`` and ``lesion_f1`` (``mean ± sd`` over
        seeds, text) and ``reference_empty`` (test studies with an empty reference region, per
        region, e.g. ``ET 2, TC 0, WT 0``). Empty when no run has lesion-wise scores (runs
        scored before they were added).
    """

    def cols(prefix: str) -> list[str]:
        return [c for c in runs.columns if c.startswith(prefix) and not c.endswith("_sd")]

    dice_cols, f1_cols, empty_cols = (
        cols("lesion_dice_"),
        cols("lesion_f1_"),
        cols("reference_empty_"),
    )
    if not dice_cols or runs.empty:
        return pd.DataFrame(columns=[*by, "n_seeds", "lesion_dice", "lesion_f1", "reference_empty"])
    frame = runs.assign(_dice=runs[dice_cols].mean(axis=1), _f1=runs[f1_cols].mean(axis=1))
    frame = frame[frame["_dice"].notna() | frame["_f1"].notna()]
    rows = []
    for key, g in frame.groupby(list(by), dropna=False):
        row: dict[str, Any] = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = int(g["seed"].nunique())
        for name, col in (("lesion_dice", "_dice"), ("lesion_f1", "_f1")):
            m, s = float(g[col].mean()), float(g[col].std())
            row[name] = f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}"
        row["reference_empty"] = ", ".join(
            f"{c.removeprefix('reference_empty_')} {int(g[c].max())}"
            for c in empty_cols
            if g[c].notna().any()
        )
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(
    runs: pd.DataFrame,
    metric: str,
    baseline: str = "scratch",
    by: Sequence[str] = ("task", "label_fraction"),
) -> pd.DataFrame:
    """Per-seed differences ``init - baseline`` of ``metric``, summarised per group and init.

    Returns:
        Columns ``*by``, ``init``, ``n_seeds`` (seeds present for both), ``mean_diff``,
        ``sd_diff`` (ddof=1), ``min_diff``, ``max_diff``, ``wins`` (seeds with a positive
        difference), ``p_paired_t`` (two-sided; NaN under two seeds), ``resolved``
        (``|mean_diff| > sd_diff``), and ``diffs`` (the per-seed values, by seed).
    """
    from scipy import stats

    if metric not in runs.columns:
        raise ValueError(f"metric {metric!r} not in the runs")
    rows = []
    for key, grp in runs.groupby(list(by), dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        base = grp[grp["init"] == baseline].groupby("seed")[metric].mean()
        for init, sub in grp[grp["init"] != baseline].groupby("init"):
            other = sub.groupby("seed")[metric].mean()
            seeds = sorted(set(base.index) & set(other.index))
            if not seeds:
                continue
            d = np.array([other[s] - base[s] for s in seeds], dtype=float)
            sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
            p = (
                float(stats.ttest_rel([other[s] for s in seeds], [base[s] for s in seeds]).pvalue)
                if len(d) > 1 and sd > 0
                else float("nan")
            )
            rows.append(
                {
                    **dict(zip(by, key)),
                    "init": init,
                    "n_seeds": len(d),
                    "mean_diff": float(d.mean()),
                    "sd_diff": sd,
                    "min_diff": float(d.min()),
                    "max_diff": float(d.max()),
                    "wins": int((d > 0).sum()),
                    "p_paired_t": p,
                    "resolved": bool(np.isfinite(sd) and abs(d.mean()) > sd),
                    "diffs": {int(s): float(v) for s, v in zip(seeds, d)},
                }
            )
    return pd.DataFrame(rows)


def plot_label_efficiency(runs: pd.DataFrame, metric: str, task: str, ax: Any = None) -> Any:
    """Mean ± sd of ``metric`` against the label fraction, one line per initialisation."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    tab = summary_table(runs[runs["task"] == task], metric, ("label_fraction", "init"))
    for init, sub in tab.groupby("init"):
        sub = sub.sort_values("label_fraction")
        x = 100 * sub["label_fraction"].to_numpy(float)
        ax.errorbar(
            x, sub["mean"], yerr=sub["sd"].fillna(0), marker="o", capsize=3, label=str(init)
        )
    ax.set_xlabel("labelled training studies (%)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: label efficiency")
    ax.legend(fontsize=8)
    return ax


def plot_paired(diffs: pd.DataFrame, title: str = "", ax: Any = None) -> Any:
    """Per-seed paired differences (dots) and their mean ± sd (bar) per initialisation."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    labels = []
    for i, (_, row) in enumerate(diffs.iterrows()):
        vals = list(row["diffs"].values())
        ax.scatter([i] * len(vals), vals, color="k", s=14, zorder=3)
        ax.errorbar(
            [i],
            [row["mean_diff"]],
            yerr=[0 if np.isnan(row["sd_diff"]) else row["sd_diff"]],
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
    ax.set_ylabel("difference to scratch (paired by seed)")
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


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub-markdown table of ``df`` (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(format(v, floatfmt) if np.isfinite(v) else "–")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
