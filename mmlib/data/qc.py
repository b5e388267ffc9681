"""Quality control of a curated store: a table, plots, and a list of suspicious studies.

Everything here reads the QC records written at curation (``meta.json`` of each study:
source grid, orientation, percentiles, a 32-bin histogram of the scaled head intensities, the
correlation between the study's modalities), never the arrays, so a QC report over the paper's
16k scans takes seconds.

Suspicious studies are flagged when

* a scan's intensity profile is closer to another modality's typical profile than to its own
  (leave-one-out centroids over the store): a mislabelled series, e.g. a T2 filed as T1;
* two modalities of a study are nearly identical inside the head (r > 0.98): a duplicated series;
* the curation recorded warnings (grids that differ, anisotropic or oblique sources).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmlib.data.store import Store
from mmlib.modalities import MODALITIES


def qc_table(store: Store) -> pd.DataFrame:
    """One row per (study, modality) with the curation statistics.

    Returns:
        Columns ``study, source, modality, source_shape, source_spacing, source_orientation,
        source_dtype, p5, p95, mean, fg_fraction, head_fraction, shape, warnings``.
    """
    rows = []
    for sid in store.studies():
        row, qc = store.row(sid), store.qc(sid)
        for mod, rec in qc.get("modalities", {}).items():
            rows.append({"study": sid, "source": row["source"], "modality": mod,
                         "source_shape": "×".join(map(str, rec["source_shape"])),
                         "source_spacing": "×".join(f"{v:g}" for v in rec["source_spacing"]),
                         "source_orientation": rec["source_orientation"],
                         "source_dtype": rec["source_dtype"], "p5": rec.get("p5"),
                         "p95": rec.get("p95"), "mean": rec.get("mean"),
                         "fg_fraction": rec.get("fg_fraction"),
                         "head_fraction": qc.get("head_fraction"),
                         "shape": "×".join(map(str, row["shape"])),
                         "warnings": len(qc.get("warnings", []))})
    return pd.DataFrame(rows)


def _histograms(store: Store) -> pd.DataFrame:
    rows = []
    for sid in store.studies():
        src = store.row(sid)["source"]
        for mod, rec in store.qc(sid).get("modalities", {}).items():
            if "hist" in rec:
                rows.append({"study": sid, "source": src, "modality": mod,
                             "hist": np.asarray(rec["hist"], dtype=np.float64)})
    return pd.DataFrame(rows, columns=["study", "source", "modality", "hist"])


def mislabelled(store: Store, ratio: float = 1.5, min_scans: int = 3) -> pd.DataFrame:
    """Scans whose intensity profile looks like another modality's.

    Each scan's histogram (head voxels, after scaling) is compared (L1 distance) with the mean
    histogram of every modality over the store, its own modality's mean computed without it.
    A scan is flagged when its distance to its own modality's mean is an outlier (beyond the
    median + 3 robust standard deviations of that modality's distances) and another modality's
    mean is closer by the factor ``ratio``.

    Args:
        store: the store.
        ratio: how much closer the other modality must be. Defaults to 1.5.
        min_scans: modalities with fewer scans are not used as references. Defaults to 3.

    Returns:
        Columns ``study, source, modality, looks_like, distance_own, distance_other``.
    """
    h = _histograms(store)
    out = []
    if h.empty:
        return pd.DataFrame(out, columns=["study", "source", "modality", "looks_like",
                                          "distance_own", "distance_other"])
    sums = {m: np.stack(g["hist"].to_list()).sum(0) for m, g in h.groupby("modality")}
    counts = h["modality"].value_counts().to_dict()
    d_own = np.full(len(h), np.nan)
    for i, (_, r) in enumerate(h.iterrows()):
        n = counts[r["modality"]] - 1
        if n >= max(1, min_scans - 1):
            d_own[i] = np.abs(r["hist"] - (sums[r["modality"]] - r["hist"]) / n).sum()
    h = h.assign(d_own=d_own)
    # a scan is an outlier of its own modality when far beyond that modality's usual spread
    limit = {}
    for m, g in h.groupby("modality"):
        d = g["d_own"].dropna().to_numpy()
        if d.size:
            med = float(np.median(d))
            mad = float(np.median(np.abs(d - med))) * 1.4826
            limit[m] = med + 3 * max(mad, 0.1 * med, 0.02)
    for _, r in h.iterrows():
        if np.isnan(r["d_own"]) or r["d_own"] <= limit.get(r["modality"], np.inf):
            continue
        others = {m: float(np.abs(r["hist"] - s / counts[m]).sum()) for m, s in sums.items()
                  if m != r["modality"] and counts[m] >= min_scans}
        if not others:
            continue
        best = min(others, key=others.get)  # type: ignore[arg-type]
        if others[best] * ratio < r["d_own"]:
            out.append({"study": r["study"], "source": r["source"], "modality": r["modality"],
                        "looks_like": best, "distance_own": round(float(r["d_own"]), 4),
                        "distance_other": round(others[best], 4)})
    return pd.DataFrame(out, columns=["study", "source", "modality", "looks_like",
                                      "distance_own", "distance_other"])


def suspicious(store: Store, ratio: float = 1.5) -> pd.DataFrame:
    """Suspicious studies with a one-line reason each (see the module docstring).

    Returns:
        Columns ``study, source, kind, reason``; kinds ``mislabelled``, ``duplicate``,
        ``warning``.
    """
    rows = []
    for _, r in mislabelled(store, ratio).iterrows():
        rows.append({"study": r["study"], "source": r["source"], "kind": "mislabelled",
                     "reason": f"{r['modality']} has the intensity profile of {r['looks_like']} "
                               f"(distance {r['distance_other']:.2f} vs {r['distance_own']:.2f} "
                               f"to typical {r['modality']})"})
    for sid in store.studies():
        src = store.row(sid)["source"]
        for w in store.qc(sid).get("warnings", []):
            kind = "duplicate" if "nearly identical" in w else "warning"
            rows.append({"study": sid, "source": src, "kind": kind, "reason": w})
    return pd.DataFrame(rows, columns=["study", "source", "kind", "reason"])


def plot_histograms(store: Store) -> Figure:
    """Mean intensity histogram (scaled head voxels) per modality, one line per source."""
    h = _histograms(store)
    mods = [m for m in MODALITIES if m in set(h["modality"])] or ["(none)"]
    cols = min(4, len(mods))
    rows = int(np.ceil(len(mods) / cols))
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    centres = (np.arange(32) + 0.5) / 32
    for ax, mod in zip(axes, mods):
        for src, g in h[h["modality"] == mod].groupby("source"):
            ax.plot(centres, np.stack(g["hist"].to_list()).mean(0), label=f"{src} ({len(g)})")
        ax.set_title(mod)
        ax.set_xlabel("scaled intensity")
        ax.legend(fontsize=6)
    for ax in axes[len(mods):]:
        ax.set_axis_off()
    fig.suptitle("Head intensity histograms per modality and source")
    return fig


def plot_spacing_orientation(store: Store) -> Figure:
    """Source voxel sizes (largest vs smallest axis) and source orientations, per source."""
    t = qc_table(store)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    if not t.empty:
        sp = t["source_spacing"].str.split("×").apply(lambda v: [float(x) for x in v])
        t = t.assign(sp_min=sp.apply(min), sp_max=sp.apply(max))
        for src, g in t.groupby("source"):
            ax1.scatter(g["sp_min"], g["sp_max"], label=src, s=14, alpha=0.7)
        counts = t.groupby(["source", "source_orientation"]).size().unstack(fill_value=0)
        bottom = np.zeros(len(counts))
        for code in counts.columns:
            ax2.bar(counts.index, counts[code].to_numpy(), bottom=bottom, label=code)
            bottom += counts[code].to_numpy()
        ax2.tick_params(axis="x", rotation=45, labelsize=7)
        ax1.legend(fontsize=6)
        ax2.legend(fontsize=6, title="orientation")
    ax1.set_xlabel("smallest voxel side (mm)")
    ax1.set_ylabel("largest voxel side (mm)")
    ax1.set_title("source voxel sizes")
    ax2.set_ylabel("scans")
    ax2.set_title("source orientations")
    return fig


def write_report(store: Store, out_dir: str | Path) -> dict[str, Any]:
    """Write ``qc.csv``, ``suspicious.csv``, ``histograms.png``, ``spacing.png`` and
    ``summary.json`` into ``out_dir``.

    Returns:
        The summary (scans and studies per source, suspicious counts per kind).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = qc_table(store)
    sus = suspicious(store)
    table.to_csv(out / "qc.csv", index=False)
    sus.to_csv(out / "suspicious.csv", index=False)
    plot_histograms(store).savefig(out / "histograms.png", dpi=90)
    plot_spacing_orientation(store).savefig(out / "spacing.png", dpi=90)
    summary = {
        "studies": int(len(store)),
        "scans": int(len(table)),
        "per_source": ({k: int(v) for k, v in table.groupby("source")["study"].nunique().items()}
                       if len(table) else {}),
        "suspicious": {k: int(v) for k, v in sus["kind"].value_counts().items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
