"""Samples per second of 4 x 96³ crops: mmlib's store + sampler, the authors' chain, nnU-Net.

All loaders read the same BraTS-like studies (240×240×155, 1 mm, LPS, int16 ``.nii.gz``,
4 modalities, synthetic heads with tissue contrast), serve 4-modality 96³ float32 crops in
batches of ``--batch`` (default 2, nnU-Net's 3-D default) with the same number of worker
processes (``--workers``, default 2), each worker limited to one CPU thread:

* ``authors``: the BrainMVP authors' on-the-fly chain (``utils/data_utils.py``), per sample:
  LoadImaged → EnsureChannelFirstd → Orientationd(RAS) → Spacingd(1 mm) → CropForegroundd →
  ScaleIntensityRangePercentilesd(5, 95, clip, channel-wise) → RandSpatialCropd(96³) →
  SpatialPadd, in a torch DataLoader with MONAI's ``list_data_collate``;
* ``mmlib``: ``mmlib curate`` once (timed apart, with the peak memory of one study), then
  :class:`mmlib.data.sampler.PretrainDataset` over the store in a torch DataLoader with
  :meth:`PretrainDataset.collate` (the pre-training engine's loader on CPU: float32 batches);
* ``mmlib16``: the same with ``image_dtype=torch.float16`` (the engine's loader for a GPU),
  each batch converted to float32 by the consumer (``image.float()``, here on the CPU, inside
  the timing: the GPU engine does it on the device);
* ``nnunet`` (the optional extra ``bench``: ``pip install -e .[bench]``): nnU-Net v2's own
  storage and loading: the cases written by ``nnUNetDatasetBlosc2.save_case`` (blosc2 LZ4HC,
  float32 ``(4, X, Y, Z)`` data + int16 segmentation, chunks and blocks from
  ``comp_blosc2_params`` for the 96³ patch, as ``DefaultPreprocessor.run_case_save`` writes
  them), read by ``nnUNetDataLoader`` (memory-mapped blosc2, random patches, no foreground
  oversampling, no augmentation) inside ``NonDetMultiThreadedAugmenter`` with the worker count,
  cache size and wait time of ``nnUNetTrainer.get_dataloaders``. nnU-Net's planning and
  preprocessing CLI (fingerprint, plans, z-score normalisation) is *not* run: it needs the
  ``nnUNet_raw``/``nnUNet_preprocessed`` environment and would rescale the intensities; its
  input here is mmlib's curated arrays (same orientation, spacing, head crop and [0, 1]
  scaling, float32), so both read equivalent data of the same shapes.

Each side runs ``--repeats`` times (default 3), interleaved; a run starts its workers, is
timed from its first batch to its last (start-up excluded) and shuts them down. Also measured
in every round: a plain ``memcpy`` (``torch`` copies of batch-sized float32 chunks of a 128 MiB
buffer, larger than a CPU cache, with ``--workers`` threads), the memory limit: the fraction
printed is the image bytes a loader delivers per second over the bytes that copy moves per
second. Loader memory is sampled every
100 samples in mmlib's first run (``--store-samples``, default 1000): RSS and USS (private
memory: a leak would show there) of the main process and its workers. The last line is the
ratio of medians mmlib / authors' chain; the line before it mmlib / nnU-Net.

Where the time went before issue 17 (cProfile, 2 shared cores under load 3-4): in one process
a 4 × 96³ sample took 6.6 ms, 5.6 ms of it in ``read_crop`` (numpy's float16 → float32
conversion through a memory map opened afresh per modality); in a DataLoader worker the sample
was then stacked (a private copy) and moved to shared memory when sent (``share_memory_``:
~19 ms for 14 MB, the kernel faulting in fresh 4 KiB shared pages), so two workers served ~40
samples/s where one process read ~150/s. Now the sampler ``pread``s the crop's rows and
converts them with one vectorised torch copy straight into the batch, which a worker allocates
in shared memory (2.5 ms per sample in one process); what is left per sample in a worker is
mostly the kernel's cost of fresh shared pages for the 14 MB float32 batch the contract asks
for: per batch of 2, reading the crops into a reused buffer took 3-8 ms, into a fresh
shared-memory batch 41-61 ms (float32) or 20-28 ms (float16) under load 6. So each worker now
keeps a small ring of shared batch buffers and rewrites one only after the main process has
dropped every tensor on it (a finalizer on the storage hands its token back; see
``mmlib.data.sampler._BatchRing``): no page is faulted in after the first batches. float16
transport halves the bytes but the consumer's conversion to float32 is then one more pass over
the batch in the main process, which on CPU costs more than it saves (``mmlib16``).

Usage (about 4-5 minutes on 2 quiet cores, 6 under load 7-9; ``--quick`` about 1.5)::

    .venv/bin/python benchmarks/loader.py                  # 4 studies, 3 rounds
    .venv/bin/python benchmarks/loader.py --quick          # 2 studies, fewer samples
    .venv/bin/python benchmarks/loader.py --sides authors,mmlib   # without the bench extra
    .venv/bin/python benchmarks/loader.py --busy refuse    # exit 3 when load > cores
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import add_arguments, check_load, interleave, ratio_line, summarize

SHAPE = (240, 240, 155)
NAMES = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}
CONTRAST = {
    "flair": (30, 700, 550, 200),
    "t1": (250, 600, 900, 300),
    "t1c": (250, 600, 900, 1200),
    "t2": (1000, 700, 500, 900),
}  # csf, gm, wm, lesion
SIDES = ("authors", "mmlib", "mmlib16", "nnunet")
MISSING_EXTRA = 2


def write_brats_like(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` BraTS 2021-style studies: skull-stripped ellipsoidal heads with GM/WM/CSF texture."""
    rng = np.random.default_rng(seed)
    g = np.stack(
        np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in SHAPE], indexing="ij")
    )
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
            nib.save(
                nib.Nifti1Image(np.clip(img, 0, 32000).astype(np.int16), aff),
                str(folder / f"{sid}_{name}.nii.gz"),
            )
        folders.append(folder)
    return folders


