"""Gather fine-tuning run folders into tables, comparisons and plots that a reader can read.

Every number comes from the run folders (``results.json`` and ``test_scores.csv`` of
:func:`mmlib.engine.finetune.finetune` and :func:`mmlib.evaluate.scoring.score_run`), never from
a notebook's text. The comparison of two initialisations is paired by seed: runs at one seed
share the labelled studies, the crop order and the decoder's initialisation, so the per-seed
difference isolates the encoder's initialisation. :func:`paired_differences` (a table) and
:func:`compare` / :func:`headline` (one comparison) go through :mod:`mmlib.evaluate.stats`: the
per-seed values, the paired mean difference, its 95 % paired t interval and, where per-study
scores exist, a bootstrap over seeds and test studies. A difference is ``resolved`` only when
its interval excludes zero; :func:`verdict` writes the sentence the book prints.

For the book's pages: :func:`html_table` renders a frame as an HTML table (a pandas
``Styler``, which Jupyter Book shows as a table, not as text in a code output),
:func:`paired_table` the readable form of :func:`paired_differences`, :func:`ablation_table`
the ablation beside the paper's figures, and :func:`show_figure` a figure with a caption built
from the data (:func:`paired_caption`, :func:`label_efficiency_caption`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from mmlib.evaluate.classification import classification_scores
from mmlib.evaluate.stats import (
    CONFIDENCE,
    PairedComparison,
    accuracy_auc_intervals,
    bootstrap_paired,
    excludes_zero,
    paired_comparison,
    t_interval,
)
from mmlib.runs import KEYS, collect_runs, json_safe, write_results  # noqa: F401  (their home is mmlib.runs)


def summary_table(
    runs: pd.DataFrame, metric: str, by: Sequence[str] = ("task", "label_fraction", "init")
) -> pd.DataFrame:
    """Mean ± sd of ``metric`` over seeds per group.

    Returns:
        Columns ``*by``, ``mean``, ``sd`` (over seeds, ddof=1; NaN for one seed), ``n_seeds``,
        ``mean ± sd`` (text), ``ci_lo`` and ``ci_hi`` (the 95 % t interval of the mean over
        seeds; NaN for one seed).

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
    cis = [
        t_interval(g.dropna().to_numpy(float))
        for _, g in runs.groupby(list(by), dropna=False)[metric]
    ]
    out["ci_lo"] = [c[0] for c in cis]
    out["ci_hi"] = [c[1] for c in cis]
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


def per_study_scores(run_dir: str | Path, metric: str) -> pd.Series | None:
    """One run's per-test-study ``metric`` from its ``test_scores.csv``, indexed by study.

    Segmentation runs have per-study columns (``dice_mean``, ``dice_<region>``, ...); for a
    classification run, ``accuracy`` is read as each study's correctness (``pred == target``).
    Other classification scores (AUC, F1) have no per-study value.

    Returns:
        The scores, or None when the run has no ``test_scores.csv`` or no per-study ``metric``.
    """
    path = Path(run_dir) / "test_scores.csv"
    if not path.is_file():
        return None
    scores = pd.read_csv(path)
    if "study" not in scores.columns:
        return None
    if metric in scores.columns:
        values = scores[metric].astype(float)
    elif metric == "accuracy" and {"pred", "target"} <= set(scores.columns):
        values = (scores["pred"] == scores["target"]).astype(float)
    else:
        return None
    return pd.Series(values.to_numpy(), index=scores["study"].astype(str), name=metric)


