"""Quality control of a curated store: a table, plots, and a list of suspicious studies.

Everything here reads the QC records written at curation (``meta.json`` of each study:
source grid, orientation, percentiles, a 32-bin histogram of the scaled head intensities, the
correlation between the study's modalities), never the arrays, so a QC report over the paper's
16k scans takes seconds.

Suspicious studies are flagged when

* relabelling one series (or swapping two) makes a study's cross-modal correlations typical
  of its source: a mislabelled series, e.g. a T2 filed as T1;
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
            rows.append(
                {
                    "study": sid,
                    "source": row["source"],
                    "modality": mod,
                    "source_shape": "×".join(map(str, rec["source_shape"])),
                    "source_spacing": "×".join(f"{v:g}" for v in rec["source_spacing"]),
                    "source_orientation": rec["source_orientation"],
                    "source_dtype": rec["source_dtype"],
                    "p5": rec.get("p5"),
                    "p95": rec.get("p95"),
                    "mean": rec.get("mean"),
                    "fg_fraction": rec.get("fg_fraction"),
                    "head_fraction": qc.get("head_fraction"),
                    "shape": "×".join(map(str, row["shape"])),
                    "warnings": len(qc.get("warnings", [])),
                }
            )
    return pd.DataFrame(rows)


def _histograms(store: Store) -> pd.DataFrame:
    rows = []
    for sid in store.studies():
        src = store.row(sid)["source"]
        for mod, rec in store.qc(sid).get("modalities", {}).items():
            if "hist" in rec:
                rows.append(
                    {
                        "study": sid,
                        "source": src,
                        "modality": mod,
                        "hist": np.asarray(rec["hist"], dtype=np.float64),
                    }
                )
    return pd.DataFrame(rows, columns=["study", "source", "modality", "hist"])


def _correlations(store: Store) -> pd.DataFrame:
    rows = []
    for sid in store.studies():
        src = store.row(sid)["source"]
        for pair, r in store.qc(sid).get("correlation", {}).items():
            a, b = pair.split("-")
            rows += [
                {"study": sid, "source": src, "m": a, "n": b, "r": r},
                {"study": sid, "source": src, "m": b, "n": a, "r": r},
            ]
    return pd.DataFrame(rows, columns=["study", "source", "m", "n", "r"])


def mislabelled(
    store: Store, ratio: float = 2.0, min_distance: float = 0.25, min_studies: int = 3
) -> pd.DataFrame:
    """Series that behave like another modality: mislabelled or swapped files.

    A study's signature is the correlation, inside the head, between each pair of its
    modalities (T1 and T2 are anti-correlated, T1 and T1c strongly correlated, ...). The typical
    value of each pair is the median over the *other* studies of the same source (skull-stripped
    and whole-head sources differ), so a source needs ``min_studies`` studies to be checked.
    Besides the labels as given, every relabelling by one swap (``a <-> b``) or one renaming
    (``a`` is really a modality the study lacks) is scored by its mean absolute difference from
    the typical signature; the study is flagged when the labels as given are far from typical
    (more than ``min_distance``) and the best relabelling is closer by ``ratio``.

    Args:
        store: the store.
        ratio: how much closer the relabelling must be. Defaults to 2.0.
        min_distance: the smallest distance of the given labels that can be flagged.
            Defaults to 0.25.
        min_studies: studies a source needs (the checked one included). Defaults to 3.

    Returns:
        Columns ``study, source, modality, looks_like, distance_own, distance_other``: one
        row per relabelled series (two for a swap).
    """
    cols = ["study", "source", "modality", "looks_like", "distance_own", "distance_other"]
    c = _correlations(store)
    out: list[dict[str, Any]] = []
    for src, cs in c.groupby("source"):
        pairs = {k: dict(zip(g["study"], g["r"])) for k, g in cs.groupby(["m", "n"])}
        for sid, grp in cs.groupby("study"):
            # keys are the (m, n) tuples of the groupby above
            typical: dict[Any, float] = {
                k: float(np.median([r for s, r in by.items() if s != sid]))
                for k, by in pairs.items()
                if len(by) - (sid in by) >= min_studies - 1
            }
            r: dict[tuple[str, str], float] = {
                (m, n): v for m, n, v in zip(grp["m"], grp["n"], grp["r"])
            }
            mods = sorted({m for m, _ in r})
            known = sorted({m for m, _ in typical})

            # score is called only within this iteration, so binding typical and r late is safe
            def score(mapping: dict[str, str]) -> tuple[float, int]:
                d = [
                    abs(v - typical[(mapping[m], mapping[n])])  # noqa: B023
                    for (m, n), v in r.items()  # noqa: B023
                    if m < n and (mapping[m], mapping[n]) in typical  # noqa: B023
                ]
                return (float(np.mean(d)) if d else np.inf), len(d)

            ident = {m: m for m in mods}
            base, n_base = score(ident)
            if n_base < 2 or base <= min_distance:
                continue
            hypotheses = []
            for i, a in enumerate(mods):
                for b in mods[i + 1 :]:
                    hypotheses.append({**ident, a: b, b: a})
                for m2 in known:
                    if m2 not in mods:
                        hypotheses.append({**ident, a: m2})
            scored = [(score(h), h) for h in hypotheses]
            kept = [(sc, h) for (sc, n), h in scored if n >= max(2, n_base - 2)]
            if not kept:
                continue
            best_score, best = min(kept, key=lambda t: t[0])
            if best_score * ratio < base:
                for m in mods:
                    if best[m] != m:
                        out.append(
                            {
                                "study": sid,
                                "source": src,
                                "modality": m,
                                "looks_like": best[m],
                                "distance_own": round(base, 4),
                                "distance_other": round(best_score, 4),
                            }
                        )
    return pd.DataFrame(out, columns=cols)


def suspicious(store: Store, ratio: float = 2.0) -> pd.DataFrame:
    """Suspicious studies with a one-line reason each (see the module docstring).

    Returns:
        Columns ``study, source, kind, reason``; kinds ``mislabelled``, ``duplicate``,
        ``warning``.
    """
    rows = []
    for _, r in mislabelled(store, ratio).iterrows():
        rows.append(
            {
                "study": r["study"],
                "source": r["source"],
                "kind": "mislabelled",
                "reason": f"{r['modality']} behaves like {r['looks_like']}: relabelled, the "
                f"study's cross-modal correlations are {r['distance_other']:.2f} "
                f"from typical instead of {r['distance_own']:.2f}; a mislabelled "
                "series?",
            }
        )
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
    for ax in axes[len(mods) :]:
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
        "per_source": (
            {k: int(v) for k, v in table.groupby("source")["study"].nunique().items()}
            if len(table)
            else {}
        ),
        "suspicious": {k: int(v) for k, v in sus["kind"].value_counts().items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def plot_study(store: Store, study: str) -> Figure:
    """Every modality of a curated study: axial, coronal and sagittal slices through the head
    centre, with the label outlined when the study has one."""
    row = store.row(study)
    aff = np.asarray(row["affine"])
    centre = np.rint(np.linalg.solve(aff[:3, :3], np.asarray(row["center_world"]) - aff[:3, 3]))
    centre = np.clip(centre.astype(int), 0, np.asarray(row["shape"]) - 1)
    label = store.label(study)
    mods = row["modalities"]
    fig = Figure(figsize=(2.2 * len(mods), 6.6), layout="constrained")
    axes = fig.subplots(3, len(mods), squeeze=False)
    views = (("axial", 2), ("coronal", 1), ("sagittal", 0))
    for j, mod in enumerate(mods):
        img = store.image(study, mod)
        for i, (name, ax_i) in enumerate(views):
            sl: list[slice | int] = [slice(None)] * 3
            sl[ax_i] = int(centre[ax_i])
            ax = axes[i, j]
            ax.imshow(
                np.asarray(img[tuple(sl)], dtype=np.float32).T,
                cmap="gray",
                origin="lower",
                vmin=0,
                vmax=1,
            )
            if label is not None and np.asarray(label[tuple(sl)]).any():
                ax.contour(
                    np.asarray(label[tuple(sl)]).T > 0, levels=[0.5], colors="r", linewidths=0.6
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(mod)
            if j == 0:
                ax.set_ylabel(name)
    fig.suptitle(
        f"{study} ({row['source']}), {'×'.join(map(str, row['shape']))} at {row['spacing'][0]:g} mm"
    )
    return fig


def plot_batch(batch: dict[str, Any], max_items: int = 4) -> Figure:
    """Mid axial slices of a sampler batch: one row per study, one column per channel."""
    image, present, modality = batch["image"], batch["present"], batch["modality"]
    b, k = int(image.shape[0]), int(image.shape[1])
    rows = min(b, max_items)
    fig = Figure(figsize=(2.0 * k, 2.1 * rows), layout="constrained")
    axes = fig.subplots(rows, k, squeeze=False)
    z = int(image.shape[-1]) // 2
    for i in range(rows):
        for c in range(k):
            ax = axes[i, c]
            ax.imshow(
                np.asarray(image[i, c, :, :, z], dtype=np.float32).T,
                cmap="gray",
                origin="lower",
                vmin=0,
                vmax=1,
            )
            name = MODALITIES[int(modality[i, c])] if bool(present[i, c]) else "absent"
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(batch["study"][i], fontsize=7)
    fig.suptitle("sampler crops: one box per study, every modality")
    return fig


def grid_table(store: Store, study: str) -> pd.DataFrame:
    """The source grid of each modality of a study (shape, voxel size, orientation, dtype) and
    its 5th/95th percentiles, as curation recorded them."""
    rec = store.qc(study)["modalities"]
    return pd.DataFrame(
        {
            m: {
                "source shape": "×".join(map(str, r["source_shape"])),
                "voxel (mm)": "×".join(f"{v:g}" for v in r["source_spacing"]),
                "orientation": r["source_orientation"],
                "dtype": r["source_dtype"],
                "p5": round(r["p5"], 1),
                "p95": round(r["p95"], 1),
            }
            for m, r in rec.items()
        }
    ).T