def monai_dataset(folders: list[Path], crop: int):
    """The authors' per-sample chain as a MONAI Dataset."""
    from monai.data import Dataset
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        RandSpatialCropd,
        ScaleIntensityRangePercentilesd,
        Spacingd,
        SpatialPadd,
        ToTensord,
    )

    items = [{"image": [str(f / f"{f.name}_{n}.nii.gz") for n in NAMES.values()]} for f in folders]
    chain = Compose(
        [
            LoadImaged(keys=["image"]),
            EnsureChannelFirstd(keys=["image"]),
            Orientationd(keys=["image"], axcodes="RAS"),
            Spacingd(keys=["image"], pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
            CropForegroundd(keys=["image"], source_key="image"),
            ScaleIntensityRangePercentilesd(
                keys=["image"],
                lower=5,
                upper=95,
                b_min=0.0,
                b_max=1.0,
                clip=True,
                channel_wise=True,
            ),
            RandSpatialCropd(keys=["image"], roi_size=(crop,) * 3, random_size=False),
            SpatialPadd(keys=["image"], spatial_size=(crop,) * 3, mode="constant"),
            ToTensord(keys=["image"]),
        ]
    )
    return Dataset(items, transform=chain)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def time_torch_loader(
    dataset, collate, samples: int, workers: int, batch: int, memory_every: int = 0, consume=None
) -> tuple[float, list[tuple[int, float, float]]]:
    """Samples/s of a torch DataLoader from the first batch to the last; memory if asked.
    ``consume(batch)`` runs on every batch inside the timing (e.g. a conversion)."""
    n_batches = max(1, samples // batch)
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=(n_batches + 1) * batch,
        generator=torch.Generator().manual_seed(0),
    )
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=_worker_init,
        collate_fn=collate,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )
    memory: list[tuple[int, float, float]] = []
    t0 = 0.0
    next_memory = 0
    for i, _batch in enumerate(loader):
        if consume is not None:
            consume(_batch)
        if i == 0:
            t0 = time.perf_counter()
        if memory_every and i * batch >= next_memory:
            memory.append((i * batch, *_loader_memory()))
            next_memory += memory_every
    return n_batches * batch / (time.perf_counter() - t0), memory


