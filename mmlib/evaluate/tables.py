"""The book's tables: HTML tables a page shows as tables, and the readable forms of the reports.

:func:`html_table` renders a frame as an HTML table (a pandas ``Styler``, which Jupyter Book
shows as a table, not as text in a code output); :func:`paired_table` is the readable form of
:func:`mmlib.evaluate.reports.paired_differences`, :func:`classification_table` of
:func:`mmlib.evaluate.reports.classification_intervals`, :func:`ablation_table` the ablation
beside the paper's BraTS-PED figures (:data:`PAPER_ABLATION`); :func:`to_markdown` the plain
text form for terminals (``mmlib evaluate report``).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd

from mmlib.evaluate.reports import paired_differences, summary_table


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


def span_text(values: Any) -> str:
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
        studies)`` (when any row has it), ``p (paired t)``, ``p (Holm, this table)`` (when the
        table has ``p_holm``) and ``verdict`` (resolved / unresolved).
    """

    def interval(lo: float, hi: float) -> str:
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return "–"
        return f"[{lo:+.{precision}f}, {hi:+.{precision}f}]"

    def p_cells(values: Any) -> list[str]:
        return [f"{p:.3f}" if np.isfinite(p) else "–" for p in np.asarray(values, dtype=float)]

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
    out["p (paired t)"] = p_cells(diffs.get("p_paired_t", []))
    if "p_holm" in diffs.columns:
        out["p (Holm, this table)"] = p_cells(diffs["p_holm"])
    out["verdict"] = ["resolved" if r else "unresolved" for r in diffs.get("resolved", [])]
    return out
