# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/00_overview"

# %% [markdown]
# # Overview: the book, the method, and this run
#
# This book reproduces and explores **BrainMVP** (Rui et al., "Multi-modal Vision Pre-training for
# Medical Image Analysis", CVPR 2025) {cite}`rui2025brainmvp`: self-supervised pre-training that
# learns from the naturally grouped modalities of one MRI study (T1, T1c, T2, FLAIR, PD, MRA, DWI,
# ADC) instead of one modality at a time, and the fine-tuning that shows what it buys.
#
# ## Overview
# 1. What the book contains and how it runs
# 2. The method in one picture
# 3. The environment and scale of this run
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | PyTorch basics | Necessary | tensors, modules, optimisers |
# | MRI contrasts (T1, T2, FLAIR, …) | Helpful | the cohort notebook explains them |
# | Self-supervised learning | Helpful | masked image modelling, contrastive learning |
#
# - **Time to learn**: 10 minutes

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt

from mmlib import MODALITIES, __version__
from mmlib.configs.scales import check_scale
from mmlib.overview import environment_report, method_diagram

check_scale(scale)
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. What the book contains
#
# Every chapter is a notebook that calls into the `mmlib` package; the package does the work,
# the notebook tells the story. One parameter, `scale`, sizes every chapter: `smoke` for the
# tests, `demo` (this book, on a CPU, in minutes) and `paper` (GPUs and the real datasets). All
# scales run the same code. The data of the book is an *embedded cohort*: simulated
# multi-parametric MRI on the real ICBM 2009a anatomy, written on disk exactly as BraTS, IXI,
# UCSF-PDGM, ISLES and the Decathlon write theirs, so that the curation code reads it unchanged.
#
# ## 2. The method in one picture
#
# For each study one modality $X_m$ is the target. Its crop is cut into cubes; most cubes are
# *replaced*, not zeroed: in view A by the same cubes of a learnable template $T_m$ of that
# modality (modality template distillation), in view B by the same cubes of another modality
# $X_n$ of the same study (cross-modal reconstruction). One encoder and one decoder reconstruct
# $X_m$ from both views, and the deepest features of the two views of a study are pulled together
# against the other studies of the batch (modality-aware contrastive learning).

# %%
fig = method_diagram()
fig.savefig(out / "method.png", dpi=120)
plt.show()

# %% [markdown]
# ## 3. The environment and scale of this run
#
# The canonical modalities, in template order:

# %%
print(", ".join(MODALITIES))
env = environment_report()
for key, value in env.items():
    print(f"{key:>14}: {value}")
print(f"{'scale':>14}: {scale}")
print(f"{'mmlib':>14}: {__version__}")

# %%
results = {"scale": scale, "mmlib": __version__, "n_modalities": len(MODALITIES), **env}
(out / "results.json").write_text(json.dumps(results, indent=2))

# %% [markdown]
# ## Summary
# mmlib packages the BrainMVP method as rooms (data, proxy tasks, backbones, engine, evaluation,
# viewing) and this book walks through them in order, at a scale that runs on the machine at hand.
#
# ### What's next?
# The next chapter builds the embedded cohort and shows every modality of a simulated subject.
#
# ## Resources and references
# - The BrainMVP paper {cite}`rui2025brainmvp`; MONAI {cite}`cardoso2022monai`; the ICBM 2009a
#   anatomy {cite}`fonov2011icbm`. The full list is in the bibliography.
