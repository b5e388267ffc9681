"""Labelled datasets over a curated store: training crops, whole volumes, classification inputs.

All of them read through :func:`mmlib.data.sampler.read_crop` (zero where a box leaves the
volume) and describe a task by plain values (modalities in channel order, the ``attrs`` column
and the class names), not by a task object: the task catalogue (:mod:`mmlib.tasks`) comes
after the data room.

Every fine-tuning sample is a function of ``(seed, index)`` alone, never of the network being
trained, so that fine-tuning runs of different initialisations at one seed see exactly the same
crops in the same order (the pairing the comparison relies on).

* :class:`SegmentationCrops` (training): a study chosen round-robin over a seeded permutation,
  a crop centred on a foreground voxel with probability ``pos_fraction`` (else anywhere in the
  volume, as MONAI's ``RandCropByPosNegLabel``), zero padding where the crop leaves the
  volume, and a random flip per axis (``flip`` bool ``(3,)``) for :func:`apply_flips` to apply
  after missing channels are filled (so a template fill stays anatomically aligned).
* :class:`Volumes` (evaluation): whole curated volumes for sliding-window inference.
* :class:`ClassificationInputs`: the whole head resampled to a fixed grid ``input_size``
  (trilinear), with class-balanced sampling in training.
* :class:`LabelledDataset` (notebook 02's view of a task): one crop (or the whole volume) per
  study and epoch, drawn from ``(seed, epoch, index)``, with the label map or an ``attrs``
  class.

Each fine-tuning sample is a dict: ``image`` float32 ``(C, X, Y, Z)`` (channels in the given
modality order, zero where absent), ``present`` bool ``(C,)``, ``label`` (int64
``(1, X, Y, Z)`` or a class index), ``template_origin`` float32 ``(3,)`` (head-centred mm of
voxel (0, 0, 0)), ``spacing`` float32 ``(3,)`` and ``study``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mmlib.data.sampler import _collate, _EpochDataset, _open, _size3, crop_box, read_crop
from mmlib.data.store import Store
from mmlib.modalities import MODALITIES, canonical


def _origin(row: dict[str, Any], offset: Sequence[int]) -> np.ndarray:
    """Head-centred mm of voxel ``offset`` of a study (diagonal store affine)."""
    aff = np.asarray(row["affine"], dtype=np.float64)
    world = aff[:3, :3] @ np.asarray(offset, dtype=np.float64) + aff[:3, 3]
    centre = row.get("center_world")
    centre = np.asarray(centre if centre is not None else [0, 0, 0], dtype=np.float64)
    return (world - centre).astype(np.float32)


def _spacing(row: dict[str, Any]) -> np.ndarray:
    sp = row["spacing"]
    sp = [float(sp)] * 3 if isinstance(sp, (int, float)) else [float(s) for s in sp]
    return np.asarray(sp, dtype=np.float32)


def _mods(row: dict[str, Any]) -> list[str]:
    return [str(m) for m in row["modalities"]]


def study_class(row: Any, attr: str, classes: Sequence[str]) -> int:
    """The class index of a study: ``classes.index(str(row["attrs"][attr]))``.

    Args:
        row: the study's manifest row (``study`` and ``attrs``, a dict or its JSON).
        attr: the ``attrs`` column holding the class (e.g. ``"grade"``).
        classes: class names in index order.

    Raises:
        ValueError: When the study lacks the attribute or has a value not in ``classes``.
    """
    import json

    attrs = row.get("attrs", {})
    if isinstance(attrs, str):
        attrs = json.loads(attrs) if attrs else {}
    value = str((attrs or {}).get(attr, ""))
    if value not in classes:
        raise ValueError(
            f"study {row['study']}: {attr}={value!r} is not one of the classes "
            f"{list(classes)}; pass the classes the task's studies hold"
        )
    return list(classes).index(value)


def collate_samples(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack fine-tuning samples of one shape into a batch (``study`` stays a list)."""
    return _collate(items)


def _whole_volume(
    store: Any, study: str, modalities: Sequence[str], have: Sequence[str]
) -> np.ndarray:
    """A study's whole volumes ``float32 (C, X, Y, Z)`` in ``modalities`` order; zeros for the
    modalities it lacks (``have``: those it has)."""
    shape = store.image(study, have[0]).shape
    return np.stack(
        [
            np.asarray(store.image(study, m), dtype=np.float32)
            if m in have
            else np.zeros(shape, np.float32)
            for m in modalities
        ]
    )