def _loader_memory() -> tuple[float, float]:
    me = psutil.Process()
    rss = uss = 0
    for p in [me, *me.children(recursive=True)]:
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


# ------------------------------------------------------------------------------ nnU-Net side


def nnunet_available() -> bool:
    """True when nnunetv2 (the ``bench`` extra) imports."""
    try:
        import nnunetv2.training.dataloading.data_loader  # noqa: F401
    except ImportError:
        return False
    return True


def write_nnunet_cases(store, studies: list[str], folder: Path, crop: int) -> Path:
    """Write each study as nnU-Net's preprocessed blosc2 case (``save_case``, 96³ chunking)."""
    from nnunetv2.training.dataloading.nnunet_dataset import (
        comp_blosc2_params,
        nnUNetDatasetBlosc2,
    )

    folder.mkdir(parents=True, exist_ok=True)
    for sid in studies:
        if (folder / f"{sid}.b2nd").is_file():
            continue
        row = store.row(sid)
        data = np.stack(
            [np.asarray(store.image(sid, m), dtype=np.float32) for m in row["modalities"][:4]]
        )
        seg = np.zeros((1, *data.shape[1:]), dtype=np.int16)  # pre-training: no labels
        blocks, chunks = comp_blosc2_params(data.shape, (crop,) * 3, data.itemsize)
        blocks_s, chunks_s = comp_blosc2_params(seg.shape, (crop,) * 3, seg.itemsize)
        props = {
            "spacing": [1.0] * 3,
            "shape_after_cropping_and_before_resampling": data.shape[1:],
            "class_locations": {1: np.zeros((0, 4), dtype=np.int64)},
        }
        nnUNetDatasetBlosc2.save_case(
            data,
            seg,
            props,
            str(folder / sid),
            chunks=chunks,
            blocks=blocks,
            chunks_seg=chunks_s,
            blocks_seg=blocks_s,
        )
    return folder


