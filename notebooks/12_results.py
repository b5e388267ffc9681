# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/12_results"
runs_root = None  # None: work_dir(scale)/runs/finetune (every finished fine-tuning run)

# %% [markdown]
# # Results: what pre-training bought, gathered from the run folders
#
# ## Overview
#
# 1. Every finished fine-tuning run, and what it cost
# 2. Segmentation: BrainMVP vs scratch vs single-modal masked modelling, per task
# 3. Label efficiency and the ablation of each proxy task
# 4. Classification
# 5. Missing modalities
# 6. Qualitative segmentations
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# |---|---|---|
# | Notebooks 07-10 | Necessary | they run what this page reads |
# | Paired comparisons | Helpful | differences by seed, with their spread |
#
# **Time to learn**: 10 minutes. This page computes nothing: it reads `results.json`,
# `test_scores.csv`, `robustness.csv` and `predictions/` of the run folders.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mmlib.evaluate.reports import write_results
from mmlib.evaluate.reports import (collect_runs, lesion_summary, paired_differences, plot_label_efficiency, plot_paired,
                                    plot_segmentation, plot_subsets, summary_table, to_markdown)
from mmlib.paths import work_dir

root = Path(runs_root) if runs_root else work_dir(scale) / "runs" / "finetune"
out = Path(out_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)
runs = collect_runs(root)
print(f"{len(runs)} finished runs under {root}")

# %% [markdown]
# ## 1. The runs

# %%
if len(runs):
    cost = runs.groupby(["task", "init"]).agg(runs=("run", "count"), seeds=("seed", "nunique"),
                                              fractions=("label_fraction", "nunique"),
                                              train_s=("seconds_train", "sum"), s_per_step=("seconds_per_step", "mean"))
    print(cost.round(2).to_string())
    print(f"total fine-tuning time: {runs['seconds_train'].sum() / 60:.1f} min")

# %% [markdown]
# ## 2. Segmentation
#
# Dice (mean over regions) on each task's test studies, mean ± sd over seeds, and the paired
# difference of every initialisation to scratch at the same seed and label fraction; then the
# lesion-wise Dice and F1 of the BraTS evaluation and the test studies with an empty reference
# region.

# %%
seg = runs[runs["kind"] == "segmentation"] if len(runs) else runs
summary = {}
if len(seg):
    print(to_markdown(summary_table(seg, "dice_mean")))
    seg_diff = paired_differences(seg, "dice_mean")
    print(to_markdown(seg_diff.drop(columns=["diffs"])))
    print(to_markdown(lesion_summary(seg)))
    summary["segmentation"] = {f"{r['task']}/{r['init']}@{r['label_fraction']}": {"mean": r["mean"], "sd": r["sd"], "n_seeds": r["n_seeds"]}
                               for _, r in summary_table(seg, "dice_mean").iterrows()}
    summary["segmentation_paired"] = {f"{r['task']}/{r['init']}@{r['label_fraction']}": {
        k: r[k] for k in ("mean_diff", "sd_diff", "wins", "n_seeds", "resolved")} for _, r in seg_diff.iterrows()}
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(seg_diff)), 3.4))
    plot_paired(seg_diff.assign(init=seg_diff["task"] + "\n" + seg_diff["init"]), "Dice difference to scratch", ax=ax)
    fig.savefig(out / "figures" / "paired_segmentation.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## 3. Label efficiency and ablation

# %%
if len(seg):
    for task, g in seg.groupby("task"):
        if g["label_fraction"].nunique() > 1:
            plot_label_efficiency(g, "dice_mean", task)
            plt.savefig(out / "figures" / f"label_efficiency_{task}.png", dpi=80, bbox_inches="tight")
            plt.show()

# %% [markdown]
# ## 4. Classification

# %%
cls = runs[runs["kind"] == "classification"] if len(runs) else runs
if len(cls):
    for metric in ("accuracy", "balanced_accuracy", "auc", "f1"):
        print(f"### {metric}")
        print(to_markdown(summary_table(cls, metric, ("task", "init"))))
    summary["classification"] = {f"{r['task']}/{r['init']}": {"accuracy": r["mean"], "sd": r["sd"], "n_seeds": r["n_seeds"]}
                                 for _, r in summary_table(cls, "accuracy", ("task", "init")).iterrows()}

# %% [markdown]
# ## 5. Missing modalities
#
# The modality-subset tables that notebook 10 left in the run folders.

# %%
tables = [pd.read_csv(p) for p in sorted(root.rglob("robustness.csv"))]
if tables:
    rob = pd.concat(tables, ignore_index=True)
    plot_subsets(rob.groupby(["subset", "init", "fill"], sort=False)["dice_mean"].mean().reset_index()
                 if "dice_mean" in rob else rob)
    plt.savefig(out / "figures" / "subsets.png", dpi=80, bbox_inches="tight")
    summary["robustness"] = {f"{i}/{f}": float(g["dice_mean"].mean()) for (i, f), g in rob.groupby(["init", "fill"])} if "dice_mean" in rob else {}

# %% [markdown]
# ## 6. Qualitative segmentations

# %%
if len(seg):
    picks = seg[(seg["seed"] == seg["seed"].min()) & seg["init"].isin(["scratch", "brainmvp"])]
    picks = picks.sort_values(["task", "init", "label_fraction"]).drop_duplicates(["task", "init"])
    if len(picks):
        fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3 * len(picks)), squeeze=False)
        for row, (_, r) in zip(axes, picks.iterrows()):
            plot_segmentation(r["run"], axes=row)
        fig.savefig(out / "figures" / "qualitative.png", dpi=80, bbox_inches="tight")

# %%
results = {"scale": scale, "n_runs": int(len(runs)), "minutes_fine_tuning": float(runs["seconds_train"].sum() / 60) if len(runs) else 0.0,
           "tasks": sorted(runs["task"].unique().tolist()) if len(runs) else [], **summary}
write_results(out / "results.json", results)
if len(runs):
    runs.to_csv(out / "runs.csv", index=False)

# %% [markdown]
# ## Summary
#
# Every number on this page was read from a run folder that the book executed (or that the
# same code wrote at paper scale). The comparisons are paired by seed; a difference counts as
# resolved here when its mean exceeds its spread over seeds — with three seeds that is a weak
# criterion, reported beside the per-seed values rather than as significance.
#
# ### What's next?
#
# Run the same notebooks at `scale="paper"` on curated BraTS/ISLES/MRBrainS data with GPUs, or
# widen the demo grid (`mmlib finetune --fractions 0.1 0.2 0.4 1.0 --seeds 0 1 2 3 4`).
