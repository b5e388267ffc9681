# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/01_embedded_cohort"
workers = 2

# %% [markdown]
# # The embedded cohort: simulated multi-modal brain MRI on real anatomy
#
# No real multi-parametric MRI can be downloaded here, and before fetching terabytes of BraTS
# one wants to see the whole method work. mmlib therefore ships a simulator that turns a real
# anatomy, the ICBM 2009a template {cite}`fonov2011icbm`, into a multi-source, multi-modal
# cohort with lesions and labels, written on disk exactly as the public datasets are written,
# so that curation, pre-training and every downstream task run on it unchanged.
#
# ## Overview
# 1. Anatomy: tissue maps from the ICBM 2009a template
# 2. From tissue to signal: relaxation, diffusion and the sequences
# 3. Making the cohort
# 4. Every modality of a subject
# 5. Lesion and tissue overlays
# 6. Per-tissue intensity distributions
# 7. The on-disk layout of each source
# 8. How this relates to real acquisitions, and its limits
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | MRI contrasts (T1, T2, FLAIR, DWI) | Helpful | explained in section 2 |
# | NIfTI affines and orientation codes | Helpful | `nibabel.aff2axcodes` |
# | The public brain-MRI datasets (BraTS, IXI, ISLES) | Helpful | their layouts are shown in section 7 |
#
# - **Time to learn**: 20 minutes

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from IPython.display import display

from mmlib.configs.scales import check_scale
from mmlib.data.phantom import cohort_spec, ensure_cohort, simulate_study
from mmlib.data.phantom import report as R
from mmlib.data.phantom import writers as W
from mmlib.data.phantom.anatomy import load_anatomy
from mmlib.data.phantom.cohort import study_id
from mmlib.viz.cohort import overlay_axial

check_scale(scale)
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
spec = cohort_spec(scale)
sources = {s.name: s for s in spec.sources}
results: dict = {"scale": scale, "factor": spec.factor}

# %% [markdown]
# ## 1. Anatomy: tissue maps from the ICBM 2009a template
#
# The template and its grey- and white-matter probability maps ship inside the nilearn wheel
# (1 mm, 197×233×189, MNI space; nothing is downloaded). CSF is what lies inside the brain mask
# but is neither; skull and scalp are shells grown outward from the brain, so that sources that
# are not skull-stripped show them. At the `smoke` and `demo` presets the maps are block-averaged
# to a coarser template (4 mm and 2 mm), and every source's grid is shrunk by the same factor.

# %%
anatomy = load_anatomy(spec.factor)
z = anatomy.shape[2] // 2 + 4 // spec.factor
fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
for ax, name in zip(axes, ("csf", "gm", "wm", "skull", "scalp")):
    ax.imshow(R.axial(anatomy.channel(name), z), cmap="magma", vmin=0, vmax=1)
    ax.set_title(f"{name} fraction")
    ax.axis("off")
fig.suptitle(f"Template tissue fractions at {spec.factor} mm (axial slice {z})")
fig.savefig(out / "anatomy.png", dpi=100, bbox_inches="tight")
plt.show()
results["brain_ml"] = round(anatomy.brain_volume_ml(), 1)
print(f"brain (GM+WM) {anatomy.brain_volume_ml():.0f} ml, "
      f"ventricles {anatomy.ventricles.sum() * spec.factor**3 / 1000:.0f} ml")

# %% [markdown]
# ## 2. From tissue to signal
#
# Each voxel is a mixture of compartments (CSF, GM, WM, skull, scalp fat, vessels, choroid
# plexus, and the lesion compartments). Every compartment has literature T1, T2, proton density,
# ADC and gadolinium uptake (sources in `mmlib.data.phantom.tissues`), and each modality is
# the fraction-weighted sum of the compartments' signals:
#
# - spin echo for T1, T2 and PD: $S = PD\,(1 - e^{-TR/T_1})\,e^{-TE/T_2}$;
# - FLAIR, inversion recovery with $TI$ chosen to null CSF:
#   $S = PD\,|1 - 2e^{-TI/T_1} + e^{-TR/T_1}|\,e^{-TE/T_2}$;
# - T1c: the T1 sequence with $1/T_1' = 1/T_1 + r_1 C$ in enhancing tumour, vessels and
#   choroid plexus;
# - DWI: $S = S_0\,e^{-b\,ADC}$ at $b = 1000$ s/mm², and the ADC map estimated from the noisy
#   $S_0$ and $S_b$;
# - MRA (time of flight): saturated static tissue, fully relaxed inflowing blood in a grown
#   vessel tree.
#
# Then a smooth bias field, Rician noise and an arbitrary per-scanner intensity scale. The
# noise-free signal of each compartment relative to white matter (ADC column: the ADC itself,
# 1e-3 mm²/s):

