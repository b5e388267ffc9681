# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/05_template_distillation"
modalities = None  # None: every modality of the pre-training studies
scalings = ["global", "crop"]  # template scalings trained and compared; the first is reported
epochs = None  # None: the plan's chapter_epochs (demo: 4 of the preset's 18: a short run shows the task; the downstream chapters start from shipped checkpoints)
threads = 2

# %% [markdown]
# # Modality template distillation: one learnable head per modality
#
# ## Overview
#
# 1. Why templates: a structural prior per modality, distilled from every study
# 2. Template space: a head-centred grid with a true affine, and where the crops fall in it
# 3. The template fill, with an explorer
# 4. Training template distillation alone, under both template scalings
# 5. The learned templates against the mean image of their modality
# 6. Exporting the templates as NIfTI that overlay the images
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# |---|---|---|
# | Notebook 03 (block masking) | Necessary | the masks and fills reused here |
# | Affines and world coordinates | Helpful | NIfTI's voxel-to-mm matrix |
# | Atlases / population templates | Helpful | e.g. the ICBM 2009a average the cohort is built on |
#
# **Time to learn**: 15 minutes (about two minutes of training at demo scale on 2 cores).

# %%
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from IPython.display import display

from mmlib.data import ensure_store
from mmlib.data.store import Store
from mmlib.engine.config import load_config
from mmlib.engine.pretrain import pretrain
from mmlib.modalities import MODALITIES
from mmlib.proxy import Templates
from mmlib.runs import load_run, load_samples
from mmlib.tasks import plan
from mmlib.viz import explore
from mmlib.viz.plots import loss_curves, sample_figure

torch.set_num_threads(threads)
out = Path(out_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)
store = Store(ensure_store(scale))
cfg = load_config(scale, {"objective": "md_only"})
crop = int(cfg["data"]["crop_size"])
block_size = int(cfg["objective_defaults"].get("block_size", 8))
batch = explore.sample_batch(store, n=4, crop_size=crop, k=int(cfg["data"]["k"]))
pre = store.manifest[store.manifest["role"] == "pretrain"] if "role" in store.manifest else store.manifest
modalities = modalities or [m for m in MODALITIES if any(m in ms for ms in pre["modalities"])]
print(store, f"| {len(pre)} pre-training studies; modalities {modalities}")

# %% [markdown]
# ## 1. Why templates
#
# View A replaces the masked cubes of $X_m$ with the same cubes of a *learnable template* $T_m$:
# one full-head volume per modality, zero at the start, learned only through the reconstruction
# loss of view A. BrainMVP's reasoning {cite}`rui2025brainmvp`: a template shared by every study
# of a modality can only lower the loss by holding what those studies have in common, the
# modality's typical appearance of each structure, so distillation into $T_m$ gives the
# network a structural prior to reconstruct from, complementary to the study-specific cross-modal
# fill of view B. Downstream, the same templates stand in for a missing modality (notebook 10).
# The templates are min-max scaled to [0, 1] where they are used, since the images are, by one
# rule (`objective.template_scaling`, `mmlib.proxy.templates.scale_template_crop`) that
# pre-training, the missing-modality fill and the viewers share:
#
# - `global` (the default, as the authors' `utils/ops.py`): min-max the *whole* template of the
#   modality, then crop it. A template voxel has one value wherever it is used, so the template
#   can hold the modality's anatomy at every scale, dark ventricles and bright white matter alike;
# - `crop`: min-max each crop over the voxels it fills, so every fill spans exactly [0, 1]
#   whatever anatomy lies under it. Each crop then throws away the template's level, and only
#   its structure *within* a crop is ever seen.
#
# ## 2. Template space
#
# The released code keeps its templates on the 240×240×155 BraTS grid and exports them with an
# identity affine, so they overlay nothing. Here the template grid is a box centred on the
# head: the store records each study's foreground centre (`center_world`), template coordinates
# are world mm minus that centre, and the sampler gives each crop's head-centred origin. One
# batched gather cuts every study's anatomically matching crop; a crop spacing other than the
# template's is resampled trilinearly.

# %%
templates0 = Templates(spacing=store.spacing)
print(templates0, "\naffine:\n", templates0.affine)
means = explore.modality_means(store, modalities, templates0)  # mean, count, head fraction
ref = modalities[0]
fig = explore.crop_boxes_figure(means[ref][0], templates0, batch,
                                title=f"mean {ref} in template space, with this batch's crops")
fig.savefig(out / "figures" / "template_space.png", dpi=90, bbox_inches="tight")
display(fig)

