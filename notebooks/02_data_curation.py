# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
scale = "demo"
out_dir = "runs/book/02_data_curation"
cohort_root = None  # a folder with cohort.json, or a dataset folder; None: the embedded cohort
crop_size = None  # sampler crop edge in voxels; None: the scale's default (smoke 24, demo 48, paper 96)
register_per_source = None  # studies per source measured for registration (None: 1, 2, 4)

# %% [markdown]
# # Data curation: from dataset folders to a crop store
#
# Pre-training reads thousands of multi-modal studies, each stored the way its dataset chose:
# BraTS names its files `_t1ce`, BraTS 2023 says `t1c` and `t2f`, IXI keeps one folder per
# modality on its own grid, ISLES writes BIDS with the FLAIR on another grid than the diffusion,
# the Decathlon packs four channels in one 4-D file. The authors' loader decodes, reorients,
# resamples, crops and rescales every study on every training step. mmlib does that work once:
# it *curates* every study into a store of ready arrays (RAS, isotropic, cropped to the head,
# intensities in [0, 1]) and a manifest, and the sampler then cuts random crops from
# memory-mapped arrays. This chapter runs the same calls a user runs on real data, on the
# embedded cohort.
#
# ## Overview
# 1. Discover: layouts, modality names, per-source counts
# 2. Curate: one command, what it does to a study
#    - Registration to a template space: none, rigid, affine, measured against the truth
# 3. Quality control: table, histograms, grids, suspicious studies
# 4. A mislabelled series and a broken file, caught
# 5. Sampling crops for pre-training and for a downstream task
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | NIfTI images and affines | Necessary | voxel indices to world millimetres (RAS) |
# | MRI modalities (T1, T1c, T2, FLAIR, PD, MRA, DWI, ADC) | Necessary | chapter 1, the embedded cohort |
# | PyTorch `Dataset` / `DataLoader` | Helpful | workers, samplers, collate |
# | BIDS | Helpful | the ISLES layout and `participants.tsv` |
#
# - **Time to learn**: 20 minutes

# %%
import json
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from torch.utils.data import DataLoader

from mmlib.configs.scales import check_scale
from mmlib.data import STORE_REGISTER, STORE_SPACING, ensure_store
from mmlib.data import qc
from mmlib.data.alignment import alignment_errors, plot_alignment
from mmlib.data.curate import curate
from mmlib.data.layouts import detect_layout, discover, find_studies, read_cohort, source_counts
from mmlib.data.phantom import cohort_spec, ensure_cohort
from mmlib.data.labelled import LabelledDataset
from mmlib.data.sampler import PretrainDataset
from mmlib.data.store import Store

check_scale(scale)
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
crop = crop_size or {"smoke": 24, "demo": 48, "paper": 96}[scale]
pd.set_option("display.width", 160)

# %% [markdown]
# ## 1. Discover
#
# A *layout* knows where a dataset keeps its studies and what it calls its modalities. The
# cohort root holds a `cohort.json` that lists its sources with their layout, role
# (pre-training or downstream) and task; a folder without one is recognised by its names
# (`BraTS2021_00001/`, `IXI-T1/`, `sub-strokecase0001/`, `dataset.json` + `imagesTr/`, ...).
# Every alias is mapped to the eight canonical modalities (`t1ce`, `t1gd` → `t1c`,
# `t2f` → `flair`, `T1w` → `t1`, ...).

# %%
cohort = Path(cohort_root) if cohort_root else ensure_cohort(scale)
t0 = time.perf_counter()
studies = discover(cohort)
discover_s = time.perf_counter() - t0
counts = source_counts(studies)
print(f"{len(studies)} studies, {int(counts['scans'].sum())} scans in {len(counts)} sources "
      f"({discover_s:.2f} s)")
display(counts)