def per_study_differences(
    runs: Mapping[int, str | Path], baseline: Mapping[int, str | Path], metric: str
) -> np.ndarray | None:
    """The seed × study matrix of paired differences ``run - baseline`` of ``metric``.

    Args:
        runs: ``{seed: run folder}`` of the initialisation.
        baseline: ``{seed: run folder}`` of the baseline.
        metric: a per-study column of ``test_scores.csv`` (see :func:`per_study_scores`).

    Returns:
        ``(S, T)`` over the common seeds (sorted) and the studies every one of them scored, or
        None when a run lacks per-study scores or no study is common to all.
    """
    seeds = sorted(set(runs) & set(baseline))
    rows = []
    for seed in seeds:
        a, b = per_study_scores(runs[seed], metric), per_study_scores(baseline[seed], metric)
        if a is None or b is None:
            return None
        rows.append(a - b)  # aligned on the study index; a study one side lacks becomes NaN
    if not rows:
        return None
    matrix = pd.concat(rows, axis=1).T.dropna(axis=1)
    return matrix.to_numpy(float) if matrix.shape[1] else None


def paired_differences(
    runs: pd.DataFrame,
    metric: str,
    baseline: str = "scratch",
    by: Sequence[str] = ("task", "label_fraction"),
    confidence: float = CONFIDENCE,
    studies: bool = True,
) -> pd.DataFrame:
    """Per-seed differences ``init - baseline`` of ``metric``, summarised per group and init.

    Each row is a :func:`mmlib.evaluate.stats.paired_comparison`; with ``studies``, runs that
    have per-study scores (``test_scores.csv``) add the two-way bootstrap over seeds and test
    studies (:func:`mmlib.evaluate.stats.bootstrap_paired`).

    Args:
        runs: from :func:`collect_runs`.
        metric: the score compared.
        baseline: the initialisation subtracted. Defaults to "scratch".
        by: the grouping columns. Defaults to ``("task", "label_fraction")``.
        confidence: the intervals' level. Defaults to 0.95.
        studies: also bootstrap over test studies where the runs allow it. Defaults to True.

    Returns:
        Columns ``*by``, ``init``, ``n_seeds`` (seeds present for both), ``mean_diff``,
        ``sd_diff`` (ddof=1), ``ci_lo``, ``ci_hi`` (the paired t interval), ``resolved`` (the
        interval excludes zero), ``p_paired_t`` (two-sided; NaN under two seeds), ``min_diff``,
        ``max_diff``, ``wins`` (seeds with a positive difference), ``n_test`` (test studies
        per run), ``boot_lo``, ``boot_hi`` (the bootstrap over seeds and studies; NaN without
        per-study scores), ``diffs``, ``values`` and ``baseline_values`` (per seed, by seed).

    Raises:
        ValueError: When the metric is not a column.
    """
    if metric not in runs.columns:
        raise ValueError(f"metric {metric!r} not in the runs")
    rows = []
    groups = runs.groupby(list(by), dropna=False) if by else [((), runs)]
    for key, grp in groups:
        key = key if isinstance(key, tuple) else (key,)
        base_grp = grp[grp["init"] == baseline]
        base = base_grp.groupby("seed")[metric].mean().dropna()
        for init, sub in grp[grp["init"] != baseline].groupby("init"):
            other = sub.groupby("seed")[metric].mean().dropna()
            if not set(base.index) & set(other.index):
                continue
            cmp = paired_comparison(other.to_dict(), base.to_dict(), confidence)
            d = np.asarray(cmp.diffs)
            boot = (float("nan"), float("nan"))
            if studies and cmp.n_seeds > 1 and "run" in grp.columns:
                matrix = per_study_differences(
                    dict(zip(sub["seed"], sub["run"])),
                    dict(zip(base_grp["seed"], base_grp["run"])),
                    metric,
                )
                if matrix is not None:
                    boot = bootstrap_paired(matrix, confidence)
            n_test = sub["n_test"].dropna() if "n_test" in sub.columns else pd.Series([])
            rows.append(
                {
                    **dict(zip(by, key)),
                    "init": init,
                    "n_seeds": cmp.n_seeds,
                    "mean_diff": cmp.mean_diff,
                    "sd_diff": cmp.sd_diff,
                    "ci_lo": cmp.ci95[0],
                    "ci_hi": cmp.ci95[1],
                    "resolved": cmp.resolved,
                    "p_paired_t": cmp.p_value,
                    "min_diff": float(d.min()),
                    "max_diff": float(d.max()),
                    "wins": int((d > 0).sum()),
                    "n_test": int(n_test.max()) if len(n_test) else None,
                    "boot_lo": boot[0],
                    "boot_hi": boot[1],
                    "diffs": dict(zip(cmp.seeds, cmp.diffs)),
                    "values": dict(zip(cmp.seeds, cmp.values)),
                    "baseline_values": dict(zip(cmp.seeds, cmp.baseline_values)),
                }
            )
    return pd.DataFrame(rows)