# %% [markdown]
# ## 3. The template fill
#
# With the mean image standing in for a learned template (what a perfectly distilled template
# would approach), view A looks like this; the explorer changes modality, mask rate, block
# size and slice. Its masked cubes carry the modality's anatomy at the right place, but not
# this study's lesion or contrast variations: that is what the network must add. The
# correlation of the filled cubes with the target checks the geometry: a crop cut at the wrong
# place in template space would score near zero.

# %%
standin = Templates(spacing=store.spacing)
for m, (mean, *_) in means.items():
    standin.volumes.data[MODALITIES.index(m)] = torch.from_numpy(mean)
p = explore.preview(batch, 0, None, 0.8, block_size, templates=standin, seed=1)
fig = explore.preview_figure(p, "axial", crop // 2)
fig.savefig(out / "figures" / "views.png", dpi=90, bbox_inches="tight")
display(fig)
sel = p["mask"] > 0
standin_corr = float(np.corrcoef(p["view_a"][sel], p["target"][sel])[0, 1])
print(f"correlation of the stand-in fill with the target on the masked voxels: {standin_corr:.2f}")
display(explore.explorer(batch, standin, 0, 0.8, block_size))

# %% [markdown]
# ## 4. Training template distillation alone
#
# The `md_only` objective keeps view A only (template fill, MSE over the whole crop, weight
# $w_{md}$ = 10 as in the authors' code). The gradient reaches a template only through the
# masked voxels it filled; through the min-max scaling it is passed straight through (the exact
# gradient is amplified by 1/range, thousands of times while the templates are near zero).
# The template volumes are a parameter group of their own: their own learning rate
# (`optim.template_lr`), no weight decay, and outside the gradient-norm clip of the network
# (a template voxel's gradient is tiny next to the network's, and a shared clip would shrink
# it below what AdamW can use).
#
# Those levers are not enough on their own. Through the reconstruction loss a template voxel
# receives $J^\top(\hat X - X_m)$, the residual passed back through the network's Jacobian
# with respect to its input: a noisy signal whose sign changes from study to study, and a
# template voxel is filled only a few dozen times in a demo run, so the templates stay noise
# (without the lever below this chapter measured $r$ = 0.10-0.42 at `demo`).
# mmlib therefore adds, at `demo` only, a *direct template fit* (`objective.w_template`, not in
# the paper): the mean squared difference between each present modality's scaled template crop
# and that modality's image, over the crop, whose gradient reaches the templates and nothing
# else. Every template voxel under a crop then moves towards the image's value, for every
# modality of the study (about five times the voxels that view A fills from one), and the
# template tracks the (scaled) mean of its modality. The `paper` preset keeps the authors'
# objective (`w_template = 0`). We train it once per scaling, the same steps and seed.

# %%
epochs = epochs or plan(scale)["chapter_epochs"]
short = {"schedule.epochs": epochs} if epochs else {}
runs = {}
for rule in scalings:
    t0 = time.time()
    runs[rule] = pretrain(scale, {"objective": "md_only", "objective.template_scaling": rule, **short})
    print(rule, runs[rule], f"({time.time() - t0:.0f} s)")
run_dir = runs[scalings[0]]
run = load_run(run_dir)
print(f"{scalings[0]}: {run['results']['steps']} steps")
fig = loss_curves(run_dir / "metrics.csv", keys=["md", "grad_norm"], title="md_only")
fig.savefig(out / "figures" / "loss.png", dpi=90, bbox_inches="tight")
display(fig)
errors = explore.run_errors(run_dir)
last = load_samples(run["samples"][-1])
fig = sample_figure(last, keys=("target", "mask", "view_a", "recon_a"), size=2.2,
                    title=f"md_only after {last.step} steps")
fig.savefig(out / "figures" / "reconstruction.png", dpi=90, bbox_inches="tight")
display(fig)
print(json.dumps(errors, indent=1))

# %% [markdown]
# ## 5. The learned templates against the mean image
#
# Top: each learned template, min-max scaled as a whole; bottom: the mean image of that
# modality over the pre-training studies, on the same grid. $r$ (`template_corr`) is their
# correlation in the head: over the voxels where most of the studies covering them have head
# (`explore.HEAD_MAJORITY`). `template_corr_box` in `results.json` is the same over every voxel
# any study's box covers: the neck and background of wide fields of view (IXI's T1, T2 and PD
# hold the neck), where no crop teaches a template anything, weigh as much as the head there and
# pull $r$ down for the modalities those sources hold. The templates move only where crops have been,
# and only as fast as the network learns to use them. Under `global` scaling they take on the
# head's anatomy; under `crop` scaling each fill is re-stretched to [0, 1], so nothing ties one
# crop's level to its neighbour's, and the whole template stays a patchwork.

# %%
corr_by = {}
for rule in scalings:
    _, tpl = explore.run_model(runs[rule])
    fig = explore.template_figure(tpl, means)
    fig.suptitle(f"md_only, template_scaling = {rule}")
    name = "templates.png" if rule == scalings[0] else f"templates_{rule}.png"
    fig.savefig(out / "figures" / name, dpi=90, bbox_inches="tight")
    display(fig)
    corr_by[rule] = explore.template_corr(tpl, means)
    print(rule, "in the head:", {m: round(r, 3) for m, r in corr_by[rule].items()})
    if rule == scalings[0]:
        corr_box = explore.template_corr(tpl, means, where="box")
        print(rule, "over the boxes:", {m: round(r, 3) for m, r in corr_box.items()})
backbone, learned = explore.run_model(run_dir)
corr = corr_by[scalings[0]]

# %% [markdown]
# ### Where a template voxel lands
#
# A template voxel means the same anatomy in every study only if the studies are in one space.
# A store curated with `--register affine` (the default at demo and paper; chapter 02 measures
# the alignment) holds every study in the ICBM 2009a frame, so the learned T1 template can be
# set against the ICBM 2009a T1 that nilearn ships, resampled onto the template grid (bottom;
# $r$ over the atlas's field of view). In an unregistered store (smoke) the templates sit in a
# head-centred frame, which differs from study to study by the head's pose and by how much neck
# the field of view holds: there the atlas is a reference only.

# %%
from mmlib.data.register import template_on_grid

atlas = template_on_grid(learned.affine, learned.shape)
fig = explore.template_figure(learned, {"t1": (atlas, (atlas > 0).astype(np.float32))})
fig.suptitle(f"learned T1 template (top) and the ICBM 2009a T1 (bottom); store register = {store.register}")
fig.savefig(out / "figures" / "templates_icbm.png", dpi=90, bbox_inches="tight")
display(fig)
atlas_corr = explore.template_corr(learned, {"t1": (atlas, (atlas > 0).astype(np.float32))})["t1"]
print(f"r(learned T1 template, ICBM 2009a T1) = {atlas_corr:.3f} (store register: {store.register})")

# %% [markdown]
# ## 6. Export as NIfTI
#
# `Templates.to_nifti` writes the templates with their true head-centred affine. A template
# then overlays any store image moved into the head-centred frame (its affine with
# `center_world` subtracted); in napari, `mmlib view` opens checkpoints' templates the same way.

# %%
path = learned.to_nifti(out / "templates.nii.gz")
img = nib.load(path)
print(path.name, img.shape, "affine equal:", bool(np.allclose(img.affine, learned.affine)))

# %%
results = {
    "scale": scale, "modalities": modalities, "steps": run["results"]["steps"],
    "seconds": run["results"]["time_s"], "run_dir": str(run_dir),
    "md_first": run["results"]["first"]["md"], "md_final": run["results"]["final"]["md"],
    "masked_mse_before": errors["before"]["recon_a"], "masked_mse_after": errors["after"]["recon_a"],
    "fill_mse_before": errors["before"]["view_a"], "fill_mse_after": errors["after"]["view_a"],
    "template_scaling": scalings[0], "w_template": load_run(run_dir)["config"]["objective"]["w_template"],
    "template_corr": corr, "template_corr_mean": float(np.mean(list(corr.values()))),
    "template_corr_by_scaling": corr_by, "template_corr_box": corr_box,
    "store_register": store.register, "template_atlas_corr": atlas_corr,
    "run_dirs": {rule: str(r) for rule, r in runs.items()},
    "template_std": {m: float(learned.volumes[MODALITIES.index(m)].detach().std()) for m in modalities},
    "template_shape": list(learned.shape), "template_spacing": float(learned.spacing[0]),
    "nifti_affine_ok": bool(np.allclose(img.affine, learned.affine)),
    "mean_coverage": {m: int(means[m][1].max()) for m in modalities},
    "standin_fill_corr": standin_corr,
}
(out / "results.json").write_text(json.dumps(results, indent=1))
print(json.dumps(results, indent=1))

# %% [markdown]
# ## Summary
#
# - One zero-initialised template per modality on a head-centred grid with a true affine; each
#   study's crop is cut at its anatomical position in one batched gather.
# - Template distillation fills the masked cubes of view A from the template; the template
#   learns only through those cubes.
# - A short run lowers the reconstruction error and starts the templates; how close they come to
#   the modality's mean image (`template_corr`) depends on the scaling: scaling the whole
#   template (the authors' rule) lets it learn the anatomy, scaling each crop does not.
#
# ### What's next?
#
# Notebook 06 trains the full BrainMVP objective (both views, templates, contrastive term) and
# its baselines side by side.
