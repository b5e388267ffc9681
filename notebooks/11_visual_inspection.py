# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/11_visual_inspection"
run_dir = None  # a pre-training run folder; None: the newest run with samples in the scale's work folder
train_if_missing = True  # no run yet: pre-train the scale's default BrainMVP run (what chapter 6 trains)
use_napari = True  # False: matplotlib figures only, no napari window

# %% [markdown]
# # Visual inspection: studies, proxy-task views, templates and segmentations
#
# Numbers say how well a reconstruction or a segmentation scores; only looking says *why*.
# Researchers check reconstructions and segmentations by eye, in 3-D, in
# [napari](https://napari.org), and step through slices inside notebooks. This chapter shows the
# viewers that `mmlib.viz` provides for both, on the store of the embedded cohort and on a
# pre-training run, and makes the book's figures of this chapter with napari itself.
#
# ## Overview
# 1. A study, slice by slice, in the notebook
# 2. Segmentations: the BraTS labels, their colours and names
# 3. The proxy-task views of a pre-training run
# 4. The learned templates
# 5. The same in napari: studies, views and templates in 3-D, side by side
# 6. Browsing a run folder: the napari plugin and `mmlib view`
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | The crop store (chapter 2) | Necessary | RAS, isotropic arrays in [0, 1], one folder per study |
# | The proxy tasks and pre-training (chapters 3-6) | Necessary | view A, view B, templates, the samples a run saves |
# | BraTS tumour regions | Helpful | necrotic core, oedema, enhancing tumour |
# | napari | Helpful | layers, grid mode, plugins; none needed to read this chapter |
#
# - **Time to learn**: 15 minutes

# %%
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from mmlib.configs.scales import check_scale
from mmlib.modalities import MODALITIES
from mmlib.viz import napari as mv
from mmlib.viz import plots, widgets
from mmlib.evaluate.grid import pretrain_run_for
from mmlib.runs import sample_errors
from mmlib.viz.data import load_store_study, mni_study, pick_store_study
from mmlib.proxy.templates import load_templates
from mmlib.viz.labels import SCHEMES

check_scale(scale)
out = Path(out_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)
results: dict = {"scale": scale}
started = time.time()

# %% [markdown]
# ## 1. A study, slice by slice
#
# The curated store keeps every study as RAS arrays on an isotropic grid, intensities scaled to
# [0, 1] per modality (chapter 2), so the modalities of one study share one voxel grid and one
# affine. `mmlib.viz.data.load_store_study` reads one study as plain numpy arrays and affines;
# everything in `mmlib.viz` works from these, whatever their source: a store entry, a folder of
# NIfTI files (`load_study_folder`, BraTS, ISLES and IXI names), or the MNI template that ships
# with nilearn (`mni_study`), which this chapter falls back to when no store can be built.
#
# `widgets.study_viewer` is an ipywidgets viewer: a slider for the slice, a choice of plane, a
# choice of modality (or all side by side) and the opacity of the label overlay. The book is
# static HTML where widgets do not run, so `widgets.show` also draws the viewer's current view
# as a plain figure below it. Slices are drawn in the neurological convention: the patient's
# right on the right, anterior and superior up.

# %%
try:
    from mmlib.data import ensure_store
    from mmlib.data.store import Store

    store = Store(ensure_store(scale, progress=False))
    study_id = pick_store_study(store)
    study = load_store_study(store.root, study_id)
    source = f"store {store.root} ({len(store)} studies)"
except Exception as err:  # the store needs the cohort simulator; say why and use the template
    print(f"No store for scale {scale!r} ({type(err).__name__}: {err}); showing the MNI template instead.")
    study = mni_study(step=2 if scale == "smoke" else 1)
    source = "MNI152 2009a template (nilearn)"
first = next(iter(study.images.values()))
print(f"{study.name} from {source}: {', '.join(study.modalities)}; grid {first.data.shape} at "
      f"{first.spacing[0]:g} mm; labels {sorted(np.unique(study.label.data).tolist()) if study.label is not None else 'none'}")
results["study"] = {"name": study.name, "source": source, "modalities": study.modalities,
                    "shape": list(first.data.shape), "spacing": list(first.spacing),
                    "scheme": study.scheme}

# %%
viewer = widgets.study_viewer(study, volume=widgets.SIDE_BY_SIDE)
widgets.show(viewer)
plots.save(viewer.figure(), out / "figures" / "study_slices.png")
results["widget_slice_range"] = [int(viewer.slice.min), int(viewer.slice.max)]

