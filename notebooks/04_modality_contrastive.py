# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/04_modality_contrastive"
temperature = 1.0  # the authors'
n_studies = 8  # studies in the retrieval batch
epochs = None  # None: the plan's chapter_epochs (demo: 4 of the preset's 18: a short run shows the task; the downstream chapters start from shipped checkpoints)
threads = 2

# %% [markdown]
# # Modality-aware contrastive learning: two views of one study, one representation
#
# ## Overview
#
# 1. Positives and negatives: what "modality-aware" means
# 2. Symmetric InfoNCE, by hand, and why the temperature is 1
# 3. Negatives from every GPU, with the gradient flowing back
# 4. The two views on the cohort, with an explorer
# 5. Training the contrastive term alone
# 6. Before and after: which view finds its partner
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# |---|---|---|
# | Notebook 03 (cross-modal reconstruction) | Necessary | view B, and the run reused here |
# | Contrastive learning (SimCLR, InfoNCE) | Helpful | positives, negatives, temperature |
# | Distributed data parallel | Helpful | only for section 3 |
#
# **Time to learn**: 15 minutes (about two minutes of training at demo scale on 2 cores).

# %%
import json
import math
import time
from pathlib import Path

import torch
from IPython.display import display

from mmlib.data import ensure_store
from mmlib.data.store import Store
from mmlib.engine.config import load_config
from mmlib.engine.pretrain import pretrain
from mmlib.proxy import OBJECTIVES
from mmlib.proxy.contrastive import info_nce
from mmlib.runs import load_run, load_samples
from mmlib.tasks import plan
from mmlib.viz import explore
from mmlib.viz.plots import loss_curves, sample_figure

torch.set_num_threads(threads)
out = Path(out_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)
store = Store(ensure_store(scale))
cfg = load_config(scale, {"objective": "cl_only"})
crop = int(cfg["data"]["crop_size"])
block_size = int(cfg["objective_defaults"].get("block_size", 8))
batch = explore.sample_batch(store, n=n_studies, crop_size=crop, k=int(cfg["data"]["k"]), seed=1)
print(store, f"| {len(batch['study'])} studies in the retrieval batch, crops {crop}^3")

# %% [markdown]
# ## 1. Positives and negatives
#
# Each study contributes two views of the *same* target modality $X_m$: view A with its masked
# cubes filled from the template $T_m$, view B with the same cubes of another modality $X_n$.
# BrainMVP {cite}`rui2025brainmvp` takes the deepest encoder features of the two views as a
# positive pair and the other studies of the batch as negatives. Because both views reconstruct
# the same $X_m$, the pair is *modality-aware*: the representation is asked to be the same
# whichever modality (or template) filled the gaps, i.e. to encode the study's anatomy and the
# target contrast, not the fill. The authors switch the term on late (epoch 1000 of 1500), once
# the templates are stable enough for view A to be informative; `cl_start_epoch` is that switch.
#
# ## 2. Symmetric InfoNCE, by hand
#
# With L2-normalised flattened features $a_i, b_i$ and temperature $\tau$,
# $\mathcal{L} = \tfrac12\big[\mathrm{CE}(a b^\top/\tau, i) + \mathrm{CE}(b a^\top/\tau, i)\big]$.
# The authors use $\tau = 1$ and no projection head: cosine similarities in $[-1, 1]$ then give
# soft logits, a gentle pull that does not fight the reconstruction terms. The value from
# `mmlib.proxy.contrastive.info_nce` against the formula written out:

# %%
g = torch.Generator().manual_seed(0)
a, b = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
an, bn = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
s = an @ bn.T / temperature
by_hand = 0.5 * (-(s.diag() - s.logsumexp(1)).mean() - (s.diag() - s.logsumexp(0)).mean())
print(f"info_nce {float(info_nce(a, b, temperature)):.6f}  by hand {float(by_hand):.6f}  "
      f"chance level log(B) = {math.log(3):.4f}")

# %% [markdown]
# ## 3. Negatives from every GPU
#
# With a batch of 3 studies per GPU (the paper's setting) each study has only two negatives.
# `info_nce(..., gather_distributed=True)` (`ObjectiveConfig.gather_distributed`) gathers the
# features of every rank with `torch.distributed.nn.functional.all_gather`, whose backward sends
# each rank the gradient of *all* ranks' losses, so that the mean of the ranks' losses and its
# gradient equal one process on the concatenated batch; `tests/test_proxy_contrastive.py`
# checks exactly that with two gloo processes. The authors did not gather; it is off by default.
#
# ## 4. The two views on the cohort
#
# The positive pair of one study: the target, view A (template fill; the templates start at
# zero, so the masked cubes are empty until they learn) and view B (cross-modal fill).