def time_nnunet_loader(
    folder: Path, studies: list[str], samples: int, workers: int, batch: int, crop: int
) -> float:
    """Samples/s of nnU-Net's loader as its trainer builds it, first batch to last."""
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import (
        NonDetMultiThreadedAugmenter,
    )
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    data = nnUNetDatasetBlosc2(str(folder), identifiers=studies)
    labels = LabelManager({"background": 0, "lesion": 1}, regions_class_order=None)
    loader = nnUNetDataLoader(
        data,
        batch,
        (crop,) * 3,
        (crop,) * 3,
        labels,
        oversample_foreground_percent=0.0,
        transforms=None,
    )
    augmenter = NonDetMultiThreadedAugmenter(
        loader,
        None,
        num_processes=workers,
        num_cached=max(6, workers // 2),
        seeds=None,
        pin_memory=False,
        wait_time=0.002,
    )
    n_batches = max(1, samples // batch)
    try:
        first = next(augmenter)
        assert tuple(first["data"].shape) == (batch, 4, crop, crop, crop), first["data"].shape
        t0 = time.perf_counter()
        for _ in range(n_batches):
            next(augmenter)
        return n_batches * batch / (time.perf_counter() - t0)
    finally:
        augmenter._finish()


# --------------------------------------------------------------------------- memory limit


_POOL: dict[str, torch.Tensor] = {}
POOL_BYTES = 128 * 2**20
"""Source and destination of the memcpy reference: larger than a CPU cache, so the copy runs at
memory speed as reads from the page cache do."""


def memcpy_bytes_per_s(nbytes: int, threads: int, rounds: int = 40) -> float:
    """Bytes/s of plain copies of ``nbytes`` (float32) with ``threads`` threads, taken in turn
    from a :data:`POOL_BYTES` buffer into another."""
    if not _POOL:
        _POOL["src"] = torch.rand(max(nbytes, POOL_BYTES) // 4)
        _POOL["dst"] = torch.empty_like(_POOL["src"])
        _POOL["dst"].copy_(_POOL["src"])  # fault in every page first: only copies are timed
    src, dst = _POOL["src"], _POOL["dst"]
    n = nbytes // 4
    chunks = max(1, src.numel() // n)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dst[:n].copy_(src[:n])
        t = time.perf_counter()
        for r in range(rounds):
            i = (r % chunks) * n
            dst[i : i + n].copy_(src[i : i + n])
        return rounds * n * 4 / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--monai-samples", type=int, default=16, help="per run of the authors' chain")
    ap.add_argument("--store-samples", type=int, default=1000, help="per run of mmlib")
    ap.add_argument("--nnunet-samples", type=int, default=300, help="per run of nnU-Net")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument(
        "--sides",
        default=",".join(SIDES),
        help=f"comma-separated subset of {','.join(SIDES)} (default: all)",
    )
    ap.add_argument("--data", type=Path, help="folder for the synthetic files (default: temp)")
    ap.add_argument("--quick", action="store_true", help="2 studies, 8 / 300 / 100 samples per run")
    add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.studies, args.monai_samples, args.store_samples, args.nnunet_samples = 2, 8, 300, 100
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown or "mmlib" not in sides:
        ap.error(f"--sides: {unknown or 'mmlib is required'}; choose among {', '.join(SIDES)}")
    if "nnunet" in sides and not nnunet_available():
        print(
            "the nnU-Net side needs the optional extra 'bench' (nnunetv2, blosc2, "
            "batchgenerators): pip install -e '.[bench]' -c constraints.txt, or leave it out "
            "with --sides authors,mmlib",
            file=sys.stderr,
        )
        return MISSING_EXTRA
    check_load(args.busy)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    base = args.data or Path(tempfile.mkdtemp(prefix="mmlib-loader-bench-"))
    raw = base / "BraTS2021"
    t = time.perf_counter()
    folders = sorted(raw.glob("BraTS2021_*")) if raw.is_dir() else []
    if len(folders) < args.studies:
        folders = write_brats_like(raw, args.studies)
    folders = folders[: args.studies]
    names = [f.name for f in folders]
    size = sum(f.stat().st_size for d in folders for f in d.iterdir()) / 2**20
    print(
        f"data: {len(folders)} studies × 4 modalities {SHAPE} int16 .nii.gz ({size:.0f} MiB) "
        f"in {base} ({time.perf_counter() - t:.1f} s)"
    )
    print(
        f"workers: {args.workers}, crop 4 × {args.crop}³ float32, batch {args.batch}, CPU "
        "threads per worker 1"
    )

    # curation: one study in a fresh process for its peak memory, then the rest
    store_dir = base / "store"
    one = base / "store-one-study"
    shutil.rmtree(one, ignore_errors=True)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_curate_one, args=(str(folders[0]), str(one), q))
    p.start()
    one_s, one_peak = q.get()
    p.join()
    shutil.rmtree(one, ignore_errors=True)
    print(
        f"curate one study: {one_s:.1f} s, peak memory {one_peak:.0f} MiB (process max RSS, "
        "imports included)"
    )
    from mmlib.data.curate import curate
    from mmlib.data.layouts import find_studies
    from mmlib.data.sampler import PretrainDataset
    from mmlib.data.store import Store

    t = time.perf_counter()
    studies = [s for s in find_studies(raw) if s.study in set(names)]
    rep = curate(
        studies, store_dir, spacing=1.0, workers=args.workers, progress=False, qc_report=False
    )
    print(
        f"curate the rest: {len(rep.curated)} studies in {time.perf_counter() - t:.1f} s "
        f"({len(rep.skipped)} already done); store "
        f"{sum(f.stat().st_size for f in store_dir.rglob('*.npy')) / 2**20:.0f} MiB"
    )
    store = Store(store_dir)
    nn_dir = base / "nnunet-preprocessed"
    if "nnunet" in sides:
        t = time.perf_counter()
        write_nnunet_cases(store, names, nn_dir, args.crop)
        print(
            f"nnU-Net cases (blosc2, save_case): {time.perf_counter() - t:.1f} s, "
            f"{sum(f.stat().st_size for f in nn_dir.glob('*.b2nd')) / 2**20:.0f} MiB"
        )

    from monai.data import list_data_collate

    ds = PretrainDataset(store, args.crop, k=4, studies=names)
    ds16 = PretrainDataset(store, args.crop, k=4, studies=names, image_dtype=torch.float16)
    memory: list[tuple[int, float, float]] = []

    def run_mmlib() -> float:
        rate, mem = time_torch_loader(
            ds,
            PretrainDataset.collate,
            args.store_samples,
            args.workers,
            args.batch,
            0 if memory else 100,
        )
        memory.extend(mem)
        return rate

    sample_bytes = 4 * args.crop**3 * 4  # float32 image of one sample
    runners = {
        "authors": lambda: time_torch_loader(
            monai_dataset(folders, args.crop),
            list_data_collate,
            args.monai_samples,
            args.workers,
            args.batch,
        )[0],
        "mmlib": run_mmlib,
        "mmlib16": lambda: time_torch_loader(
            ds16,
            PretrainDataset.collate,
            args.store_samples,
            args.workers,
            args.batch,
            consume=lambda b: b["image"].float(),
        )[0],
        "nnunet": lambda: time_nnunet_loader(
            nn_dir, names, args.nnunet_samples, args.workers, args.batch, args.crop
        ),
    }
    plan = {name: runners[name] for name in SIDES if name in sides}
    plan["memcpy"] = lambda: memcpy_bytes_per_s(args.batch * sample_bytes, args.workers)
    runs = interleave(plan, args.repeats)
    labels = {
        "authors": "authors' MONAI chain",
        "mmlib": "mmlib store + sampler",
        "mmlib16": "mmlib, float16 transport + consumer's float32 conversion",
        "nnunet": "nnU-Net blosc2 + nnUNetDataLoader",
    }
    for name in sides:
        print(summarize(labels[name], runs[name], "samples/s"))
    print(summarize(f"memcpy, {args.workers} threads", runs["memcpy"], "GB/s", 1e-9))
    limit = runs["memcpy"].median / sample_bytes
    for name in sides:
        frac = runs[name].median * sample_bytes / runs["memcpy"].median
        print(
            f"{labels[name]}: {runs[name].median * sample_bytes / 1e9:.2f} GB/s of images = "
            f"{100 * frac:.1f} % of the memcpy limit ({limit:.0f} samples/s)"
        )
    for i, rss, uss in memory:
        print(
            f"  mmlib after {i:5d} samples: loader RSS {rss:7.0f} MiB, private (USS) {uss:7.0f} MiB"
        )
    if len(memory) >= 3:
        grow = memory[-1][2] - memory[1][2]
        print(
            f"mmlib private memory growth from sample {memory[1][0]} to {memory[-1][0]}: "
            f"{grow:+.0f} MiB"
        )
    if "nnunet" in sides:
        print(ratio_line("mmlib / nnU-Net", runs["mmlib"], runs["nnunet"]))
    if "authors" in sides:
        print(ratio_line("mmlib / authors' chain", runs["mmlib"], runs["authors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