# %% [markdown]
# ## 2. Segmentations: labels, colours, names
#
# A label map is drawn with the colours of its scheme. BraTS numbers its regions 1
# (necrotic / non-enhancing core), 2 (oedema) and 4 (enhancing tumour) up to 2021, and 3 for the
# enhancing tumour from 2023 on; the Decathlon numbers them differently again, ISLES has one
# lesion label, and the tissue maps of MRBrainS and the embedded cohort are CSF, grey and white
# matter. `mmlib.viz.labels` holds these schemes; the store's `source` selects one, and a map
# holding a 4 can only be BraTS <= 2021.

# %%
table = pd.DataFrame([{"scheme": name, "label": value, "name": label_name}
                      for name, sch in SCHEMES.items() for value, label_name in sch.names.items()])
display(table.pivot_table(index="scheme", columns="label", values="name", aggfunc="first").fillna(""))

# %%
if study.label is not None:
    vol = study.images[study.modalities[0]].data
    fig = plots.montage(vol, "axial", n=8, label=study.label.data, scheme=study.scheme, extent="label",
                        spacing=first.spacing, title=f"{study.name}: {study.modalities[0]}, the slices through its labels")
    plots.save(fig, out / "figures" / "segmentation_montage.png")
    display(fig)
    counts = {int(v): int(n) for v, n in zip(*np.unique(study.label.data, return_counts=True)) if v}
    results["label_voxels"] = counts
    print("voxels per label:", counts)

# %% [markdown]
# ## 3. The proxy-task views of a pre-training run
#
# At every checkpoint the pre-training engine (chapter 6) saves the views and reconstructions
# of a fixed few studies in `samples/step_XXXXXXX.npz`: the target crop, the block mask,
# view A (masked cubes filled from the template of the same modality), view B (filled from
# another modality of the study; from the template too during the warm-up), and the network's
# reconstruction of each. Looking at
# them over training shows what the numbers hide: whether the template has learned anatomy,
# whether reconstructions are sharp or merely the mean.

# %%
run = pretrain_run_for(scale, run_dir, train_if_missing)
if run is None:
    print("No pre-training run with samples: sections 3 and 4 have nothing to show.")
else:
    samples = run.samples()
    print(f"{run.name}: steps {run.steps()}; {len(samples)} samples at step {samples.step}")
    results["run"] = {"name": run.name, "steps": run.steps(), "n_samples": len(samples), "step": samples.step,
                      "shape": list(samples.arrays["target"].shape[1:])}

# %%
if run is not None:
    sv = widgets.sample_viewer(samples, 0)
    widgets.show(sv)
    fig = plots.sample_figure(samples, title=f"{run.name}, step {samples.step}")
    plots.save(fig, out / "figures" / "samples.png")
    display(fig)
    err = sample_errors(samples)
    results["sample_mse"] = err
    print("mean squared error over the masked voxels:", {k: round(v, 4) for k, v in err.items()})

# %% [markdown]
# ## 4. The learned templates
#
# The templates start as zeros and learn only through the reconstruction loss of view A; they
# are min-max scaled where they are used, and so here. Early in training they are flat or noisy;
# a template that has learned the modality's average anatomy looks like a blurred head.

# %%
templates = None
if run is not None and run.checkpoint_steps():
    try:
        templates = load_templates(run.checkpoint())
    except KeyError as err:  # an objective without templates (e.g. masked image modelling)
        print(err)
if templates is not None:
    tv = widgets.template_viewer(templates)
    widgets.show(tv)
    flat = [m for m, v in zip(MODALITIES, templates.volumes) if np.ptp(v) == 0]
    results["templates"] = {"shape": list(templates.volumes.shape), "untrained": flat}
    print(f"templates {templates.volumes.shape}; never trained (still constant): {', '.join(flat) or 'none'}")

# %% [markdown]
# ## 5. The same in napari
#
# `mmlib.viz.napari` opens the same objects in napari: every modality as an image layer with
# its physical scale (mm) and affine, label maps as labels layers with the scheme's colours and
# the names shown on hover, samples and templates as one layer per array, and a grid mode that
# puts modalities, views or runs side by side with linked cameras. From JupyterLab run
# `%gui qt` first; the viewer then opens next to the notebook:
#
# ```python
# from mmlib.viz import napari as mv
# viewer = mv.new_viewer()
# mv.open_study(".mmlib/demo/store::" + study_id, viewer, grid=True)
# mv.open_sample(run.samples(), viewer, index=0)
# mv.open_templates(run.checkpoint(), viewer)
# mv.compare_runs([run_a, run_b], viewer, study=study_id)
# ```
#
# `mv.set_3d(viewer)` switches to 3-D rendering (images as attenuated maximum-intensity
# projections, labels as surfaces), where a lesion's extent across slices shows at a glance.
#
# The figures below are screenshots of a napari viewer, made while this notebook ran. napari
# draws with OpenGL, so it needs a display: on a headless machine mmlib starts a private Xvfb
# server (and says so when it cannot, drawing matplotlib figures instead).

