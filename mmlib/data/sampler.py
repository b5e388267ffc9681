"""Datasets over a curated store: multi-modal crops for pre-training, and how crops are read.

:class:`PretrainDataset` yields per study up to ``k`` modalities (paper: 4) with a presence
mask rather than duplicated channels, one random crop box shared by all of them, the crop's
position in template space (head-centred mm of crop voxel (0, 0, 0)) and canonical modality
ids. Every draw comes from ``numpy.random.default_rng([seed, epoch, index])``, so a sample
depends only on (seed, epoch, index): any DataLoader worker, any DistributedSampler rank, and a
resumed run all produce the same sample for the same index. Call :meth:`set_epoch` before each
epoch; the epoch lives in a shared-memory tensor, so DataLoader workers see it even with
``persistent_workers=True``.

The downstream datasets (labelled crops, whole volumes, classification inputs) are in
:mod:`mmlib.data.labelled`; they read through :func:`read_crop`.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from mmlib.data.store import CropReader, Store
from mmlib.modalities import MODALITY_INDEX

IMAGE_DTYPES = (torch.float32, torch.float16)
"""The image dtypes :class:`PretrainDataset` serves: float32 (the batch contract) and float16
(the store's dtype, for consumers that convert on arrival)."""


def _size3(crop_size: int | Sequence[int]) -> tuple[int, int, int]:
    size = (crop_size,) * 3 if isinstance(crop_size, int) else tuple(int(c) for c in crop_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"crop_size should be a positive int or 3 ints, got {crop_size!r}")
    return size


def crop_box(shape: Sequence[int], size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A random crop start (3,) inside ``shape``; negative where the volume is smaller than
    the crop (the volume then sits at a random offset inside the zero-padded crop)."""
    start = np.empty(3, dtype=np.int64)
    for i, (n, c) in enumerate(zip(shape, size)):
        start[i] = rng.integers(0, n - c + 1) if n >= c else -rng.integers(0, c - n + 1)
    return start


def read_crop(
    volume: np.ndarray, start: Sequence[int], size: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """Read ``volume[start : start + size]`` as float32, zero where the box leaves the volume.

    Only the pages under the box are touched when ``volume`` is a memory map.
    """
    out = np.zeros(tuple(size), dtype=np.float32) if out is None else out
    src, dst = [], []
    for s, c, n in zip(start, size, volume.shape):
        a, b = max(0, int(s)), min(n, int(s) + c)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(s), b - int(s)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _open(store: Store | str | Path) -> Store:
    return store if isinstance(store, Store) else Store(store)


class _EpochDataset(Dataset):
    """A dataset over ``self.studies`` whose samples depend on (seed, epoch, index).

    The epoch lives in a shared-memory tensor so that :meth:`set_epoch` reaches DataLoader
    workers that were started earlier (persistent or spawned ones) without re-creating them.
    """

    studies: list[str]

    def _init_epoch(self) -> None:
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The current epoch (part of every sample's seed)."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; seen by every DataLoader worker, persistent ones included."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.studies)


class PretrainDataset(_EpochDataset):
    """Multi-modal random crops for pre-training (the sampler batch of ARCHITECTURE.md).

    Args:
        store: a :class:`~mmlib.data.store.Store` or its folder.
        crop_size: crop edge in voxels, or three edges (paper: 96).
        k: modalities per sample; studies with more get a random subset, fewer are padded
            with absent channels. Defaults to 4.
        studies: study ids; when None, the studies whose ``role`` is ``pretrain`` (all studies
            when the store records no roles). Defaults to None.
        seed: the base seed. Defaults to 0.
        image_dtype: dtype of ``image``: ``torch.float32`` (the batch contract) or
            ``torch.float16``, the store's own dtype, for a consumer that converts on arrival
            (``image.to(device, dtype=torch.float32)``, exact): half the bytes through shared
            memory and no conversion in the worker. Defaults to ``torch.float32``.

    Raises:
        ValueError: When ``k < 1``, the crop size or ``image_dtype`` is invalid, or no study is
            selected.

    Examples::

        >>> ds = PretrainDataset(store, crop_size=32, k=4)           # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_size=2, collate_fn=PretrainDataset.collate)
    """

    def __init__(
        self,
        store: Store | str | Path,
        crop_size: int | Sequence[int],
        k: int = 4,
        studies: Sequence[str] | None = None,
        seed: int = 0,
        image_dtype: torch.dtype = torch.float32,
    ) -> None:
        if k < 1:
            raise ValueError(f"k should be >= 1, got {k}")
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(
                f"image_dtype should be one of {IMAGE_DTYPES}, got {image_dtype!r}; "
                "float16 is exact for the store's values, other dtypes would round"
            )
        self.image_dtype = image_dtype
        self.store = _open(store)
        self.crop_size = _size3(crop_size)
        self.k = int(k)
        self.seed = int(seed)
        self._init_epoch()
        if studies is None:
            roles = self.store.manifest["role"] if "role" in self.store.manifest else None
            if roles is not None and roles.notna().any():
                studies = self.store.manifest.loc[roles == "pretrain", "study"].tolist()
            else:
                studies = self.store.studies()
        self.studies = sorted(studies)
        missing = [s for s in self.studies if s not in self.store]
        if missing:
            raise ValueError(f"{self.store.root}: studies not in the store: {missing[:5]}")
        if not self.studies:
            raise ValueError(f"{self.store.root}: no studies selected for pre-training")
        self._rows = {s: self.store.row(s) for s in self.studies}
        self._reader: CropReader | None = None
        # tokens of the worker batches the main process has released (see _BatchRing)
        self._released = torch.zeros((RING_WORKERS, RING_SLOTS), dtype=torch.int64)
        self._released.share_memory_()
        self._uid = uuid.uuid4().hex
        _RELEASED[self._uid] = self._released
        self._ring: _BatchRing | None = None

    def __getstate__(self) -> dict[str, Any]:
        # a spawned worker builds its own reader (header cache and scratch buffer) and ring
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_ring"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _RELEASED.setdefault(self._uid, self._released)

    def _draw(self, index: int) -> tuple[str, list[str], np.ndarray]:
        """The study, its chosen modalities and the crop start of ``index`` (the seed's draws)."""
        sid = self.studies[index]
        row = self._rows[sid]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        mods = list(row["modalities"])
        if len(mods) > self.k:
            pick = np.sort(rng.choice(len(mods), size=self.k, replace=False))
            mods = [mods[i] for i in pick]
        return sid, mods, crop_box(row["shape"], self.crop_size, rng)

    def _fill(
        self,
        index: int,
        image: torch.Tensor,
        present: np.ndarray,
        modality: np.ndarray,
        origin: np.ndarray,
        spacing: np.ndarray,
    ) -> str:
        """Write sample ``index`` into preallocated outputs (one row of a batch); its study.

        ``image (K, X, Y, Z)`` is written everywhere (crops, zeros where absent or outside the
        volume), so it may start uninitialised.
        """
        if self._reader is None:
            self._reader = CropReader()
        sid, mods, start = self._draw(index)
        row = self._rows[sid]
        present[:] = False
        modality[:] = -1
        for c, mod in enumerate(mods):
            self._reader.read(self.store.image_path(sid, mod), start, image[c])
            present[c] = True
            modality[c] = MODALITY_INDEX[mod]
        if len(mods) < self.k:
            image[len(mods) :].zero_()
        affine = np.asarray(row["affine"], dtype=np.float64)
        origin[:] = affine[:3, :3] @ start + affine[:3, 3] - np.asarray(row["center_world"])
        spacing[:] = np.abs(np.diag(affine)[:3])
        return sid

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._batch([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Samples ``indices`` read straight into one collated batch (used by DataLoader).

        Returns the per-sample items (views into the batch); :meth:`collate` of this list
        returns the batch itself without copying. In a DataLoader worker the batch's image is
        allocated in shared memory, so sending it to the main process copies nothing.
        """
        return self._batch(indices)

    def _batch(self, indices: Sequence[int]) -> _Items:
        n = len(indices)
        shape = (n, self.k, *self.crop_size)
        info = get_worker_info()
        lease: tuple[str, int, int, int] | None = None
        if info is None:
            image = torch.empty(shape, dtype=self.image_dtype)
        elif info.id < RING_WORKERS:
            if self._ring is None or self._ring.pid != os.getpid():
                self._ring = _BatchRing(self._released[info.id])
            image, slot_token = self._ring.lend(shape, self.image_dtype)
            lease = (self._uid, info.id, *slot_token) if slot_token is not None else None
        else:
            image = _empty(shape, self.image_dtype)
        present = np.zeros((n, self.k), dtype=bool)
        modality = np.full((n, self.k), -1, dtype=np.int64)
        origin = np.zeros((n, 3), dtype=np.float64)
        spacing = np.zeros((n, 3), dtype=np.float64)
        study = [
            self._fill(int(i), image[b], present[b], modality[b], origin[b], spacing[b])
            for b, i in enumerate(indices)
        ]
        batch = _Batch(
            {
                "image": image,
                "present": torch.from_numpy(present),
                "modality": torch.from_numpy(modality),
                "template_origin": torch.from_numpy(origin.astype(np.float32)),
                "spacing": torch.from_numpy(spacing.astype(np.float32)),
                "study": study,
            }
        )
        batch.lease = lease
        items = _Items({key: value[b] for key, value in batch.items()} for b in range(n))
        items.batch = batch
        return items

    @staticmethod
    def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack samples into the batch of ARCHITECTURE.md (``study`` stays a list).

        The list returned by :meth:`__getitems__` already holds its batch, returned as is.
        """
        if isinstance(items, _Items) and items.batch is not None:
            return items.batch
        return _collate(items)


class _Items(list):
    """Samples read into one batch by :meth:`PretrainDataset.__getitems__`, with that batch.

    A slice or a copy is a plain list (collated by stacking), so the shortcut only applies
    to the list exactly as it was returned.
    """

    batch: dict[str, Any] | None = None


RING_WORKERS = 64
"""DataLoader workers (ids below this) that reuse their shared-memory batch buffers."""
RING_SLOTS = 8
"""Shared-memory batch buffers a worker keeps for reuse; beyond them, fresh buffers."""

_RELEASED: weakref.WeakValueDictionary[str, torch.Tensor] = weakref.WeakValueDictionary()
"""Dataset uid -> its shared ``int64 (RING_WORKERS, RING_SLOTS)`` tokens of released batches,
in every process that holds the dataset (the main process writes, workers read)."""


class _BatchRing:
    """A worker's shared-memory image buffers, reused once the main process is done with them.

    Why: a fresh shared-memory buffer per batch costs the kernel a page fault (allocate and
    zero a 4 KiB page) per page, several times the cost of reading the crops. Safety: a buffer
    is lent with a new token (process id and a counter); the batch carries the token, and when
    the main process unpickles it (:func:`_lease`) a finalizer on the image's storage writes
    the token into the shared ``released`` row once the last tensor using that memory (views
    included) is gone. A buffer is rewritten only when its current token is back; otherwise
    the worker takes another buffer, or a fresh one beyond :data:`RING_SLOTS`. A consumer that
    keeps every batch (``list(loader)``) or a collate that never returns the batch itself thus
    gets fresh buffers, as before; nothing it holds is ever overwritten.
    """

    def __init__(self, released: torch.Tensor) -> None:
        self.pid = os.getpid()
        self.released = released  # int64 (RING_SLOTS,), shared, written by the main process
        self.storages: list[torch.UntypedStorage] = []
        self.tokens: list[int] = []
        self.count = 0

    def lend(
        self, shape: tuple[int, ...], dtype: torch.dtype
    ) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """An uninitialised shared tensor and its ``(slot, token)`` (None: not in the ring)."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self.count += 1
        token = (self.pid << 32) | self.count
        back = self.released.tolist()
        slot = next(
            (
                i
                for i, st in enumerate(self.storages)
                if back[i] == self.tokens[i] and st.nbytes() >= nbytes
            ),
            None,
        )
        if slot is None and len(self.storages) < len(back):
            self.storages.append(torch.UntypedStorage._new_shared(nbytes))
            self.tokens.append(token)
            slot = len(self.storages) - 1
        if slot is None:
            return _empty(shape, dtype), None
        self.tokens[slot] = token
        # torch's stub lacks set_'s default stride (contiguous); the call is valid at run time
        out = torch.empty(0, dtype=dtype).set_(self.storages[slot], 0, shape)  # type: ignore[call-overload]
        return out, (slot, token)


class _Batch(dict):
    """A collated batch whose image may be a worker's ring buffer; pickles as a plain dict
    that, once rebuilt in the main process, returns the buffer when its storage dies."""

    lease: tuple[str, int, int, int] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_lease, (dict(self), self.lease))


def _lease(batch: dict[str, Any], lease: tuple[str, int, int, int] | None) -> dict[str, Any]:
    """Rebuild a worker's batch (a plain dict); arrange for its ring buffer to be returned."""
    if lease is not None and (released := _RELEASED.get(lease[0])) is not None:
        _, worker, slot, token = lease
        weakref.finalize(
            batch["image"].untyped_storage(), _give_back, released, worker, slot, token
        )
    return batch


def _give_back(released: torch.Tensor, worker: int, slot: int, token: int) -> None:
    released[worker, slot] = token


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in shared memory inside a DataLoader worker.

    As :func:`torch.utils.data.default_collate` does: a worker's result is moved to shared
    memory when it is sent to the main process, so allocating it there saves a copy.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
    # torch's stub lacks set_'s default stride (contiguous); the call is valid at run time
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)  # type: ignore[call-overload]


def _collate(items: Sequence[dict[str, Any]], pad: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            if pad and values[0].ndim >= 3 and len({v.shape for v in values}) > 1:
                spatial = [max(v.shape[-3 + i] for v in values) for i in range(3)]
                values = [
                    torch.nn.functional.pad(
                        v,
                        [
                            0,
                            spatial[2] - v.shape[-1],
                            0,
                            spatial[1] - v.shape[-2],
                            0,
                            spatial[0] - v.shape[-3],
                        ],
                    )
                    for v in values
                ]
            out[key] = torch.stack(values)
        else:
            out[key] = list(values)
    return out
