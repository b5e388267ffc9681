# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/06_pretraining"
objective = "brainmvp"  # brainmvp, mim, cmr_only, md_only, brainmvp_nocl, ... (mmlib.proxy.brainmvp.OBJECTIVES)
backbone = "unet"  # unet, uniformer, swinunetr
epochs = None  # None: the plan's chapter_epochs (demo: 4 of the preset's 18), else the preset's schedule
device = "auto"  # auto, cpu, cuda
data_root = None  # a curated store (`mmlib curate --out STORE ...`); None: the embedded cohort's store
nproc = 1  # > 1: launch torchrun with this many processes (GPUs) on this machine
overrides = []  # extra config overrides as in mmlib pretrain, one string each

# %% [markdown]
# # Pre-training BrainMVP
#
# The three proxy tasks of the previous chapters, trained together: one encoder-decoder learns
# to reconstruct every modality of a study from a view whose masked cubes come from a learnable
# template of that modality (view A) and from a view whose masked cubes come from another
# modality of the same study (view B), while the deepest features of the two views are pulled
# together against the other studies of the batch. This notebook runs the engine that does it,
# on the embedded cohort on a CPU at `demo` scale, and on GPUs and real data at `paper` scale:
# the same call, one parameter apart.
#
# ## Overview
# 1. The configuration: a preset, a few overrides, one resolved record
# 2. Training (or reusing a finished run)
# 3. The loss of each term, the learning rate and the throughput
# 4. Reconstructions across training
# 5. The learned templates
# 6. The checkpoint the downstream chapters use, and the baselines
# 7. From one CPU to many GPUs
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | The three proxy tasks (chapters 3-5) | Necessary | cross-modal reconstruction, contrastive learning, template distillation |
# | The crop store (chapter 2) | Necessary | what the sampler reads |
# | AdamW, learning-rate schedules | Helpful | warm-up then cosine decay |
# | Mixed precision, DistributedDataParallel | Helpful | only for the GPU section |
#
# - **Time to learn**: 20 minutes (plus about two minutes of training per objective at `demo`)

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mmlib.configs.scales import check_scale
from mmlib.data.store import Store
from mmlib.engine.config import load_config
from mmlib.engine.binding import default_run_dir, resolve
from mmlib.engine.pretrain import launch, pretrain
from mmlib.modalities import MODALITIES
from mmlib.runs import latest_checkpoint, load_run, load_samples, sample_errors
from mmlib.tasks import plan
from mmlib.proxy.templates import load_templates
from mmlib.viz import explore
from mmlib.viz.plots import loss_curves, modality_grid, sample_figure