# %%
shots: dict = {}
ok, why = mv.display_status() if use_napari else (False, "use_napari is False")
if ok:
    nv = mv.new_viewer(size=(1400, 900))
    mv.open_study(study, nv, grid=True)
    shots["study"] = mv.screenshot(nv, out / "figures" / "napari_study.png")
    mv.remove_layers(nv, list(nv.layers))
    mv.set_grid(nv, False)
    mv.open_study(study, nv, modalities=study.modalities[:1])
    mv.set_3d(nv)
    shots["study_3d"] = mv.screenshot(nv, out / "figures" / "napari_study_3d.png", reset_view=False)
    mv.remove_layers(nv, list(nv.layers))
    nv.dims.ndisplay = 2
    if run is not None:
        mv.remove_layers(nv, list(nv.layers))
        mv.open_sample(samples, nv, index=0)
        shots["samples"] = mv.screenshot(nv, out / "figures" / "napari_samples.png")
    if templates is not None:
        mv.remove_layers(nv, list(nv.layers))
        mv.open_templates(templates, nv)
        shots["templates"] = mv.screenshot(nv, out / "figures" / "napari_templates.png")
    titles = {"study": f"{study.name}: every modality with its labels (grid mode)",
              "study_3d": f"{study.name}: {study.modalities[0]} in 3-D (attenuated MIP) with the labels as surfaces",
              "samples": "a proxy-task sample: target, mask, view A, view B, both reconstructions",
              "templates": "the learned templates, one per modality"}
    for name, image in shots.items():
        display(plots.image_figure(image, f"napari: {titles[name]}"))
else:
    print(f"No napari figures here ({why}); the matplotlib views above show the same slices.")
results["napari"] = {"used": ok, "reason": why,
                     "screenshots": {k: {"shape": list(v.shape), "pixel_std": mv.pixel_std(v)} for k, v in shots.items()}}

# %% [markdown]
# ## 6. Browsing a run folder: the plugin and `mmlib view`
#
# mmlib installs a napari plugin (an npe2 manifest, `mmlib/viz/napari.yaml`). It teaches napari
# to open study folders of NIfTI files, samples files and run folders (`napari RUN_DIR`), adds
# the MNI template with tissue labels to *File > Open Sample*, and adds a **Run browser** dock
# widget (*Plugins > mmlib*): pick a run folder, then a checkpoint step, a study and a target
# modality, and it shows that step's views, or its templates. From a shell,
#
# ```
# mmlib view .mmlib/demo/store::BraTS2021_00000 --grid     # a store entry
# mmlib view path/to/BraTS2021_00000/                      # a folder of NIfTI files
# mmlib view .mmlib/demo/runs/pretrain/<run>/ --step 200   # a run folder, in the browser
# mmlib view RUN --screenshot run.png                      # headless: save a picture and exit
# ```

# %%
if ok and run is not None:
    from mmlib.viz._widget import RunBrowser

    mv.remove_layers(nv, list(nv.layers))
    browser = RunBrowser(nv, run_dir=run.path)
    nv.window.add_dock_widget(browser, name="mmlib run browser", area="right")
    browser.select(step=run.sample_steps()[0])
    window = mv.screenshot(nv, out / "figures" / "napari_run_browser.png", canvas_only=False)
    display(plots.image_figure(window, f"the run browser at step {run.sample_steps()[0]}: {browser.info}", width=10))
    results["napari"]["browser"] = {"info": browser.info, "layers": len(nv.layers), "pixel_std": mv.pixel_std(window)}
if ok:
    nv.close()

# %% [markdown]
# ## Summary
#
# - `mmlib.viz.data` reads what there is to look at as numpy arrays and affines: store entries,
#   NIfTI study folders, samples files, run folders and checkpoints' templates.
# - `mmlib.viz.widgets` steps through slices in a notebook and leaves a static figure for the
#   book; `mmlib.viz.plots` makes the montages, overlays, sample grids and loss curves the other
#   chapters use.
# - `mmlib.viz.napari`, the napari plugin and `mmlib view` show the same in 3-D with physical
#   scales, BraTS colours and names, and grid mode; under Xvfb napari makes book figures.
#
# ## What's next
#
# Chapter 12 gathers the results of the whole book. To look at your own runs, point
# `mmlib view` at a run folder, or open napari and the *Run browser*.

# %%
results["seconds"] = round(time.time() - started, 1)
(out / "results.json").write_text(json.dumps(results, indent=2, default=float))
print(json.dumps({k: results[k] for k in ("study", "napari") if k in results}, indent=1, default=float)[:1500])