# %% [markdown]
# Real multi-site tables (ADHD-200, ABIDE I, ADNI) hold entries that cannot be used: a diagnosis
# still `pending`, images without a table row, a table row without images, an ADNI subject
# outside MCI vs NC. Their readers report each with a one-line reason and curation leaves them
# out. The default embedded cohort writes none (`mmlib curate` reads it without problems); a
# source made with `messy=True` writes two per source, listed in `cohort.json` as
# `expected_problems` (tests/test_cls_tasks.py). Any problem printed here is unexpected.

# %%
expected = ({sid for src in read_cohort(cohort) for sid in src.get("expected_problems", {})}
            if (cohort / "cohort.json").is_file() else set())
for st in studies:
    if st.problems:
        tag = "expected" if st.study in expected else "UNEXPECTED"
        print(f"{tag:10s} {st.source:8s} {st.study}: {st.problems[0].split(': ', 1)[-1]}")

# %% [markdown]
# Each source folder is also recognised on its own, without `cohort.json`, as it would be when a
# user points `mmlib curate` at a downloaded dataset:

# %%
if (cohort / "cohort.json").is_file():
    sources = read_cohort(cohort)
    detected = {s["name"]: (s["layout"], detect_layout(s["path"]) if s["layout"] != "pattern"
                            else "pattern (needs its pattern)") for s in sources}
    display(pd.DataFrame(detected, index=["cohort.json", "detected"]).T)

# %% [markdown]
# A study record: the canonical modalities, their files, the label, and the attributes read
# from the source's `participants.tsv` (grade, age, group, ...).

# %%
example = next(s for s in studies if len(s.modalities) >= 4 and s.label)
print(example.study, "from", example.source, f"({example.layout})")
for mod, ref in example.modalities.items():  # discovery resolves links: a cohort reached through one
    print(f"  {mod:>5}: {Path(ref.path).relative_to(Path(cohort).resolve())}")
print(f"  label: {Path(example.label).relative_to(Path(cohort).resolve())}")
print(f"  attrs: {example.attrs}")

# %% [markdown]
# ## 2. Curate
#
# `ensure_store(scale)` runs what a user types on real data,
#
# ```
# mmlib curate --out STORE --spacing MM [--workers N] [--shard I/N] COHORT_OR_DATASET...
# ```
#
# at the scale's spacing (smoke 4 mm, demo 2 mm, paper 1 mm) and registration (demo and paper:
# `--register affine`, see below), once: a finished store is reused.
# Per study it checks the files (readable, 3-D, finite, not constant, labels with the values the
# layout allows), checks that all modalities overlap in physical space, reorients to RAS and
# resamples every modality in one step onto an axis-aligned grid covering the widest field of
# view, crops to the union of the head foregrounds, and scales each modality so that its 5th-95th
# percentiles inside the head map to [0, 1]. Each study is written to a temporary folder and
# renamed into place, so a crash leaves nothing half-written, a rerun skips finished studies,
# and `--shard I/N` lets N cluster jobs fill one store.

# %%
t0 = time.perf_counter()
store_root = ensure_store(scale) if not cohort_root else None
if store_root is None:
    store_root = out / "store"
    curate(studies, store_root, spacing=STORE_SPACING[scale], workers=2,
           register=STORE_REGISTER[scale])
store = Store(store_root)
curate_s = time.perf_counter() - t0
print(store, f"ready in {curate_s:.1f} s")
report_path = store_root / "reports" / "curate.json"
report = json.loads(report_path.read_text()) if report_path.is_file() else {"failed": {}}
print(f"failed in the last run: {len(report['failed'])}")
display(store.manifest[["source", "modalities", "shape", "center_world", "label", "split",
                        "task"]].head(8))

# %% [markdown]
# What curation did to one study: the source grids (orientation, voxel size, shape) and the one
# grid they all share in the store.