# %%
p = explore.preview(batch, 0, None, OBJECTIVES["brainmvp"].mask_rate, block_size, seed=2)
fig = explore.preview_figure(p, "axial", crop // 2)
fig.savefig(out / "figures" / "views.png", dpi=90, bbox_inches="tight")
display(fig)
display(explore.explorer(batch, None, 0, OBJECTIVES["brainmvp"].mask_rate, block_size))

# %% [markdown]
# ## 5. Training the contrastive term alone
#
# The `cl_only` objective has the contrastive term from the first step and no reconstruction
# (the decoder is not run). For comparison the reconstruction-only `cmr_only` run of notebook
# 03 is reused (or trained, when this notebook runs alone): does reconstruction by itself
# already align the two views?

# %%
epochs = epochs or plan(scale)["chapter_epochs"]
short = {"schedule.epochs": epochs} if epochs else {}  # notebook 03's schedule, so its run is reused
t0 = time.time()
run_cl = pretrain(scale, {"objective": "cl_only", "objective.temperature": temperature, **short})
run_cmr = pretrain(scale, {"objective": "cmr_only", **short})
print(f"{time.time() - t0:.0f} s:", run_cl.name, run_cmr.name)
fig = loss_curves(run_cl / "metrics.csv", keys=["cl", "grad_norm"], log=False, title="cl_only")
fig.savefig(out / "figures" / "loss.png", dpi=90, bbox_inches="tight")
display(fig)

# %% [markdown]
# ## 6. Before and after
#
# For every study of the batch, the cosine similarity of its view A with every view B: the
# untrained encoder, the contrastive encoder and the reconstruction encoder. Top-1 is the
# fraction of studies whose two views are each other's nearest neighbour (chance: $1/B$); the
# gap is the mean positive minus the mean negative similarity.

# %%
emb = {}
for name, (run, initial) in {"untrained": (run_cl, True), "cl_only": (run_cl, False),
                             "cmr_only": (run_cmr, False)}.items():
    backbone, templates = explore.run_model(run, initial=initial)
    emb[name] = explore.view_embeddings(backbone, templates, batch, block_size=block_size, seed=3)
scores = {k: explore.retrieval(*v, temperature=temperature) for k, v in emb.items()}
print(json.dumps(scores, indent=1))
fig = explore.similarity_figure(emb)
fig.savefig(out / "figures" / "similarity.png", dpi=90, bbox_inches="tight")
display(fig)

# %% [markdown]
# The contrastive term has no reconstruction of its own; in BrainMVP it sits on top of the two
# reconstructions. The reconstruction next to its target, from the reconstruction-trained
# encoder-decoder (`cmr_only`):

# %%
last = load_samples(load_run(run_cmr)["samples"][-1])
fig = sample_figure(last, keys=("target", "view_b", "recon_b"), size=2.2,
                    title=f"cmr_only after {last.step} steps")
fig.savefig(out / "figures" / "reconstruction.png", dpi=90, bbox_inches="tight")
display(fig)

# %%
res_cl = load_run(run_cl)["results"]
results = {
    "scale": scale, "temperature": temperature, "n_studies": len(batch["study"]),
    "chance_top1": 1.0 / len(batch["study"]), "steps": res_cl["steps"],
    "seconds": res_cl["time_s"], "cl_first": res_cl["first"]["cl"], "cl_final": res_cl["final"]["cl"],
    "info_nce_by_hand": float(by_hand), "info_nce_lib": float(info_nce(a, b, temperature)),
    "retrieval": scores, "run_dirs": {"cl_only": str(run_cl), "cmr_only": str(run_cmr)},
}
(out / "results.json").write_text(json.dumps(results, indent=1))
print(json.dumps(results, indent=1))

# %% [markdown]
# ## Summary
#
# - The two views of one study and one target modality are a positive pair; the other studies
#   of the batch are negatives. Symmetric InfoNCE on normalised flattened deepest features, at
#   the authors' temperature of 1, with no projection head.
# - Gathering negatives across GPUs is an option whose gradient matches one process on the whole
#   batch.
# - Trained alone, the term lowers InfoNCE on the training batches and raises the similarity of
#   each study's two views relative to the other studies (`retrieval` in `results.json`).
#
# ### What's next?
#
# Notebook 05 makes view A informative: the learnable modality templates.
