"""Samples per second: mmlib's store + sampler against the authors' on-the-fly MONAI chain.

Both loaders read the same BraTS-like studies (240×240×155, 1 mm, LPS, int16 ``.nii.gz``,
4 modalities), yield 4-modality 96³ crops, and run with the same number of DataLoader
workers (batch size 1, one sample = one study's 4-channel crop).

* baseline: per sample, the authors' chain (BrainMVP ``utils/data_utils.py``): LoadImaged →
  EnsureChannelFirstd → Orientationd(RAS) → Spacingd(1 mm) → CropForegroundd →
  ScaleIntensityRangePercentilesd(5, 95, clip, channel-wise) → RandSpatialCropd(96³) →
  SpatialPadd;
* mmlib: ``mmlib curate`` once (timed and reported separately, with its peak memory for one
  study), then :class:`mmlib.data.sampler.PretrainDataset` over the store.

Both are timed from the first batch (worker start-up excluded) to the last. The loader's
memory is sampled every 100 samples over ``--store-samples`` (default 1000): RSS (which counts
the store's page-cache pages mapped by the workers, bounded by the store's size) and USS
(private memory: a leak would show here). The last line is the ratio of samples/s.

Usage::

    .venv/bin/python benchmarks/loader.py            # 4 studies, 16 baseline / 1000 mmlib samples
    .venv/bin/python benchmarks/loader.py --quick    # 2 studies, 6 / 300 samples
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import torch
from scipy import ndimage
from torch.utils.data import DataLoader, RandomSampler

SHAPE = (240, 240, 155)
NAMES = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}
CONTRAST = {"flair": (30, 700, 550, 200), "t1": (250, 600, 900, 300),
            "t1c": (250, 600, 900, 1200), "t2": (1000, 700, 500, 900)}  # csf, gm, wm, lesion


def write_brats_like(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` BraTS 2021-style studies: skull-stripped ellipsoidal heads with GM/WM/CSF texture."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in SHAPE],
                             indexing="ij"))
    folders = []
    for i in range(n):
        sid = f"BraTS2021_{i:05d}"
        folder = root / sid
        folder.mkdir(parents=True, exist_ok=True)
        warp = ndimage.gaussian_filter(rng.normal(0, 1, (30, 30, 20)).astype(np.float32), 3)
        warp = ndimage.zoom(warp, np.array(SHAPE) / np.array(warp.shape), order=1) * 0.5
        r = np.sqrt((g[0] / 0.62) ** 2 + (g[1] / 0.72) ** 2 + (g[2] / 0.8) ** 2) + warp
        tissue = np.zeros(SHAPE, np.uint8)
        tissue[r < 1.0] = 2
        tissue[r < 0.8] = 3
        tissue[(np.abs(g[0]) < 0.08) & (r < 0.5)] = 1
        c = rng.uniform(-0.3, 0.3, 3)
        lesion = ((g - c[:, None, None, None].astype(np.float32)) ** 2).sum(0) < 0.04
        tissue[lesion & (tissue > 0)] = 4
        aff = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS files are LPS
        aff[:3, 3] = [119.0, 119.0, -77.0]
        for mod, name in NAMES.items():
            lut = np.array((0, *CONTRAST[mod]), np.float32)
            img = lut[tissue] * (1 + 0.1 * warp) + rng.normal(0, 15, SHAPE).astype(np.float32)
            img[tissue == 0] = 0
            nib.save(nib.Nifti1Image(np.clip(img, 0, 32000).astype(np.int16), aff),
                     str(folder / f"{sid}_{name}.nii.gz"))
        folders.append(folder)
    return folders


def monai_dataset(folders: list[Path], crop: int):
    """The authors' per-sample chain as a MONAI Dataset."""
    from monai.data import Dataset
    from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged,
                                  Orientationd, RandSpatialCropd, ScaleIntensityRangePercentilesd,
                                  Spacingd, SpatialPadd, ToTensord)

    items = [{"image": [str(f / f"{f.name}_{n}.nii.gz") for n in NAMES.values()]} for f in folders]
    chain = Compose([
        LoadImaged(keys=["image"]), EnsureChannelFirstd(keys=["image"]),
        Orientationd(keys=["image"], axcodes="RAS"),
        Spacingd(keys=["image"], pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
        CropForegroundd(keys=["image"], source_key="image"),
        ScaleIntensityRangePercentilesd(keys=["image"], lower=5, upper=95, b_min=0.0, b_max=1.0,
                                        clip=True, channel_wise=True),
        RandSpatialCropd(keys=["image"], roi_size=(crop,) * 3, random_size=False),
        SpatialPadd(keys=["image"], spatial_size=(crop,) * 3, mode="constant"),
        ToTensord(keys=["image"]),
    ])
    return Dataset(items, transform=chain)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _collate_first(items):
    return items


def time_loader(dataset, samples: int, workers: int, memory_every: int = 0):
    """Samples/s from the first batch to the last; memory samples (rss, uss MiB) if asked."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=samples + 1,
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers,
                        worker_init_fn=_worker_init, collate_fn=_collate_first,
                        persistent_workers=False, prefetch_factor=2 if workers else None)
    memory: list[tuple[int, float, float]] = []
    t0 = None
    from tqdm.auto import tqdm

    for i, batch in enumerate(tqdm(loader, total=samples + 1, leave=False, mininterval=2)):
        if i == 0:
            t0 = time.perf_counter()
        if memory_every and i % memory_every == 0:
            memory.append((i, *_loader_memory()))
    assert t0 is not None
    return samples / (time.perf_counter() - t0), memory


def _loader_memory() -> tuple[float, float]:
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    rss = uss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            rss += info.rss
            uss += info.uss
        except psutil.Error:
            pass
    return rss / 2**20, uss / 2**20


def _curate_one(folder: str, out: str, queue) -> None:
    from mmlib.data.curate import curate
    from mmlib.data.layouts import find_studies

    studies = [s for s in find_studies(Path(folder).parent) if s.study == Path(folder).name]
    t = time.perf_counter()
    curate(studies, out, spacing=1.0, progress=False, qc_report=False)
    queue.put((time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--monai-samples", type=int, default=16)
    ap.add_argument("--store-samples", type=int, default=1000)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--data", type=Path, help="folder for the synthetic files (default: temp)")
    ap.add_argument("--quick", action="store_true", help="2 studies, 6 / 300 samples")
    args = ap.parse_args()
    if args.quick:
        args.studies, args.monai_samples, args.store_samples = 2, 6, 300
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    base = args.data or Path(tempfile.mkdtemp(prefix="mmlib-loader-bench-"))
    raw = base / "BraTS2021"
    t = time.perf_counter()
    folders = sorted(raw.glob("BraTS2021_*")) if raw.is_dir() else []
    if len(folders) < args.studies:
        folders = write_brats_like(raw, args.studies)
    folders = folders[: args.studies]
    size = sum(f.stat().st_size for d in folders for f in d.iterdir()) / 2**20
    print(f"data: {len(folders)} studies × 4 modalities {SHAPE} int16 .nii.gz ({size:.0f} MiB) "
          f"in {base} ({time.perf_counter() - t:.1f} s)")
    print(f"workers: {args.workers}, crop {args.crop}³, batch 1, CPU threads per worker 1")

    # curation: one study in a fresh process for its peak memory, then the rest
    store = base / "store"
    one = base / "store-one-study"
    shutil.rmtree(one, ignore_errors=True)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_curate_one, args=(str(folders[0]), str(one), q))
    p.start()
    one_s, one_peak = q.get()
    p.join()
    shutil.rmtree(one, ignore_errors=True)
    print(f"curate one study: {one_s:.1f} s, peak memory {one_peak:.0f} MiB (process max RSS, "
          "imports included)")
    from mmlib.data.curate import curate
    from mmlib.data.layouts import find_studies
    from mmlib.data.sampler import PretrainDataset
    from mmlib.data.store import Store

    t = time.perf_counter()
    studies = [s for s in find_studies(raw) if s.study in {f.name for f in folders}]
    rep = curate(studies, store, spacing=1.0, workers=args.workers, progress=False,
                 qc_report=False)
    print(f"curate the rest: {len(rep.curated)} studies in {time.perf_counter() - t:.1f} s "
          f"({len(rep.skipped)} already done); store "
          f"{sum(f.stat().st_size for f in store.rglob('*.npy')) / 2**20:.0f} MiB")

    baseline, _ = time_loader(monai_dataset(folders, args.crop), args.monai_samples, args.workers)
    print(f"baseline MONAI chain: {baseline:.3f} samples/s ({args.monai_samples} samples)")
    ds = PretrainDataset(Store(store), args.crop, k=4, studies=[f.name for f in folders])
    ours, memory = time_loader(ds, args.store_samples, args.workers, memory_every=100)
    print(f"mmlib store + sampler: {ours:.1f} samples/s ({args.store_samples} samples)")
    for i, rss, uss in memory:
        print(f"  after {i:5d} samples: loader RSS {rss:7.0f} MiB, private (USS) {uss:7.0f} MiB")
    if len(memory) >= 3:
        grow = memory[-1][2] - memory[1][2]
        print(f"private memory growth from sample 100 to {memory[-1][0]}: {grow:+.0f} MiB")
    print(f"ratio store/monai: {ours / baseline:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