# %%
isles_id = next((s for s in store.studies() if store.row(s)["layout"] == "isles2022"), None)
ixi_id = next((s for s in store.studies() if store.row(s)["layout"] == "ixi"), None)
for sid in (isles_id, ixi_id):
    if sid:
        row = store.row(sid)
        print(f"{sid}: store grid {row['shape']} at {row['spacing'][0]:g} mm, RAS; "
              f"notes: {store.qc(sid)['notes']}")
        display(qc.grid_table(store, sid))

# %%
for sid in (isles_id, ixi_id, store.studies(source=example.source)[0]):
    if sid:
        fig = qc.plot_study(store, sid)
        display(fig)
        plt.close("all")
fig.savefig(out / "study.png", dpi=90)

# %% [markdown]
# ### Registration to a template space
#
# The store above places each study by its head's centre only (a translation): a template voxel
# is then "so many mm from the head's centre", which is different anatomy in a source that keeps
# the neck and skull (IXI, ADNI) than in a skull-stripped one (BraTS), and the head's tilt is
# kept. The authors' data are registered to the SRI24 atlas, so that a template voxel is the same
# anatomy in every study. `mmlib curate --register rigid|affine` does the same against one
# template space, the ICBM 2009a template that nilearn ships (no download): it first
# co-registers a study's modalities that lie on different grids (rigid), then registers the
# study to the template (SimpleITK, mutual information, masked to the template's brain) and
# stores it on an axis-aligned MNI grid at the store's spacing. The manifest keeps the transform
# (`transform`: native world mm → MNI mm) and `mmlib predict` inverts it to write predictions on
# the native grid.
#
# The embedded cohort knows where every voxel truly belongs: the simulator draws each subject in
# ICBM space and moves it by a known pose and a smooth warp. The alignment error is the distance
# (mm) between where curation puts a brain point and where the simulator says it is, over points
# spread through the brain. Caveat: the phantom's anatomy *is* the ICBM template, so these
# errors are a best case for registration (real anatomy differs from any template).

# %%
truth_known = (cohort / "cohort.json").is_file() and not cohort_root
alignment = None
if truth_known:
    n_reg = register_per_source or {"smoke": 1, "demo": 2, "paper": 4}[scale]
    alignment = alignment_errors(cohort, cohort_spec(scale), spacings=(STORE_SPACING[scale],),
                                 sources=("ixi", "adni", "brats2021", "isles2022"),
                                 per_source=n_reg, workers=2)
    display(alignment.round(2))
    table_reg = alignment.groupby(["source", "skull_stripped", "mode"])[
        ["error_mm", "error_p95_mm", "seconds"]].mean().round(2)
    display(table_reg)
else:
    print("a dataset folder: no simulator truth to measure registration against")

# %%
if truth_known:
    ixi_study = next(s for s in studies if s.source == "ixi")
    fig = plot_alignment(ixi_study, STORE_SPACING[scale])
    fig.savefig(out / "registration.png", dpi=90)
    display(fig)

# %% [markdown]
# Rows: the same IXI study (neck and skull kept) placed by its head centre (`none`), by a rigid
# and by an affine registration; the red line is the template's brain. See the table above for
# the error per source and mode. The book's stores follow the measurement: `affine` at demo and
# paper scale (`mmlib.data.ensure.STORE_REGISTER`), since it places the brain within about 2 mm
# where head-centring leaves 6-11 mm in the sources with neck and skull; the smoke store (tests)
# stays unregistered to be made in seconds.

# %% [markdown]
# ## 3. Quality control
#
# The QC report (written by every curation run to `STORE/reports/qc/`) reads the records that
# curation kept per scan (source grid, orientation, percentiles, a histogram of the scaled head
# intensities, the correlation between the study's modalities), not the arrays, so it takes
# seconds for the paper's 16k scans.

# %%
table = qc.qc_table(store)
display(table.groupby(["source", "modality"]).agg(
    scans=("study", "count"), orientation=("source_orientation", lambda s: ",".join(sorted(set(s)))),
    voxel=("source_spacing", "first"), p95=("p95", "median")).head(40))