check_scale(scale)
out = Path(out_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. The configuration
#
# A run is described by one nested configuration: the scale preset
# (`mmlib/configs/pretrain_<scale>.yaml`), then a file or dict of your own, then `key=value`
# overrides, as on the command line (`mmlib pretrain --config demo objective=mim`). The
# *resolved* configuration binds it to this machine (the store's path, the backbone's size,
# every field of the objective, the device, the mixed-precision mode) and is saved with the run.
# Two runs with the same resolved configuration are the same run: the second call returns the
# first's folder at once. The objective's epoch-based switches (the template warm-up of view B,
# the start of the contrastive term) are the authors' 300 and 1000 of 1500 epochs at `paper`
# scale and shortened with the schedule at `demo`. At demo this chapter trains for the plan's
# `chapter_epochs` (4 of the preset's 18: the process, in a minute); the 18-epoch run of the
# same recipe ships with mmlib and is what the downstream chapters fine-tune (section 6).

# %%
settings = {"objective": objective, "model.name": backbone, "device": device}
epochs = epochs or plan(scale)["chapter_epochs"]
if epochs is not None:
    settings["schedule.epochs"] = epochs
if data_root is not None:
    settings["data.store"] = str(data_root)
settings = [f"{k}={v}" for k, v in settings.items()] + list(overrides)
cfg = resolve(load_config(scale, settings))
shown = {
    "store": cfg["data"]["store"], "crop": cfg["data"]["crop_size"], "modalities per study (k)": cfg["data"]["k"],
    "backbone": f"{cfg['model']['name']} {cfg['model']['size']}", "objective": cfg["objective"]["name"],
    "loss weights (md, cmr, cl)": (cfg["objective"]["w_md"], cfg["objective"]["w_cmr"], cfg["objective"]["w_cl"]),
    "mask rate, block": (cfg["objective"]["mask_rate"], cfg["objective"]["block_size"]),
    "view B template warm-up (epochs)": cfg["objective"]["warmup_epochs"],
    "template scaling, gradient": (cfg["objective"]["template_scaling"], cfg["objective"]["template_grad"]),
    "template lr, weight decay, in the clip": (cfg["optim"]["template_lr"] or cfg["optim"]["lr"],
                                               cfg["optim"]["template_weight_decay"], cfg["train"]["clip_templates"]),
    "contrastive from epoch": cfg["objective"]["cl_start_epoch"],
    "optimiser": f"AdamW lr {cfg['optim']['lr']:g}, weight decay {cfg['optim']['weight_decay']:g}, "
                 f"{cfg['optim']['warmup_steps']} warm-up steps, cosine",
    "epochs, batch x accumulation": (cfg["schedule"]["epochs"], f"{cfg['train']['batch_size']} x {cfg['train']['accum']}"),
    "device, mixed precision": (cfg["device"], cfg["train"]["amp"]),
    "run folder": str(default_run_dir(cfg)),
}
print(pd.Series(shown, dtype=object).to_string())

# %% [markdown]
# ## 2. Training
#
# `pretrain` builds the sampler over the store, the backbone, the objective and AdamW, and runs
# the loop: gradient accumulation, mixed precision (bf16 on GPUs that have it; the demo preset
# asks for bf16 on the CPU too, 1.65x faster with the same templates), gradient
# clipping, warm-up plus cosine decay counted in optimiser steps, a progress bar, metrics every
# step, and an atomic checkpoint every `checkpoint.every` steps. A finished run is reused; a run
# that was interrupted (even by `kill -9`) resumes from its last checkpoint and ends with the
# same weights, bit for bit, as if it had never stopped. With `nproc > 1` the same run is
# launched under `torchrun` on this machine's GPUs.

# %%
if nproc > 1:
    run = launch(nproc, scale, settings)
else:
    run = pretrain(scale, settings, progress=True)
info = load_run(run)
res = info["results"]
print(f"{run}\n{res['steps']} optimiser steps ({res['epochs']:.1f} epochs of {res['studies']} studies) "
      f"in {res['time_s']:.0f} s, {res['samples_per_s']:.1f} samples/s, "
      f"{100 * res['data_wait_frac']:.1f} % of the time waiting for data")

# %% [markdown]
# ## 3. The loss of each term
#
# `md` is view A's reconstruction error (template distillation; the only term of the
# single-modal `mim` baseline), `cmr` view B's (cross-modal reconstruction), `cl` the
# contrastive InfoNCE once it is switched on, `loss` their weighted sum. The panels on the
# right show the learning rate the engine applied at each step (read back from the log) and the
# throughput.

# %%
metrics = pd.DataFrame(info["metrics"])
terms = [k for k in ("loss", "md", "cmr", "cl") if k in metrics and metrics[k].abs().sum() > 0]
smooth = max(1, len(metrics) // 30)
fig = loss_curves(metrics, terms, smooth=smooth, title=f"{objective}: loss terms (rolling mean of {smooth} steps)")
fig.savefig(out / "figures" / "losses.png", dpi=90)
fig

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 2.8), layout="constrained")
axes[0].plot(metrics["step"], metrics["lr"])
axes[0].set(xlabel="optimiser step", ylabel="learning rate", title="warm-up, then cosine")
axes[1].plot(metrics["step"], metrics["samples_per_s"], lw=0.8)
axes[1].set(xlabel="optimiser step", ylabel="samples / s", title="throughput")
fig.savefig(out / "figures" / "lr_throughput.png", dpi=90)

