"""Gather fine-tuning run folders into tables and plots: mean ± sd over seeds, paired differences.

Every number comes from the run folders (``results.json`` of :func:`mmlib.engine.finetune.finetune`),
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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KEYS: tuple[str, ...] = ("task", "kind", "init", "label_fraction", "seed", "fill", "n_labelled", "n_test", "steps")


def _flatten(prefix: str, d: dict[str, Any], out: dict[str, Any]) -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            _flatten(f"{prefix}{k}.", v, out)
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v


def collect_runs(roots: str | Path | Iterable[str | Path], latest_only: bool = True) -> pd.DataFrame:
    """One row per finished run folder found under ``roots`` (folders with ``DONE``).

    Args:
        roots: a folder (searched recursively for ``results.json``), or several, or run folders.
        latest_only: keep only the newest run (by ``DONE`` time) of each (task, init, label
            fraction, seed, fill) cell, e.g. when a pre-training checkpoint changed and the
            cell was fine-tuned again into a new folder. Defaults to True.

    Returns:
        Columns :data:`KEYS`, the test metrics (``dice_mean``, ``dice_TC``, ..., ``accuracy``,
        ``auc``, ...), ``seconds_train``, ``seconds_per_step`` and ``run`` (the folder). Empty
        DataFrame when nothing is found.
    """
    if isinstance(roots, (str, Path)):
        roots = [roots]
    rows = []
    for root in roots:
        root = Path(root)
        found = [root / "results.json"] if (root / "results.json").is_file() else sorted(root.rglob("results.json"))
        for path in found:
            if not (path.parent / "DONE").is_file():
                continue
            res = json.loads(path.read_text())
            if "init" not in res or "test" not in res:
                continue
            row: dict[str, Any] = {k: res.get(k) for k in KEYS}
            row.update({k: v for k, v in res["test"].items() if not isinstance(v, (dict, list))})
            row["seconds_train"] = res.get("seconds", {}).get("train")
            row["seconds_per_step"] = res.get("seconds", {}).get("per_step")
            row["run"] = str(path.parent)
            row["finished"] = (path.parent / "DONE").stat().st_mtime
            rows.append(row)
    df = pd.DataFrame(rows)
    if latest_only and len(df):
        cell = ["task", "init", "label_fraction", "seed", "fill"]
        df = df.sort_values("finished").drop_duplicates(cell, keep="last").sort_values(cell).reset_index(drop=True)
    return df


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
        raise ValueError(f"metric {metric!r} not in the runs; have {', '.join(c for c in runs.columns if c not in KEYS)}")
    g = runs.groupby(list(by), dropna=False)[metric]
    out = g.agg(mean="mean", sd="std", n_runs="count").reset_index()
    out.insert(len(by) + 2, "n_seeds", runs.groupby(list(by), dropna=False)["seed"].nunique().to_numpy())
    out = out.drop(columns="n_runs")
    out["mean ± sd"] = [f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}" for m, s in zip(out["mean"], out["sd"])]
    return out


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
            p = float(stats.ttest_rel([other[s] for s in seeds], [base[s] for s in seeds]).pvalue) if len(d) > 1 and sd > 0 else float("nan")
            rows.append({**dict(zip(by, key)), "init": init, "n_seeds": len(d), "mean_diff": float(d.mean()),
                         "sd_diff": sd, "min_diff": float(d.min()), "max_diff": float(d.max()),
                         "wins": int((d > 0).sum()), "p_paired_t": p,
                         "resolved": bool(np.isfinite(sd) and abs(d.mean()) > sd),
                         "diffs": {int(s): float(v) for s, v in zip(seeds, d)}})
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
        ax.errorbar(x, sub["mean"], yerr=sub["sd"].fillna(0), marker="o", capsize=3, label=str(init))
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
        ax.errorbar([i], [row["mean_diff"]], yerr=[0 if np.isnan(row["sd_diff"]) else row["sd_diff"]],
                    fmt="s", color="C1" if row["resolved"] else "C7", capsize=4, zorder=2)
        extra = f" {100 * row['label_fraction']:.0f}%" if "label_fraction" in row else ""
        labels.append(f"{row['init']}{extra}\nn={int(row['n_seeds'])}")
    ax.axhline(0, color="grey", lw=0.8)
    # long names (brainmvp_nocl) collide when level; tilted they stay readable
    tilt = len(labels) > 3
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=30 if tilt else 0, ha="right" if tilt else "center")
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
    im = ax.imshow(pivot.to_numpy(float), aspect="auto", cmap="viridis", vmin=0, vmax=max(1e-6, float(np.nanmax(pivot.to_numpy(float)))))
    ax.set_yticks(range(pivot.shape[0]), list(pivot.index), fontsize=8)
    ax.set_xticks(range(pivot.shape[1]), ["/".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in pivot.columns], fontsize=8, rotation=30)
    for (i, j), v in np.ndenumerate(pivot.to_numpy(float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 * np.nanmax(pivot.to_numpy(float)) else "k")
    ax.figure.colorbar(im, ax=ax, label=metric)
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
    """Training loss (``metrics.csv``) of run folders, one line each, coloured by initialisation."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    runs = [(Path(r), json.loads((Path(r) / "results.json").read_text())) for r in run_dirs]
    inits = sorted({res["init"] for _, res in runs})
    labelled: set[str] = set()
    for run, res in runs:
        log = pd.read_csv(run / "metrics.csv")
        y = log["loss"].rolling(smooth, min_periods=1).mean()
        label = None if res["init"] in labelled else res["init"]
        labelled.add(res["init"])
        ax.plot(log["step"], y, color=f"C{inits.index(res['init']) % 10}", alpha=0.7, lw=1, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    return ax


def plot_segmentation(run_dir: str | Path, study: str | None = None, channel: int = 0, axes: Any = None) -> Any:
    """Image, ground-truth regions and predicted regions of one saved test study (middle slice
    through the lesion), from the run's ``predictions/<study>.npz``."""
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    files = sorted((run_dir / "predictions").glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no predictions/*.npz (run with eval.n_predictions > 0)")
    path = run_dir / "predictions" / f"{study}.npz" if study else files[0]
    data = np.load(path)
    image, label, pred = data["image"].astype(np.float32), data["label"], data["pred"]
    res = json.loads((run_dir / "results.json").read_text())
    names = res["spec"].get("regions", {}).get("names", [])
    from mmlib.tasks.regions import RegionSpec

    spec = RegionSpec(tuple(names), res["spec"]["regions"]["kind"], res["spec"]["regions"]["convention"])
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

    for ax, title, masks in zip(axes, ["input", "ground truth", "prediction"], [None, target, pred]):
        ax.imshow(image[channel, :, :, z].T, cmap="gray", origin="lower")
        if masks is not None:
            ax.imshow(np.transpose(overlay(masks), (1, 0, 2)), origin="lower")
        ax.set_title(f"{title}" + (f" ({', '.join(names)})" if masks is not None and title == "ground truth" else ""), fontsize=9)
        ax.axis("off")
    axes[0].figure.suptitle(f"{res['task']} · {res['init']} · seed {res['seed']} · {path.stem}", fontsize=9)
    return axes


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars made Python numbers and undefined numbers made ``None``.

    A spread over one seed, or an AUC on a test set with one class, is undefined (NaN); JSON has
    no NaN, so results files record it as ``null`` rather than writing invalid JSON.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    return value


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write a notebook's ``results.json`` (undefined numbers as ``null``, see :func:`json_safe`)."""
    path = Path(path)
    path.write_text(json.dumps(json_safe(results), indent=1, default=str))
    return path