# %%
fig = qc.plot_histograms(store)
fig.savefig(out / "histograms.png", dpi=90)
display(fig)

# %% [markdown]
# The sources disagree on orientation and voxel size, which is exactly why the store fixes
# both: RAS and isotropic.

# %%
fig = qc.plot_spacing_orientation(store)
fig.savefig(out / "spacing.png", dpi=90)
display(fig)

# %%
sus = qc.suspicious(store)
print(f"suspicious studies in the cohort: {len(sus)}")
display(sus)

# %% [markdown]
# ## 4. A mislabelled series and a broken file
#
# Real collections have both. To see the checks at work, copy one source, file one study's T1 as
# T2 and its T2 as T1 (a swapped export), and cut another study's FLAIR in half (a truncated
# download). The mislabel detector asks, per study, whether relabelling one series (or swapping
# two) makes the study's cross-modal correlations typical of its source; the truncated file
# fails that study with a one-line reason, and every other study is curated.

# %%
brats_like = counts[counts["layout"].isin(["brats2021", "brats2023"])]
src_name = brats_like["studies"].idxmax()
src_path = Path(next(s["path"] for s in read_cohort(cohort) if s["name"] == src_name))
check_root = out / "check" / src_path.name
shutil.rmtree(out / "check", ignore_errors=True)
for st in find_studies(src_path)[:6]:  # six studies are enough to know what is typical
    folder = Path(st.modalities["t1"].path).parent
    shutil.copytree(folder, check_root / folder.name)
found = find_studies(check_root)
swapped, truncated = found[1], found[2]
t1, t2 = Path(swapped.modalities["t1"].path), Path(swapped.modalities["t2"].path)
t1.rename(t1.with_suffix(".tmp"))
t2.rename(t1)
t1.with_suffix(".tmp").rename(t2)
broken = Path(truncated.modalities["flair"].path)
broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
print(f"swapped t1/t2 of {swapped.study}; truncated {broken.name}")

# %%
check = curate(find_studies(check_root), out / "check" / "store", spacing=STORE_SPACING[scale])
print(check.summary(), "-> exit status", check.status)
for sid, reason in check.failed.items():
    print(f"FAILED {sid}: {reason}")
flagged = qc.mislabelled(Store(out / "check" / "store"))
display(flagged)

# %% [markdown]
# ## 5. Sampling crops
#
# `PretrainDataset` yields, per study, up to `k = 4` modalities with a presence mask (IXI and
# ISLES studies have other and fewer modalities than BraTS), one random crop box for all of
# them, and the crop's position in template space: the world position of crop voxel (0, 0, 0)
# minus the head's centre, which is where the proxy tasks cut their templates. A sample depends
# only on `(seed, epoch, index)`, so DataLoader workers, DistributedSampler ranks and a resumed
# run all agree.

# %%
ds = PretrainDataset(store, crop_size=crop, k=4, seed=0)
loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=0, collate_fn=PretrainDataset.collate,
                    generator=torch.Generator().manual_seed(0))
batch = next(iter(loader))
for key, value in batch.items():
    print(f"{key:>16}: {tuple(value.shape) if hasattr(value, 'shape') else value}"
          f"{'  ' + str(value.dtype) if hasattr(value, 'dtype') else ''}")
print("template_origin (mm):", batch["template_origin"].numpy().round(1).tolist())
fig = qc.plot_batch(batch)
fig.savefig(out / "crops.png", dpi=90)
display(fig)

# %%
t0 = time.perf_counter()
n_samples = min(len(ds), 64)
for i in range(n_samples):
    ds[i]
sample_ms = (time.perf_counter() - t0) / n_samples * 1000
print(f"{sample_ms:.1f} ms per {crop}³ 4-modality sample, in this process "
      "(benchmarks/loader.py compares with the on-the-fly MONAI chain)")