def compare(
    runs: pd.DataFrame,
    task: str,
    init: str = "brainmvp",
    baseline: str = "scratch",
    label_fraction: float | None = None,
    metric: str = "dice_mean",
    confidence: float = CONFIDENCE,
) -> tuple[PairedComparison, np.ndarray | None]:
    """One comparison of the book: ``init`` against ``baseline`` on a task, paired by seed.

    Args:
        runs: from :func:`collect_runs`.
        task: the task.
        init: the initialisation. Defaults to "brainmvp".
        baseline: the baseline. Defaults to "scratch".
        label_fraction: the label fraction; None when the runs of the task have only one.
            Defaults to None.
        metric: the score. Defaults to "dice_mean".
        confidence: the level. Defaults to 0.95.

    Returns:
        The :class:`~mmlib.evaluate.stats.PairedComparison` and the seed × study matrix of
        differences (None without per-study scores).

    Raises:
        ValueError: When either side has no run, or the label fraction is ambiguous.
    """
    sel = runs[runs["task"] == task]
    if label_fraction is None:
        fractions = sorted(sel["label_fraction"].dropna().unique().tolist())
        if len(fractions) > 1:
            raise ValueError(
                f"compare: task {task} has runs at label fractions {fractions}; pass one"
            )
    else:
        sel = sel[np.isclose(sel["label_fraction"].astype(float), float(label_fraction))]
    a, b = sel[sel["init"] == init], sel[sel["init"] == baseline]
    if a.empty or b.empty:
        missing = init if a.empty else baseline
        raise ValueError(
            f"compare: no finished {missing} run of task {task} at label fraction "
            f"{label_fraction}; run notebook 07 (or mmlib finetune) first"
        )
    cmp = paired_comparison(
        a.groupby("seed")[metric].mean().dropna().to_dict(),
        b.groupby("seed")[metric].mean().dropna().to_dict(),
        confidence,
    )
    matrix = per_study_differences(
        dict(zip(a["seed"], a["run"])), dict(zip(b["seed"], b["run"])), metric
    )
    return cmp, matrix


def headline(
    runs: pd.DataFrame,
    task: str,
    init: str = "brainmvp",
    baseline: str = "scratch",
    label_fraction: float | None = None,
    metric: str = "dice_mean",
) -> dict[str, Any]:
    """The book's headline comparison as notebook 12 writes it into ``results.json``.

    Returns:
        Exactly ``{task, init, baseline, label_fraction, seeds, mean_diff, ci95: [lo, hi]}``
        (``ci95`` the paired t interval over seeds; see :func:`compare`).
    """
    cmp, _ = compare(runs, task, init, baseline, label_fraction, metric)
    if label_fraction is None:
        label_fraction = float(runs[runs["task"] == task]["label_fraction"].iloc[0])
    return {
        "task": task,
        "init": init,
        "baseline": baseline,
        "label_fraction": float(label_fraction),
        "seeds": list(cmp.seeds),
        "mean_diff": cmp.mean_diff,
        "ci95": [cmp.ci95[0], cmp.ci95[1]],
    }