# %%
table = R.signal_frame()
display(table)
fig, ax = plt.subplots(figsize=(8, 4.5))
shown = table.drop(columns="adc")
im = ax.imshow(np.log2(shown.to_numpy().clip(1e-3)), cmap="coolwarm", vmin=-3, vmax=3)
ax.set_xticks(range(shown.shape[1]), shown.columns)
ax.set_yticks(range(shown.shape[0]), shown.index)
fig.colorbar(im, label="log2 signal relative to WM")
ax.set_title("Contrast of each compartment per modality")
fig.savefig(out / "signal_table.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## 3. Making the cohort
#
# `ensure_cohort(scale)` writes the default cohort of this scale into the shared work folder
# once (the same call as `mmlib cohort --preset <scale>`), and reuses it afterwards. It mirrors
# the paper's pre-training mix (BraTS 2021, BraTS 2023 MEN and SSA, UCSF-PDGM with DWI/ADC, IXI
# with T1/T2/PD/MRA) and adds the downstream sets.

# %%
start = time.perf_counter()
root = ensure_cohort(scale, workers=workers)
results["seconds"] = round(time.perf_counter() - start, 1)
print(f"cohort at {root} ({results['seconds']} s; a finished cohort is reused)")
sources_table = R.source_table(root)
display(sources_table)
meta = R.read_cohort_json(root)
results["n_sources"] = len(meta["sources"])
results["n_studies"] = {e["name"]: e["n_subjects"] for e in meta["sources"]}
results["n_pretrain"] = sum(e["n_subjects"] for e in meta["sources"] if e["role"] == "pretrain")
results["orientation"] = sources_table["orientation"].to_dict()

# %% [markdown]
# ## 4. Every modality of a subject
#
# A UCSF-PDGM-like study has six modalities on one grid. `simulate_study` draws it again in
# memory from the same seed, with its compartment fractions, and it is exactly what is on disk.

# %%
ucsf = sources["ucsf_pdgm"]
attrs, renders = simulate_study(ucsf, 1, meta["seed"], spec.factor)
(grid, affine, rendered), = renders
sid = study_id(ucsf, 1)
paths, label_path = W.study_paths(ucsf.layout, ucsf.writer, sid, ucsf.modalities, attrs)
on_disk = np.asarray(nib.load(root / ucsf.folder / paths["t1"]).dataobj)
results["memory_equals_disk"] = bool(np.array_equal(on_disk,
                                                    W.to_dtype(rendered.images["t1"], "float32")))
print(f"{sid}: {attrs}; in-memory T1 equals the file: {results['memory_equals_disk']}")
codes = rendered.lesion_label()
zs = R.lesion_slice(R.to_ras(codes, affine))
fig, axes = plt.subplots(1, len(ucsf.modalities), figsize=(3 * len(ucsf.modalities), 3.4))
for ax, m in zip(axes, ucsf.modalities):
    vol = R.to_ras(rendered.images[m], affine)
    ax.imshow(R.axial(vol, zs), cmap="gray", vmin=0, vmax=np.percentile(vol[vol > 0], 99.5))
    ax.set_title(m)
    ax.axis("off")
fig.suptitle(f"{sid} ({attrs['grade']} glioma, {attrs.get('target_lesion_ml')} ml)")
fig.savefig(out / "modalities_ucsf.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# IXI writes each modality on its own grid, orientation and voxel size (T1 sagittal, T2 and PD
# axial from one dual echo, MRA a thin high-resolution slab), and is not skull-stripped. Shown
# here in RAS; the MRA as a maximum-intensity projection, as angiograms are read.

# %%
ixi = sources["ixi"]
paths, _ = R.study_files(root, ixi, 1)
fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
for ax, m in zip(axes, ixi.modalities):
    img = nib.load(paths[m])
    vol = R.to_ras(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    view = np.rot90(vol.max(axis=2)) if m == "mra" else R.axial(vol)
    sp = R.ras_spacing(img.affine)
    ax.imshow(view, cmap="gray", vmax=np.percentile(view, 99.7), aspect=sp[1] / sp[0])
    ax.set_title(f"{m}: {img.shape} {''.join(nib.aff2axcodes(img.affine))}")
    ax.axis("off")
fig.savefig(out / "modalities_ixi.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## 5. Lesion and tissue overlays
#
# Labels come from the same compartment fractions as the images: a glioma is a necrotic core,
# an enhancing rim and oedema (BraTS 2023 labels 1/2/3 here; ≤ 2021 writes 1/2/4), a stroke is
# one label on the DWI grid, the tissue set labels CSF/GM/WM (1/2/3).

# %%
def load(source, index, modality):
    return R.load_source_study(root, sources[source], index, modality)


fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
overlay_axial(axes[0], *load("brats2023_ped", 1, "flair"), "PED-like: FLAIR + seg")
overlay_axial(axes[1], *load("brats2023_ped", 1, "t1c"), "PED-like: T1c + seg")
overlay_axial(axes[2], *load("isles2022", 1, "dwi"), "ISLES-like: DWI + mask")
img, lab = load("mrbrains13", 1, "t1")
overlay_axial(axes[3], img, lab, "MRBrainS-like: T1 + tissue", z=img.shape[2] // 2)
fig.savefig(out / "overlays.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# The classification contrasts: high-grade gliomas enhance and have a necrotic core, low-grade
# ones are diffuse and do not enhance (BraTS 2018 `HGG/` and `LGG/` folders); atrophy (`MCI`)
# enlarges the ventricles and thins the cortex relative to `NC`.

# %%
table18 = R.participants(root, sources["brats2018"].folder)
adni = R.participants(root, sources["adni"].folder)
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
for ax, grade in zip(axes[:2], ("HGG", "LGG")):
    pid = table18.loc[table18["grade"] == grade, "participant_id"].iloc[0]
    img, lab = load("brats2018", int(pid.split("_")[2]), "t1c")
    overlay_axial(ax, img, None, f"{grade}: T1c",
            z=R.lesion_slice(R.to_ras(lab, img.affine)))
for ax, group in zip(axes[2:], ("NC", "MCI")):
    pid = adni.loc[adni["group"] == group, "participant_id"].iloc[0]
    img, _ = load("adni", int(pid[-3:]), "t1")
    vol, sp = R.to_ras(img.get_fdata(), img.affine), R.ras_spacing(img.affine)
    ax.imshow(R.axial(vol, vol.shape[2] // 2 + 8 // spec.factor), cmap="gray",
              aspect=sp[1] / sp[0])
    ax.set_title(f"{group}: T1w")
    ax.axis("off")
fig.savefig(out / "classes.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## 6. Per-tissue intensity distributions
#
# Intensities of each modality in (nearly) pure voxels of each compartment, for the
# UCSF-PDGM-like subject above and an ISLES-like stroke. The orderings that real scans show hold
# at every preset: T1 WM > GM > CSF; T2 CSF > GM > WM; FLAIR suppresses CSF and shows oedema;
# T1c brightens the enhancing rim; acute stroke is bright on DWI and dark on ADC.

# %%
isles_attrs, isles_renders = simulate_study(sources["isles2022"], 1, meta["seed"], spec.factor)
stroke = next(r for g, a, r in isles_renders if "dwi" in r.images)
panels = [(rendered, m) for m in ucsf.modalities] + [(stroke, "dwi"), (stroke, "adc")]
fig, axes = plt.subplots(2, 4, figsize=(16, 7))
for ax, (r, m) in zip(axes.ravel(), panels):
    samples = R.tissue_samples(r, m)
    names = [n for n in ("csf", "gm", "wm", "oedema", "enhancing", "necrosis", "stroke")
             if n in samples]
    ax.boxplot([samples[n] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=45)
    ax.set_title(m + (" (stroke subject)" if r is stroke else ""))
fig.tight_layout()
fig.savefig(out / "tissue_intensities.png", dpi=100, bbox_inches="tight")
plt.show()
contrasts = {**R.contrast_summary(rendered), **R.contrast_summary(stroke)}
results["contrasts"] = contrasts
print(json.dumps(contrasts, indent=1))

# %% [markdown]
# Lesion volumes as written (from each source's `participants.tsv`, measured on the label
# files) stay inside the configured ranges:

# %%
volumes = {}
for src in spec.sources:
    if src.lesion is None:
        continue
    ml = R.participants(root, src.folder)["lesion_ml"]
    volumes[src.name] = {"min": float(ml.min()), "median": float(ml.median()),
                         "max": float(ml.max()), "range": list(src.lesion_ml)}
display(pd.DataFrame(volumes).T)
results["lesion_ml"] = volumes

# %% [markdown]
# ## 7. The on-disk layout of each source
#
# Each source is written as the real dataset is: folder structure, file names, modality
# aliases, grid, orientation and dtype; study-level attributes (grade, group, stroke age) go
# into a BIDS-style `participants.tsv`, and `cohort.json` at the root lists the sources for the
# curation code (`mmlib.data.layouts`).

# %%
for e in meta["sources"]:
    print(R.layout_tree(root, e["path"], max_items=2))
    print()
print(json.dumps(meta["sources"][0], indent=1))

# %% [markdown]
# ## 8. How this relates to real acquisitions, and its limits
#
# What is faithful: real anatomy (ICBM 2009a) with per-subject smooth deformation, pose and
# head size; literature relaxation times, proton densities and diffusivities combined with the
# textbook signal equations, so that the contrast *orderings* and the relations between
# modalities of one study (what cross-modal reconstruction learns) are those of real MRI; bias
# fields, Rician noise and arbitrary scanner scales, which the curation's percentile scaling has
# to undo; and the exact on-disk conventions of each dataset, including different grids per
# modality (IXI, ISLES) and oblique acquisitions.
#
# What is not: one anatomy underlies every subject (real cohorts vary far more); tissue within
# a class is homogeneous apart from noise (no texture, no sulcal detail beyond the template's);
# sequences are idealised (no motion, ghosting, susceptibility or EPI distortion, no partial
# Fourier, no gradient non-linearity, no real fat-water shifts); skull and scalp are shells, not
# anatomy; vessels are a grown tree, not the real circle of Willis; lesions are perturbed
# ellipsoids placed by simple rules; and at `smoke`/`demo` scale the grids are coarser than the
# real ones (`paper` writes the exact grids). Results on this cohort show that the code and the
# method work end to end; they are not a substitute for the paper's numbers on real data.

# %%
(out / "results.json").write_text(json.dumps(results, indent=2, default=str))
print(json.dumps({k: v for k, v in results.items() if k != "lesion_ml"}, indent=1))

# %% [markdown]
# ## Summary
# The embedded cohort turns the ICBM 2009a anatomy into eleven sources with up to eight
# modalities, lesions with BraTS/ISLES/tissue labels and classification contrasts, written as the
# real datasets are written, deterministically for a seed and in parallel. Its contrasts follow
# the signal equations, and its limits are stated above.
#
# ### What's next?
# The next chapter reads these folders with the same layout code that reads real datasets,
# curates them into a crop store and samples multi-modal crops for pre-training.
#
# ## Resources and references
# - ICBM 2009a {cite}`fonov2011icbm`; BraTS {cite}`menze2015brats`.
# - Relaxation times: Wansapura et al., JMRI 1999; Rooney et al., MRM 2007; diffusivities:
#   Helenius et al., Acta Radiol 2002; gadolinium relaxivity: Rohrer et al., Invest Radiol 2005;
#   stroke ADC and the DWI-FLAIR mismatch: Schlaug et al., Neurology 1997; Thomalla et al.,
#   Lancet Neurol 2011; the BrainWeb phantom: Kwan, Evans & Pike, IEEE TMI 1999.