def apply_flips(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip each sample of a batch along the axes its ``flip`` row marks.

    Args:
        x: ``(B, C, X, Y, Z)``.
        flip: bool ``(B, 3)``.

    Returns:
        The flipped batch (a new tensor where anything flips).
    """
    if not bool(flip.any()):
        return x
    out = x.clone()
    for b in range(x.shape[0]):
        dims = [a + 1 for a in range(3) if bool(flip[b, a])]
        if dims:
            out[b] = torch.flip(x[b], dims)
    return out


class SegmentationCrops(Dataset):
    """Seeded training crops of a segmentation task.

    Args:
        store: an :class:`mmlib.data.store.Store`.
        studies: the labelled training studies.
        modalities: input modalities in channel order.
        crop_size: ``(X, Y, Z)`` voxels.
        length: samples per pass (any number; studies are visited round-robin).
        seed: the data seed (study order, crop positions, flips). Defaults to 0.
        pos_fraction: probability that a crop is centred on a foreground voxel. Defaults to 0.67.
        flip: random flips along each axis. Defaults to True.

    Raises:
        ValueError: When a study has no label or ``studies`` is empty.
    """

    def __init__(
        self,
        store: Any,
        studies: Sequence[str],
        modalities: Sequence[str],
        crop_size: Sequence[int],
        length: int,
        seed: int = 0,
        pos_fraction: float = 0.67,
        flip: bool = True,
    ) -> None:
        if not studies:
            raise ValueError("SegmentationCrops: no training studies")
        self.store, self.studies = store, list(studies)
        self.modalities, self.crop = list(modalities), tuple(int(c) for c in crop_size)
        self.length, self.seed, self.pos, self.flip = (
            int(length),
            int(seed),
            float(pos_fraction),
            flip,
        )
        self.order = np.random.default_rng([self.seed, 7]).permutation(len(self.studies))
        self._fg: dict[str, np.ndarray] = {}
        for s in self.studies:
            if store.label(s) is None:
                raise ValueError(f"SegmentationCrops: study {s} has no label in {store.root}")

    def __len__(self) -> int:
        return self.length

    def _foreground(self, study: str) -> np.ndarray:
        if study not in self._fg:
            self._fg[study] = np.argwhere(np.asarray(self.store.label(study)) > 0)
        return self._fg[study]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, int(index)])
        study = self.studies[self.order[index % len(self.studies)]]
        row = self.store.row(study)
        label = self.store.label(study)
        shape = label.shape
        fg = self._foreground(study)
        if len(fg) and rng.random() < self.pos:
            centre = fg[rng.integers(len(fg))]
        else:
            centre = np.array([rng.integers(n) for n in shape])
        start = [int(c) - n // 2 for c, n in zip(centre, self.crop)]
        # keep the crop inside the volume where the volume is large enough
        start = [
            min(max(s, 0), max(dim - n, 0)) if dim >= n else (dim - n) // 2
            for s, n, dim in zip(start, self.crop, shape)
        ]
        have = _mods(row)
        image = np.stack(
            [
                read_crop(self.store.image(study, m), start, self.crop)
                if m in have
                else np.zeros(self.crop, np.float32)
                for m in self.modalities
            ]
        )
        lab = read_crop(label, start, self.crop)[None]
        flips = torch.tensor([bool(self.flip and rng.random() < 0.5) for _ in range(3)])
        sp = _spacing(row)
        origin = _origin(row, start)
        return {
            "image": torch.from_numpy(image),
            "present": torch.tensor([m in have for m in self.modalities]),
            "label": torch.from_numpy(lab.astype(np.int64)),
            "template_origin": torch.from_numpy(origin),
            "spacing": torch.from_numpy(sp),
            "flip": flips,
            "study": study,
        }


class Volumes(Dataset):
    """Whole curated volumes of a task (evaluation).

    Args:
        store: an :class:`mmlib.data.store.Store`.
        studies: the studies.
        modalities: input modalities in channel order.
        with_label: also return the label map. Defaults to True.
    """

    def __init__(
        self, store: Any, studies: Sequence[str], modalities: Sequence[str], with_label: bool = True
    ) -> None:
        self.store, self.studies, self.modalities, self.with_label = (
            store,
            list(studies),
            list(modalities),
            with_label,
        )

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict[str, Any]:
        study = self.studies[index]
        row = self.store.row(study)
        have = _mods(row)
        image = _whole_volume(self.store, study, self.modalities, have)
        out: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "present": torch.tensor([m in have for m in self.modalities]),
            "template_origin": torch.from_numpy(_origin(row, [0, 0, 0])),
            "spacing": torch.from_numpy(_spacing(row)),
            "study": study,
        }
        if self.with_label:
            lab = self.store.label(study)
            if lab is None:
                raise ValueError(f"Volumes: study {study} has no label in {self.store.root}")
            out["label"] = torch.from_numpy(np.asarray(lab, dtype=np.int64))[None]
        return out


class ClassificationInputs(Dataset):
    """Whole heads resampled to ``input_size``, with their class.

    Args:
        store: an :class:`mmlib.data.store.Store`.
        studies: the studies.
        modalities: input modalities in channel order.
        attr: the ``attrs`` column holding each study's class (e.g. ``"grade"``).
        classes: class names in index order.
        input_size: ``(X, Y, Z)`` of the resampled grid.
        length: samples per pass in training (class-balanced draws); None: each study once,
            in order (evaluation). Defaults to None.
        seed: the data seed. Defaults to 0.
        flip: random flips in training. Defaults to True.

    Raises:
        ValueError: When a study lacks the attribute or holds a class not in ``classes``.
    """

    def __init__(
        self,
        store: Any,
        studies: Sequence[str],
        modalities: Sequence[str],
        attr: str,
        classes: Sequence[str],
        input_size: Sequence[int],
        length: int | None = None,
        seed: int = 0,
        flip: bool = True,
    ) -> None:
        self.store, self.studies = store, list(studies)
        self.modalities, self.attr, self.classes = list(modalities), str(attr), list(classes)
        self.size = tuple(int(s) for s in input_size)
        self.length, self.seed, self.flip = length, int(seed), flip
        self.targets = [study_class(store.manifest.loc[s], attr, classes) for s in self.studies]
        counts = np.bincount(self.targets, minlength=len(self.classes)).astype(float)
        w = np.array([1.0 / counts[t] for t in self.targets])
        self.weights = w / w.sum()
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.studies)

    def _load(self, study: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        if study not in self._cache:
            row = self.store.row(study)
            have = _mods(row)
            vol = _whole_volume(self.store, study, self.modalities, have)
            img = F.interpolate(
                torch.from_numpy(vol)[None], size=self.size, mode="trilinear", align_corners=True
            )[0]
            sp = (
                _spacing(row)
                * (np.asarray(vol.shape[1:], dtype=np.float32) - 1)
                / (np.asarray(self.size, dtype=np.float32) - 1)
            )
            present = torch.tensor([m in have for m in self.modalities])
            self._cache[study] = (img, present, _origin(row, [0, 0, 0]), sp.astype(np.float32))
        return self._cache[study]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.length is None:
            i, rng = index, None
        else:
            rng = np.random.default_rng([self.seed, int(index)])
            i = int(rng.choice(len(self.studies), p=self.weights))
        study = self.studies[i]
        img, present, origin, sp = self._load(study)
        flips = torch.tensor(
            [bool(rng is not None and self.flip and rng.random() < 0.5) for _ in range(3)]
        )
        return {
            "image": img.clone(),
            "present": present.clone(),
            "label": torch.tensor(self.targets[i]),
            "template_origin": torch.from_numpy(origin),
            "spacing": torch.from_numpy(sp),
            "flip": flips,
            "study": study,
        }


class LabelledDataset(_EpochDataset):
    """Downstream samples: the task's modalities as channels, and the label.

    Args:
        store: a :class:`~mmlib.data.store.Store` or its folder.
        modalities: channel order (any aliases), e.g. ``["t1", "t1c", "t2", "flair"]``.
        crop_size: crop edge(s) in voxels, or None for the whole (cropped-to-head) volume.
            Defaults to None.
        studies: study ids. Defaults to None (every study of the store; pass the task's ids).
        seed: the base seed of the crop positions. Defaults to 0.
        label_key: ``"label"`` for the segmentation, or an ``attrs`` column (e.g. ``"grade"``)
            for classification. Defaults to ``"label"``.
        foreground_fraction: for segmentation crops, the probability that a crop is centred on
            a random labelled voxel instead of placed uniformly. Defaults to 0.0.

    Each item holds ``image float32 (C, X, Y, Z)``, ``present bool (C,)``, ``modality int64
    (C,)`` (template index of each channel, present or not), ``label`` (int64 ``(X, Y, Z)`` or a
    scalar class index into :attr:`classes`), ``template_origin float32 (3,)``, ``spacing
    float32 (3,)`` and ``study``.

    Raises:
        ValueError: When a study lacks the label (segmentation) or the attrs column.
    """

    def __init__(
        self,
        store: Store | str | Path,
        modalities: Sequence[str],
        crop_size: int | Sequence[int] | None = None,
        studies: Sequence[str] | None = None,
        seed: int = 0,
        label_key: str = "label",
        foreground_fraction: float = 0.0,
    ) -> None:
        self.store = _open(store)
        self.modalities = [canonical(m) for m in modalities]
        self.crop_size = None if crop_size is None else _size3(crop_size)
        self.studies = sorted(studies) if studies is not None else self.store.studies()
        self.seed = int(seed)
        self._init_epoch()
        self.label_key = label_key
        self.foreground_fraction = float(foreground_fraction)
        self._rows = {s: self.store.row(s) for s in self.studies}
        self.classes: list[Any] = []
        if label_key == "label":
            lacking = [s for s, r in self._rows.items() if not r["label"]]
            if lacking:
                raise ValueError(
                    f"{self.store.root}: studies without a segmentation: "
                    f"{lacking[:5]}; pass label_key=<attrs column> or other studies"
                )
        else:
            lacking = [s for s, r in self._rows.items() if label_key not in (r["attrs"] or {})]
            if lacking:
                raise ValueError(
                    f"{self.store.root}: studies without attrs[{label_key!r}]: {lacking[:5]}"
                )
            self.classes = sorted({r["attrs"][label_key] for r in self._rows.values()}, key=str)
        if not self.studies:
            raise ValueError(f"{self.store.root}: no studies selected")

    def __getitem__(self, index: int) -> dict[str, Any]:
        sid = self.studies[index]
        row = self._rows[sid]
        shape = tuple(row["shape"])
        size = self.crop_size or shape
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        seg = self.store.label(sid) if self.label_key == "label" else None
        if self.crop_size is None:
            start = np.zeros(3, dtype=np.int64)
        elif seg is not None and rng.random() < self.foreground_fraction:
            fg = np.argwhere(np.asarray(seg) > 0)
            centre = fg[rng.integers(len(fg))] if len(fg) else np.array(shape) // 2
            start = np.asarray(centre) - np.asarray(size) // 2
        else:
            start = crop_box(shape, size, rng)
        box = [int(s) for s in start]  # read_crop takes ints (it applies int() to each anyway)
        image = np.zeros((len(self.modalities), *size), dtype=np.float32)
        present = np.zeros(len(self.modalities), dtype=bool)
        for c, mod in enumerate(self.modalities):
            if mod in row["modalities"]:
                read_crop(self.store.image(sid, mod), box, size, out=image[c])
                present[c] = True
        if seg is not None:
            label = torch.from_numpy(read_crop(seg, box, size).astype(np.int64))
        else:
            label = torch.tensor(self.classes.index(row["attrs"][self.label_key]))
        affine = np.asarray(row["affine"], dtype=np.float64)
        origin = affine[:3, :3] @ start + affine[:3, 3] - np.asarray(row["center_world"])
        return {
            "image": torch.from_numpy(image),
            "present": torch.from_numpy(present),
            "modality": torch.tensor([MODALITIES.index(m) for m in self.modalities]),
            "label": label,
            "template_origin": torch.tensor(origin, dtype=torch.float32),
            "spacing": torch.tensor(np.abs(np.diag(affine)[:3]), dtype=torch.float32),
            "study": sid,
        }

    @staticmethod
    def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack samples; whole volumes of different shapes are zero-padded to the largest."""
        return _collate(items, pad=True)