def verdict(comparison: Mapping[str, Any], metric: str = "Dice") -> str:
    """One sentence (Markdown) that states a comparison and whether it is resolved.

    Args:
        comparison: a :func:`headline` dict (or any mapping with ``init``, ``baseline``,
            ``seeds``, ``mean_diff``, ``ci95`` and optionally ``task``, ``label_fraction``).
        metric: the score's name in the sentence. Defaults to "Dice".

    Returns:
        The sentence: resolved when the interval excludes zero, else unresolved.
    """
    lo, hi = comparison["ci95"]
    seeds = list(comparison["seeds"])
    where = ""
    if "task" in comparison:
        where = f" on {comparison['task']}"
    if comparison.get("label_fraction") is not None:
        where += f" at {100 * float(comparison['label_fraction']):.0f} % labels"
    head = (
        f"{comparison['init']} − {comparison['baseline']}{where}: mean {metric} difference "
        f"{comparison['mean_diff']:+.3f} over {len(seeds)} seeds "
        f"({', '.join(str(s) for s in seeds)}), 95 % CI "
    )
    if not excludes_zero((lo, hi)):
        ci = "undefined" if lo is None or not np.isfinite(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
        return (
            head + f"{ci}: **unresolved** (the interval includes zero; no difference is claimed)."
        )
    side = "better" if lo > 0 else "worse"
    return (
        head + f"[{lo:+.3f}, {hi:+.3f}]: **resolved** ({comparison['init']} is {side} than "
        f"{comparison['baseline']}; the interval excludes zero)."
    )


def classification_intervals(runs: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Accuracy (Wilson) and AUC (DeLong) intervals of each classification run's test set.

    Reads each run's ``test_scores.csv`` (``target``, ``pred``, ``p_<class>``).

    Returns:
        One row per run with a readable ``test_scores.csv``: ``task``, ``init``, ``seed``,
        ``n_test``, ``accuracy``, ``accuracy_lo``, ``accuracy_hi``, ``auc``, ``auc_lo``,
        ``auc_hi`` (NaN when the test set holds one class).
    """
    rows = []
    for _, r in runs.iterrows():
        path = Path(str(r["run"])) / "test_scores.csv"
        if not path.is_file():
            continue
        scores = pd.read_csv(path)
        probs = [c for c in scores.columns if c.startswith("p_")]
        if not probs or "target" not in scores.columns:
            continue
        y = scores["target"].to_numpy(int)
        p = scores[probs].to_numpy(float)
        n = len(y)
        ci = accuracy_auc_intervals(y, p, confidence)
        (acc_lo, acc_hi), (auc_lo, auc_hi) = ci["accuracy"], ci["auc"]
        correct = int((p.argmax(1) == y).sum())
        auc = classification_scores(y.tolist(), p)["auc"]
        rows.append(
            {
                "task": r["task"],
                "init": r["init"],
                "seed": r["seed"],
                "n_test": n,
                "accuracy": correct / n,
                "accuracy_lo": acc_lo,
                "accuracy_hi": acc_hi,
                "auc": auc,
                "auc_lo": auc_lo,
                "auc_hi": auc_hi,
            }
        )
    return pd.DataFrame(rows)


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


PAPER_ABLATION: dict[str, tuple[str, float]] = {
    "scratch": ("scratch", 72.52),
    "cmr_only": ("+ cross-modal reconstruction", 75.16),
    "brainmvp_nocl": ("+ template distillation", 75.87),
    "brainmvp": ("+ contrastive (BrainMVP)", 76.80),
}
"""The paper's BraTS-PED ablation (Dice %, cumulative rows), keyed by mmlib's objective preset
of the same composition. From secondary sources, not checked against the PDF (DESIGN.md)."""


def ablation_table(
    runs: pd.DataFrame, metric: str = "dice_mean", baseline: str = "scratch"
) -> pd.DataFrame:
    """The ablation laid out like the paper's: one row per objective, mmlib's score beside the
    paper's BraTS-PED figure (:data:`PAPER_ABLATION`; "–" for rows the paper has not).

    Args:
        runs: the runs of one task at one label fraction (every initialisation).
        metric: the score. Defaults to "dice_mean".
        baseline: the initialisation the differences are taken to. Defaults to "scratch".

    Returns:
        Columns ``row`` (the paper's row name, or the preset), ``init``, ``seeds``, ``mmlib
        Dice`` (mean ± sd over seeds), ``difference to scratch`` and ``95 % CI`` (paired t),
        ``verdict`` and ``paper Dice (%)``.
    """
    tab = summary_table(runs, metric, ("init",)).set_index("init")
    diffs = paired_differences(runs, metric, baseline, by=())
    diffs = diffs.set_index("init") if len(diffs) else diffs
    order = [i for i in PAPER_ABLATION if i in tab.index] + sorted(
        i for i in tab.index if i not in PAPER_ABLATION
    )
    rows = []
    for init in order:
        row: dict[str, Any] = {
            "row": PAPER_ABLATION.get(init, (init, None))[0],
            "init": init,
            "seeds": int(cast(int, tab.at[init, "n_seeds"])),
            "mmlib Dice": tab.at[init, "mean ± sd"],
            "difference to scratch": "–",
            "95 % CI": "–",
            "verdict": "–",
        }
        if init in diffs.index:
            d = diffs.loc[init]
            row["difference to scratch"] = f"{d['mean_diff']:+.3f}"
            if np.isfinite(d["ci_lo"]):
                row["95 % CI"] = f"[{d['ci_lo']:+.3f}, {d['ci_hi']:+.3f}]"
            row["verdict"] = "resolved" if d["resolved"] else "unresolved"
        paper = PAPER_ABLATION.get(init, ("", None))[1]
        row["paper Dice (%)"] = f"{paper:.2f}" if paper is not None else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def power_sentence(power: Mapping[str, Any], metric: str = "Dice") -> str:
    """The power analysis of a comparison (:func:`mmlib.evaluate.stats.power_analysis`) in words.

    Returns:
        Markdown: the power of the design as run and how many seeds (and test studies) a
        resolved answer would take if the observed difference and spread were the true ones.
    """
    n, eff, sd = power["n_seeds"], power["mean_diff"], power["sd_diff"]
    pct = f"{100 * power['power']:.0f} %"
    text = (
        f"Taking the observed mean difference ({eff:+.3f} {metric}) and paired sd ({sd:.3f}) "
        f"over {n} seeds as the truth, this design resolves the comparison with probability "
        f"{power['power_now']:.2f} (paired t, noncentral t distribution); "
    )
    need = power.get("seeds_needed")
    text += (
        f"{pct} would take **{need} seeds**"
        if need is not None
        else "no number of seeds would resolve a zero difference"
    )
    if "studies_needed" in power:
        comp = power["components"]
        text += (
            f". Over seeds × test studies (variance components: seed {comp['seed']:.2g}, study "
            f"{comp['study']:.2g}, residual {comp['residual']:.2g}; {power['n_studies']} studies), "
        )
        m, m2 = power["studies_needed"], power["studies_needed_at_2x_seeds"]
        text += (
            f"{pct} with {n} seeds would take {m} test studies"
            if m is not None
            else f"more test studies alone cannot reach {pct} with {n} seeds"
        )
        text += f", with {2 * n} seeds {m2}" if m2 is not None else f", nor with {2 * n} seeds"
    return text + ". A plug-in estimate: the observed spread is itself uncertain."


def classification_table(intervals: pd.DataFrame) -> pd.DataFrame:
    """Per task and initialisation: test studies, accuracy and AUC over seeds, and the median
    width of one run's 95 % interval (Wilson for accuracy, DeLong for AUC).

    Args:
        intervals: from :func:`classification_intervals`.
    """
    rows = []
    for (task, init), g in intervals.groupby(["task", "init"]):
        rows.append(
            {
                "task": task,
                "init": init,
                "seeds": len(g),
                "test studies": int(g["n_test"].max()),
                "accuracy": float(g["accuracy"].mean()),
                "accuracy CI width": float((g["accuracy_hi"] - g["accuracy_lo"]).median()),
                "AUC": float(g["auc"].mean()),
                "AUC CI width": float((g["auc_hi"] - g["auc_lo"]).median()),
            }
        )
    return pd.DataFrame(rows)


def can_tell(table: pd.DataFrame, diffs: pd.DataFrame, metric: str = "accuracy") -> str:
    """Whether one run's interval is narrower than the differences the book reports.

    Args:
        table: from :func:`classification_table`.
        diffs: :func:`paired_differences` of ``metric`` (may be empty).
        metric: ``accuracy`` or ``auc``. Defaults to "accuracy".

    Returns:
        One sentence per task (Markdown).
    """
    col = "accuracy CI width" if metric == "accuracy" else "AUC CI width"
    out = []
    for task, g in table.groupby("task"):
        width = float(g[col].max())
        d = diffs[diffs["task"] == task] if len(diffs) and "task" in diffs else diffs.iloc[0:0]
        largest = float(d["mean_diff"].abs().max()) if len(d) else float("nan")
        n = int(g["test studies"].max())
        if not np.isfinite(width):
            out.append(
                f"{task}: the {metric} has no interval on {n} test studies (a class with one "
                "study or none): **the book cannot tell** the initialisations apart."
            )
        elif not np.isfinite(largest):
            out.append(
                f"{task}: one run's 95 % {metric} interval is ±{width / 2:.3f} on {n} test "
                "studies; no paired difference to compare it with."
            )
        elif np.isfinite(largest) and width / 2 < largest:
            out.append(
                f"{task}: one run's 95 % {metric} interval is ±{width / 2:.3f} on {n} test "
                f"studies, inside the largest paired difference ({largest:.3f}): the test set "
                "can tell a difference of that size."
            )
        else:
            out.append(
                f"{task}: one run's 95 % {metric} interval is ±{width / 2:.3f} on {n} test "
                f"studies, against paired differences of at most "
                f"{largest:.3f}: **the book cannot tell** the initialisations apart on this "
                "test set."
            )
    return " ".join(out)


def _cell_text(value: Any, precision: int) -> str:
    """A dict/list cell of a frame as short text (per-seed values: ``0: +0.050, 1: ...``)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell_text(v, precision)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_cell_text(v, precision) for v in value)
    if isinstance(value, float):
        return f"{value:.{precision}f}" if np.isfinite(value) else "–"
    return str(value)


def html_table(df: pd.DataFrame, caption: str | None = None, precision: int = 3) -> Any:
    """A frame as an HTML table for the book (a pandas ``Styler``: ``display(html_table(df))``).

    Jupyter Book renders the ``text/html`` output as a table (markdown text printed by a code
    cell stays text). Floats are shown with ``precision`` decimals, undefined ones as "–",
    dict and list cells (per-seed values) as short text; the index is hidden.

    Args:
        df: the frame.
        caption: the table's caption. Defaults to None.
        precision: decimals of floats. Defaults to 3.

    Returns:
        The ``Styler``.
    """
    frame = df.copy()
    for c in frame.columns:
        if frame[c].map(lambda v: isinstance(v, dict | list | tuple)).any():
            frame[c] = frame[c].map(lambda v: _cell_text(v, precision))
    styler = frame.style.hide(axis="index").format(precision=precision, na_rep="–")
    if caption:
        styler = styler.set_caption(caption)
    return styler


def _span(values: Any) -> str:
    """``3`` when every value is 3, ``2–3`` otherwise, ``?`` when there are none."""
    vals = sorted({int(v) for v in values if v is not None and np.isfinite(v)})
    if not vals:
        return "?"
    return str(vals[0]) if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"


def paired_table(diffs: pd.DataFrame, precision: int = 3) -> pd.DataFrame:
    """The readable form of :func:`paired_differences`: one row per comparison.

    Returns:
        Columns (the grouping columns present, the label fraction in %), ``init``, ``seeds``,
        ``per-seed difference``, ``mean difference``, ``95 % CI (paired t)``, ``95 % CI (seeds ×
        studies)`` (when any row has it), ``p (paired t)`` and ``verdict`` (resolved /
        unresolved).
    """

    def interval(lo: float, hi: float) -> str:
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return "–"
        return f"[{lo:+.{precision}f}, {hi:+.{precision}f}]"

    out = pd.DataFrame()
    for col in ("task", "label_fraction"):
        if col in diffs.columns:
            out[col if col != "label_fraction" else "labels"] = (
                diffs[col]
                if col != "label_fraction"
                else [f"{100 * float(v):.0f} %" for v in diffs[col]]
            )
    out["init"] = diffs["init"].to_numpy() if len(diffs) else []
    out["seeds"] = [", ".join(str(s) for s in d) for d in diffs.get("diffs", [])]
    out["per-seed difference"] = [
        ", ".join(f"{v:+.{precision}f}" for v in d.values()) for d in diffs.get("diffs", [])
    ]
    out["mean difference"] = [f"{v:+.{precision}f}" for v in diffs.get("mean_diff", [])]
    out["95 % CI (paired t)"] = [
        interval(lo, hi) for lo, hi in zip(diffs.get("ci_lo", []), diffs.get("ci_hi", []))
    ]
    if "boot_lo" in diffs.columns and np.isfinite(diffs["boot_lo"].astype(float)).any():
        out["95 % CI (seeds × studies)"] = [
            interval(lo, hi) for lo, hi in zip(diffs["boot_lo"], diffs["boot_hi"])
        ]
    out["p (paired t)"] = [
        f"{p:.3f}" if np.isfinite(p) else "–" for p in diffs.get("p_paired_t", [])
    ]
    out["verdict"] = ["resolved" if r else "unresolved" for r in diffs.get("resolved", [])]
    return out


def seeds_and_studies(runs: pd.DataFrame) -> str:
    """How many seeds and test studies a set of runs rests on, for captions.

    Returns:
        E.g. ``"3 seeds (0, 1, 2), 12 test studies per run"`` (ranges when groups differ).
    """
    if runs.empty:
        return "no runs"
    seeds = sorted(int(s) for s in runs["seed"].dropna().unique())
    n_test = _span(runs["n_test"]) if "n_test" in runs.columns else "?"
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
        f"not. Seeds per comparison: {_span(diffs.get('n_seeds', []))}; test studies per run: "
        f"{_span(diffs.get('n_test', []))}."
    )


def label_efficiency_caption(runs: pd.DataFrame, task: str, metric: str = "Dice") -> str:
    """The caption of a :func:`plot_label_efficiency` figure, from its runs."""
    sel = runs[runs["task"] == task]
    fractions = sorted(sel["label_fraction"].dropna().unique())
    labelled = (
        {float(cast(float, f)): _span(g["n_labelled"]) for f, g in sel.groupby("label_fraction")}
        if "n_labelled" in sel.columns
        else {}
    )
    per = sel.groupby(["label_fraction", "init"])["seed"].nunique()
    steps = _span(sel["steps"]) if "steps" in sel.columns else "?"
    return (
        f"Mean {metric} on the {task} test studies against the fraction of labelled training "
        "studies ("
        + ", ".join(f"{100 * f:.0f} %: {labelled.get(float(f), '?')} studies" for f in fractions)
        + "), one line per initialisation; bars: the 95 % t interval of the mean over seeds "
        f"({_span(per.to_numpy())} seeds per point; none with one seed); "
        f"{_span(sel['n_test'])} test studies per run; every point trained {steps} steps."
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