# %% [markdown]
# ## 4. Reconstructions across training
#
# At every checkpoint (and before the first step) the engine runs the objective on the same
# crops of a few fixed studies and saves the views and reconstructions
# (`samples/step_XXXXXXX.npz`, which the napari run browser of chapter 9 also reads). Each row
# is one study, labelled with the modality that was its target: the target, the mask, view A
# (template fill) and view B (cross-modal fill), and the reconstructions of the last checkpoint.
# The mean squared error over the masked voxels falls from the untrained network to the last
# checkpoint; copying view B's input (the other modality's blocks) is the bar that
# cross-modal reconstruction has to clear.

# %%
first, last = load_samples(info["samples"][0]), load_samples(info["samples"][-1])
fig = sample_figure(last, title=f"step {last.step}: views and reconstructions")
fig.savefig(out / "figures" / "samples_last.png", dpi=90)
fig

# %%
progress_rows = []
for path in info["samples"]:
    progress_rows.append({"step": load_samples(path).step, **sample_errors(path)})
errors = pd.DataFrame(progress_rows).set_index("step")
print("MSE over the masked voxels, by checkpoint:")
print(errors.round(4).to_string())
entry = 0
panels = {"target": first.arrays["target"][entry]}
for path in info["samples"][:: max(1, len(info["samples"]) // 4)] + info["samples"][-1:]:
    s = load_samples(path)
    panels[f"step {s.step}"] = s.arrays["recon_a"][entry]
fig = modality_grid(panels, title=f"{first.study[entry]} ({first.modality[entry]}): view A reconstruction across training")
fig.savefig(out / "figures" / "recon_across_training.png", dpi=90)
fig

# %% [markdown]
# ## 5. The learned templates
#
# One volume per modality in a head-centred template space, zeros at the start and learned only
# through the reconstruction loss of the views they fill (min-max scaled as a whole, as they
# are used under the default `global` scaling). Modalities that no pre-training study has stay
# zero; a single-modal baseline (`mim`) never uses them. Below each template, the mean image of
# its modality over the pre-training studies on the same grid, and $r$, their correlation in
# the head (`template_corr`, as in chapter 5; `template_corr_box` over every voxel some study's
# box covers, neck and background included): a template that has learned
# the modality's anatomy shows the head, its ventricles and its grey-white contrast. Through the
# reconstruction loss alone a demo run leaves them noise; the `demo` preset therefore adds
# chapter 5's direct template fit (`objective.w_template`), which the `paper` preset leaves off.

# %%
ckpt = latest_checkpoint(run)
templates = load_templates(ckpt)
vols = templates.volumes.detach().numpy()
learned = [m for i, m in enumerate(MODALITIES) if np.abs(vols[i]).max() > 0]
template_corr, template_corr_box = {}, {}
if learned:
    means = explore.modality_means(Store(cfg["data"]["store"]), learned, templates)
    template_corr = explore.template_corr(templates, means)
    template_corr_box = explore.template_corr(templates, means, where="box")
    fig = explore.template_figure(templates, means)
    fig.suptitle(f"{objective}: learned templates (top) and mean images (bottom), axial")
    fig.savefig(out / "figures" / "templates.png", dpi=90)
    print("template_corr:", {m: round(r, 3) for m, r in template_corr.items()})
else:
    print(f"{objective}: no template was used, all {len(MODALITIES)} stay zero")
template_std = {m: float(vols[i].std()) for i, m in enumerate(MODALITIES)}
print("template standard deviation:", {m: round(v, 4) for m, v in template_std.items()})

# %% [markdown]
# ## 6. The checkpoint, and the baselines
#
# A checkpoint folder holds the weights in safetensors, the templates included, and a
# `meta.json` that rebuilds the backbone. At `demo` the downstream chapters (07 segmentation,
# 08 classification, 09 label efficiency and ablation, 10 missing modalities, 11 visual
# inspection of their runs, 12 results) do not start from this run: they start from the demo
# pre-trainings that ship with mmlib (`mmlib/pretrained/demo/<objective>`, `mmlib weights
# shipped` lists them), made once with this same recipe (`mmlib pretrain --config demo
# objective=...`, 18 epochs, 2 threads) and packed with `mmlib weights pack`; each `meta.json`
# records the commands that regenerate it and the SHA-256 it is checked against on every use.
# The shipped BrainMVP backbone is bit for bit the checkpoint on which chapter 12's held-out
# evidence was measured. So a build spends its minutes on fine-tuning seeds, and its result
# does not depend on this build's pre-training (another floating-point path gives other
# weights: see chapter 12). `pretrained=train` in the fine-tuning config pre-trains instead,
# and `paper` always does. The comparison needs the single-modal baseline and each ablation
# pre-trained the same way. They are this very notebook run with another `objective`, with
# papermill parameters, not copies of it:
#
# ```
# mmlib notebooks sweep 06_pretraining -p objective mim,cmr_only,md_only,brainmvp_nocl --scale demo
# ```
#
# Each lands in its own run folder (the folder name holds the objective and a hash of the
# resolved configuration), and with `pretrained=train` the fine-tuning chapters find them by the
# same configuration (a missing one is pre-trained there on first use). "Scratch" needs no
# pre-training.

# %%
print(f"checkpoint for downstream use: {ckpt}")
print(json.dumps(json.loads((ckpt / "meta.json").read_text())["model"], indent=1))

# %% [markdown]
# ## 7. From one CPU to many GPUs
#
# The same engine runs under `torchrun`: one process per GPU, NCCL between them (gloo on CPUs),
# DistributedDataParallel, per-rank seeds, metrics averaged over ranks, and only rank 0 writing.
# Every optimiser step takes the same studies and masks whatever the split between processes and
# gradient accumulation, so 8 GPUs with batch 3 reproduce one GPU with batch 3 and accumulation 8
# (up to float rounding).
#
# ```
# mmlib pretrain --config paper data.store=/data/store                          # one GPU
# torchrun --nproc-per-node 8 -m mmlib pretrain --config paper data.store=/data/store
# torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
#     -m mmlib pretrain --config paper data.store=/shared/store                  # 4 nodes
# ```
#
# `benchmarks/pretrain.py` measures samples/s, step time and the share of time spent waiting for
# data, and on a GPU what the paper's 1500 epochs would cost in GPU-hours.

# %%
results = {
    "scale": scale, "objective": objective, "backbone": cfg["model"]["name"], "device": res["device"],
    "amp": res["amp"], "steps": res["steps"], "epochs": res["epochs"], "studies": res["studies"],
    "global_batch": res["global_batch"], "time_s": res["time_s"], "samples_per_s": res["samples_per_s"],
    "data_wait_frac": res["data_wait_frac"], "first": res["first"], "final": res["final"],
    "masked_mse_first": errors.iloc[0].to_dict(), "masked_mse_last": errors.iloc[-1].to_dict(),
    "templates_learned": learned, "template_std": template_std, "template_corr": template_corr,
    "template_corr_box": template_corr_box,
    "run_dir": str(run), "checkpoint": str(ckpt), "n_samples_files": len(info["samples"]),
}
(out / "results.json").write_text(json.dumps(results, indent=2))

# %% [markdown]
# ## Summary
# The engine turns one configuration into a run folder: the resolved configuration, a metrics
# log with every loss term, the learning rate, throughput and memory, atomic checkpoints that a
# killed run resumes from exactly, and the views and reconstructions of a few fixed studies
# across training. The same call pre-trains BrainMVP and its baselines on a CPU in minutes and on
# many GPUs at the paper's scale.
#
# ### What's next?
# Chapter 7 fine-tunes these checkpoints on segmentation tasks and compares them with training
# from scratch and with the single-modal baseline; chapter 9 opens the run folder in napari.
#
# ## Resources and references
# - BrainMVP {cite}`rui2025brainmvp`; AdamW (Loshchilov & Hutter, 2019); SGDR's cosine schedule
#   (Loshchilov & Hutter, 2017); PyTorch DistributedDataParallel and `torchrun`.
