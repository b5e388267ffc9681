# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/10_missing_modalities"
task = None  # None: the plan's tumour task
seed = 0
inits = ["scratch", "brainmvp"]
max_test = None  # None: the plan's (a few test studies at demo scale)
replacement = 3  # train.template_replacement of section 4: up to 3 of 4 modalities replaced per copy
replacement_seeds = None  # None: the plan's seeds (paired with the main runs)
threads = 2

# %% [markdown]
# # Missing modalities: templates or zeros in place of an absent scan
#
# ## Overview
#
# 1. Filling an absent channel with the learned template of its modality
# 2. Every subset of the four modalities, template fill against zero fill
# 3. What survives the loss of each modality
# 4. Training with template replacement: two copies, a consistency loss, every subset again
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# |---|---|---|
# | Template distillation (notebook 05) | Necessary | the templates used as fill |
# | Segmentation fine-tuning (notebook 07) | Necessary | the networks tested here |
#
# **Time to learn**: 10 minutes (1-2 minutes of inference at demo scale).

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from mmlib.evaluate.reports import write_results
from mmlib.data import ensure_store
from mmlib.data.store import Store
from mmlib.evaluate.figures import template_fill_figure
from mmlib.evaluate.grid import finetune_grid
from mmlib.evaluate.scoring import load_network
from mmlib.proxy.missing import modality_subsets
from mmlib.tasks import plan
from mmlib.evaluate.tables import html_table
from mmlib.evaluate.figures import plot_replacement_pairs, plot_subsets
from mmlib.evaluate.robustness import (
    drop_one_table,
    replacement_pairs,
    replacement_robustness,
    subset_robustness,
    subset_summary,
)

torch.set_num_threads(threads)
P = plan(scale)
task = task or P["seg_task"]
max_test = P["robustness_max_test"] if max_test is None else max_test
out = Path(out_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)
store = Store(ensure_store(scale))

# %% [markdown]
# ## 1. Template fill
#
# A network fine-tuned on four channels meets a study without, say, T1c. BrainMVP's answer: put
# the learned T1c template there, cropped at the anatomically matching place (template space is
# head-centred) and min-max scaled like the images, so the input stays in the distribution the
# encoder saw in pre-training; the usual answer is zeros. The runs are those of notebook 07
# (reused), at the main label fraction and one seed.

# %%
runs = dict(zip(inits, finetune_grid(scale, inits, [P["main_fraction"]], [seed], {"task": task})))
spec = load_network(runs["brainmvp"])[1]
fig = template_fill_figure(runs["brainmvp"], store)
display(fig)
fig.savefig(out / "figures" / "template_fill.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## 2. Every subset of the modalities
#
# For each of the 15 non-empty subsets of the four modalities the others are dropped and
# filled, and the test studies are segmented again. Scratch has no templates, so it is tested
# with zero fill only. Neither network saw a missing modality in training.

# %% tags=["hide-input"]
tables = [subset_robustness(runs[i], ("template", "zero"), max_test=max_test) for i in inits]
table = pd.concat(tables, ignore_index=True)
n_test = int(table["n_test"].iloc[0])
wide = table.pivot_table(index="subset", columns=["init", "fill"], values="dice_mean", sort=False)
wide.columns = [f"{i} · {f} fill" for i, f in wide.columns]
display(html_table(wide.reset_index(), f"Mean Dice with only the subset's modalities present, the others "
                   f"filled: {len(modality_subsets(spec.modalities))} subsets, {n_test} test studies, seed {seed}"))
plot_subsets(table)
plt.savefig(out / "figures" / "subsets.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## 3. The loss of one modality
#
# Dice with all four modalities against Dice with one of them missing, per fill.

# %% tags=["hide-input"]
drops = drop_one_table(table, spec.modalities)
display(html_table(drops, f"Dice with all four modalities and with one missing, per network and fill "
                   f"({n_test} test studies, seed {seed})"))

# %% [markdown]
# ## 4. Training with template replacement
#
# The networks above never saw a filled channel in training. BrainMVP's supplement fine-tunes
# with *template replacement*: every training crop is made into two copies, in each of which up
# to `replacement` modalities (a number drawn uniformly from 0 to 3, at least one real modality
# kept) are replaced by their templates, cropped as at test time; both copies are segmented and
# a consistency loss (weight `train.consistency_weight`, 0.1 as in the authors' script) pulls
# the two copies' deepest encoder features together. The BrainMVP network is fine-tuned again
# at each seed with `train.template_replacement`, everything else equal (same labelled
# studies, crops and decoder initialisation), and every subset is scored with template fill.
# The gain is paired by seed: with minus without, per subset. At demo the plan runs two seeds
# (`replacement_seeds`) and scores each subset on two test studies (`robustness_max_test`), to
# keep the book within its time budget: the per-seed gains show a direction and its
# consistency, not a resolved difference (that would take the seeds and test studies of the
# paired comparisons in chapter 12).

# %% tags=["hide-input"]
rep_seeds = P["replacement_seeds"] if replacement_seeds is None else replacement_seeds
rep_table = replacement_robustness(
    scale, "brainmvp", P["main_fraction"], rep_seeds, replacement, {"task": task}, max_test=max_test
)
pairs = replacement_pairs(rep_table)
display(html_table(pairs, f"BrainMVP with and without template replacement, template fill, mean over seeds "
                   f"{', '.join(map(str, rep_seeds))} (gain_sN: the gain at seed N; {n_test} test studies)"))
plot_replacement_pairs(pairs)
plt.savefig(out / "figures" / "replacement.png", dpi=80, bbox_inches="tight")
seed_gain = {f"s{c[6:]}": float(pairs[c].mean()) for c in pairs.columns if c.startswith("gain_s")}
print(f"mean gain over the 15 subsets, per seed: {seed_gain}")

# %%
summary = subset_summary(table, spec.modalities)
results = {
    "scale": scale, "task": task, "seed": seed, **{k: summary[k] for k in ("n_subsets", "n_test", "dice_full", "dice_mean_over_subsets")},
    "template_minus_zero_brainmvp": summary["template_minus_zero"],
    "runs": [str(r) for r in runs.values()],
    "replacement": {
        "template_replacement": replacement,
        "seeds": list(rep_seeds),
        "dice_without": dict(zip(pairs["subset"], pairs["without"])),
        "dice_with": dict(zip(pairs["subset"], pairs["with"])),
        "gain_mean_over_subsets": float(pairs["gain"].mean()),
        "gain_mean_over_subsets_per_seed": seed_gain,
        "subsets_improved": int((pairs["gain"] > 0).sum()),
        "runs": sorted(set(rep_table["run"])),
    },
}
write_results(out / "results.json", results)
table.to_csv(out / "subsets.csv", index=False)
rep_table.to_csv(out / "replacement.csv", index=False)

# %% [markdown]
# ## Summary
#
# Filling a missing channel with the learned template keeps the input anatomically plausible;
# whether it beats zeros depends on how well the templates were learned (a short demo
# pre-training learns blurry ones) and on whether the network ever saw a filled channel. The
# table of this execution says which it was here. Section 4 lets the network see filled
# channels in training (template replacement with a consistency loss, as in BrainMVP's
# supplement; mmlib makes two true copies of the study, where the authors' code pairs
# different modalities, see the deviations page) and reports, per subset and paired by seed,
# what that buys; its `results.json` entry `replacement` holds the figures of this execution.
#
# ### What's next?
#
# Notebook 12 gathers every table and figure of the downstream notebooks on one page.