# %% [markdown]
# Downstream tasks read the same store with `LabelledDataset`: the task's modalities in a fixed
# channel order (zeros and `present=False` where one is missing) and the label, a segmentation
# crop or a class from the study's attributes.

# %%
seg_task = next((t for t in store.manifest["task"].dropna().unique()
                 if store.manifest.loc[store.manifest["task"] == t, "label"].all()), None)
seg_studies = store.studies(task=seg_task) if seg_task else []
seg = LabelledDataset(store, ["t1", "t1c", "t2", "flair"], crop_size=crop, studies=seg_studies,
                      foreground_fraction=1.0) if seg_studies else None
if seg is not None:
    item = seg[0]
    print(f"task {seg_task}: {len(seg)} studies; image {tuple(item['image'].shape)}, present "
          f"{item['present'].tolist()}, label values {sorted(item['label'].unique().tolist())}")

# %%
results = {
    "scale": scale,
    "sources": int(len(counts)),
    "studies_found": int(len(studies)),
    "scans_found": int(counts["scans"].sum()),
    "studies_curated": int(len(store)),
    "curation_failed": int(len(set(report["failed"]) - expected)),
    "expected_problems": int(len(expected)),
    "spacing_mm": float(store.spacing),
    "store_mib": round(sum(f.stat().st_size for f in store_root.rglob("*.npy")) / 2**20, 2),
    "per_source": {k: int(v) for k, v in store.manifest["source"].value_counts().items()},
    "splits": {k: int(v) for k, v in store.manifest["split"].value_counts().items()},
    "suspicious_in_cohort": int(len(sus)),
    "check": {"source": src_name, "swapped": swapped.study, "truncated": truncated.study,
              "curated": len(check.curated), "failed": check.failed, "status": check.status,
              "flagged": flagged[["study", "modality", "looks_like"]].values.tolist()},
    "batch": {"image": list(batch["image"].shape), "present": batch["present"].float().mean().item(),
              "min": float(batch["image"].min()), "max": float(batch["image"].max())},
    "crop": crop,
    "sample_ms": round(sample_ms, 2),
    "discover_s": round(discover_s, 3),
    "curate_s": round(curate_s, 2),
    "segmentation_task": seg_task,
    "registration": (
        {f"{src}/{mode}": {"error_mm": round(float(g["error_mm"].mean()), 2),
                           "error_p95_mm": round(float(g["error_p95_mm"].mean()), 2),
                           "seconds": round(float(g["seconds"].mean()), 2), "studies": int(len(g))}
         for (src, mode), g in alignment.groupby(["source", "mode"])}
        if alignment is not None else None
    ),
}
(out / "results.json").write_text(json.dumps(results, indent=2))
print(json.dumps({k: v for k, v in results.items() if k != "check"}, indent=1))

# %% [markdown]
# ## Summary
# Every source of the cohort was found from its on-disk layout, its modality names mapped to the
# canonical eight, and every study curated once into a store whose arrays are RAS, isotropic,
# cropped to the head and scaled to [0, 1]. The QC report summarises grids, orientations and
# intensities per source and lists suspicious studies; a swapped T1/T2 pair was caught from the
# cross-modal correlations alone, and a truncated file failed only its own study. The sampler
# serves multi-modal crops with a presence mask and their template-space position from
# memory-mapped arrays.
#
# ### What's next?
# The next chapters build the proxy tasks on these crops: block masking and cross-modal
# reconstruction, then the modality templates and the contrastive term.
#
# ## Resources and references
# - The BrainMVP paper {cite}`rui2025brainmvp` and its data loader; MONAI
#   {cite}`cardoso2022monai` (`load_decathlon_datalist` reads the datalists
#   `mmlib.data.layouts.export_datalist` writes); the BraTS, IXI, UCSF-PDGM, ISLES 2022 and
#   Medical Segmentation Decathlon layouts; BIDS for `participants.tsv`.
# - `benchmarks/loader.py`: store + sampler against the on-the-fly MONAI chain.
