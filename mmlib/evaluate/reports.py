"""Gather fine-tuning run folders into tables, comparisons and plots that a reader can read.

Every number comes from the run folders (``results.json`` and ``test_scores.csv`` of
:func:`mmlib.engine.finetune.finetune` and :func:`mmlib.evaluate.scoring.score_run`), never from
a notebook's text. The comparison of two initialisations is paired by seed: runs at one seed
share the labelled studies, the crop order and the decoder's initialisation, so the per-seed
difference isolates the encoder's initialisation. :func:`paired_differences` (a table) and
:func:`compare` / :func:`headline` (one comparison) go through :mod:`mmlib.evaluate.stats`: the
per-seed values, the paired mean difference, its 95 % paired t interval and, where per-study
scores exist, a bootstrap over seeds and test studies. A difference is ``resolved`` only when
its interval excludes zero and, in a table of several comparisons (:func:`paired_differences`),
when its paired-t p value stays below 5 % after Holm's adjustment for the table's comparisons
(:func:`mmlib.evaluate.stats.holm`; a single pre-specified comparison such as the held-out
headline is not adjusted); :func:`verdict` writes the sentence the book prints.

What the book's pages show of them lives beside: tables in :mod:`mmlib.evaluate.tables`
(:func:`~mmlib.evaluate.tables.html_table`, :func:`~mmlib.evaluate.tables.paired_table`, ...),
plots and their captions in :mod:`mmlib.evaluate.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmlib.evaluate.classification import classification_scores
from mmlib.evaluate.stats import (
    CONFIDENCE,
    PairedComparison,
    accuracy_auc_intervals,
    bootstrap_paired,
    excludes_zero,
    holm,
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
        interval excludes zero and ``p_holm`` is below ``1 - confidence``),
        ``resolved_unadjusted`` (the interval alone), ``p_paired_t`` (two-sided; NaN under two
        seeds), ``p_holm`` (:func:`mmlib.evaluate.stats.holm` over the table's rows), ``min_diff``,
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
                    "resolved_unadjusted": cmp.resolved,
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
    table = pd.DataFrame(rows)
    if len(table):
        # the table is a family of claims: adjust for how many it makes (stats.holm says why)
        table.insert(
            list(table.columns).index("p_paired_t") + 1, "p_holm", holm(table["p_paired_t"])
        )
        table["resolved"] = table["resolved_unadjusted"] & (table["p_holm"] < 1 - confidence)
    return table


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


def can_tell(table: pd.DataFrame, diffs: pd.DataFrame, metric: str = "accuracy") -> str:
    """Whether one run's interval is narrower than the differences the book reports.

    Args:
        table: from :func:`mmlib.evaluate.tables.classification_table`.
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
