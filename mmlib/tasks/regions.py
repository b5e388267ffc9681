"""Label maps to evaluation regions: BraTS TC/WT/ET under both label conventions, and classes.

BraTS labels: 1 necrotic / non-enhancing tumour core (NCR), 2 peritumoural oedema (ED), and the
enhancing tumour (ET), which is label **4** up to BraTS 2021 (and BraTS 2018, the Decathlon
task) but label **3** from BraTS 2023 on (GLI, MEN, SSA, PED, MET). The regions scored by the
challenge are nested::

    ET = {ET}            TC = {1, ET}            WT = {1, 2, ET}

Using the wrong convention makes ET silently empty (every enhancing voxel is ignored and every
study scores Dice 1 or 0 on an empty region). :func:`detect_convention` therefore looks at the
label values, :func:`brats_regions` refuses labels that do not fit the stated convention, and
``"auto"`` refuses to guess when a label map has no enhancing voxel at all.

A task describes its outputs as a :class:`RegionSpec`: a name and a set of label values per
output channel, plus whether the channels are overlapping (multi-label, sigmoid; BraTS regions)
or exclusive classes (softmax; tissue labels).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch

CONVENTIONS: dict[str, int] = {"brats2021": 4, "brats2023": 3}
"""Label value of the enhancing tumour per BraTS convention."""


def detect_convention(values: Iterable[int], where: str = "labels") -> str:
    """The BraTS label convention that a set of label values follows.

    Args:
        values: label values seen (one volume, or the union over a dataset).
        where: what the values came from, quoted in errors. Defaults to "labels".

    Returns:
        ``"brats2021"`` (ET = 4) or ``"brats2023"`` (ET = 3).

    Raises:
        ValueError: When both 3 and 4 occur, when a value outside {0, 1, 2, 3, 4} occurs, or
            when neither 3 nor 4 occurs (no enhancing voxel: the convention cannot be told;
            pass ``convention="brats2021"`` or ``"brats2023"`` explicitly).

    Examples::

        >>> detect_convention([0, 1, 2, 4])
        'brats2021'
        >>> detect_convention({0, 1, 2, 3})
        'brats2023'
    """
    present = {int(v) for v in values}
    unknown = present - {0, 1, 2, 3, 4}
    if unknown:
        raise ValueError(
            f"{where}: label values {sorted(unknown)} are not BraTS labels (0, 1, 2, 3 or 4)"
        )
    if 3 in present and 4 in present:
        raise ValueError(
            f"{where}: both 3 and 4 occur; BraTS labels use one of them for enhancing tumour, "
            "not both"
        )
    if 4 in present:
        return "brats2021"
    if 3 in present:
        return "brats2023"
    raise ValueError(
        f"{where}: no enhancing-tumour voxel (neither 3 nor 4), so the label convention cannot be "
        "detected; pass convention='brats2021' (ET = 4) or 'brats2023' (ET = 3)"
    )


def _values(label: np.ndarray | torch.Tensor) -> set[int]:
    if isinstance(label, torch.Tensor):
        return {int(v) for v in torch.unique(label).tolist()}
    return {int(v) for v in np.unique(np.asarray(label))}


@overload
def brats_regions(label: np.ndarray, convention: str = "auto") -> np.ndarray: ...
@overload
def brats_regions(label: torch.Tensor, convention: str = "auto") -> torch.Tensor: ...
def brats_regions(
    label: np.ndarray | torch.Tensor, convention: str = "auto"
) -> np.ndarray | torch.Tensor:
    """Nested BraTS regions TC, WT, ET of a label map.

    Args:
        label: integer label map ``(X, Y, Z)`` or batched ``(B, X, Y, Z)`` / ``(B, 1, X, Y, Z)``.
        convention: ``"brats2021"`` (ET = 4), ``"brats2023"`` (ET = 3) or ``"auto"`` (detected
            from the values; an error when there is no enhancing voxel). Defaults to "auto".

    Returns:
        Boolean regions with a channel axis inserted before the spatial axes, order TC, WT, ET:
        ``(3, X, Y, Z)`` for a single map, ``(B, 3, X, Y, Z)`` for a batch (a singleton channel
        axis is replaced). Same array library as the input.

    Raises:
        ValueError: When the convention is unknown, when the labels hold values the convention
            does not define (e.g. 3 under brats2021: ET would be silently empty), or when
            ``"auto"`` cannot tell.
    """
    values = _values(label)
    if convention == "auto":
        convention = detect_convention(values)
    if convention not in CONVENTIONS:
        raise ValueError(
            f"unknown BraTS convention {convention!r}; choose brats2021, brats2023 or auto"
        )
    et = CONVENTIONS[convention]
    allowed = {0, 1, 2, et}
    if values - allowed:
        other = 3 if et == 4 else 4
        hint = (
            f" (label {other} is enhancing tumour in the other convention: with {convention} "
            "ET would be "
            "silently empty; use convention="
            f"'{'brats2023' if other == 3 else 'brats2021'}' or 'auto')"
            if other in values
            else ""
        )
        raise ValueError(
            f"labels hold {sorted(values - allowed)}, not defined under {convention}{hint}"
        )
    if label.ndim == 5:
        if label.shape[1] != 1:
            raise ValueError(
                f"label of shape {tuple(label.shape)}: expected one channel, (B, 1, X, Y, Z)"
            )
        label = label[:, 0]
    axis = 0 if label.ndim == 3 else 1
    tc = (label == 1) | (label == et)
    wt = tc | (label == 2)
    en = label == et
    if isinstance(label, torch.Tensor):
        return torch.stack([tc, wt, en], dim=axis)
    return np.stack([tc, wt, en], axis=axis)


@dataclass(frozen=True)
class RegionSpec:
    """What a segmentation network predicts and how it is scored.

    Attributes:
        names: one name per output channel (``("TC", "WT", "ET")``, ``("CSF", "GM", "WM")``).
        kind: ``"brats"`` (nested tumour regions from BraTS labels, sigmoid outputs),
            ``"binary"`` (one foreground region = label > 0, sigmoid) or ``"classes"``
            (exclusive labels 1..n, softmax over background plus n classes).
        convention: BraTS convention for ``kind="brats"`` (``brats2021``, ``brats2023`` or
            ``auto``). Defaults to "auto".
    """

    names: tuple[str, ...]
    kind: str
    convention: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in {"brats", "binary", "classes"}:
            raise ValueError(
                f"RegionSpec.kind should be brats, binary or classes, got {self.kind!r}"
            )
        if self.kind == "brats" and len(self.names) != 3:
            raise ValueError("RegionSpec(kind='brats') has exactly three regions TC, WT, ET")
        if self.kind == "binary" and len(self.names) != 1:
            raise ValueError("RegionSpec(kind='binary') has exactly one region")

    @property
    def out_channels(self) -> int:
        """Channels of the network output (softmax tasks add a background channel)."""
        return len(self.names) + (1 if self.kind == "classes" else 0)

    @property
    def sigmoid(self) -> bool:
        """True for multi-label (sigmoid) outputs, False for softmax classes."""
        return self.kind != "classes"

    def targets(self, label: torch.Tensor) -> torch.Tensor:
        """Region masks of a batch of label maps.

        Args:
            label: integer labels ``(B, 1, X, Y, Z)``.

        Returns:
            float ``(B, R, X, Y, Z)`` with R = ``len(names)`` (one mask per scored region).
        """
        if self.kind == "brats":
            return brats_regions(label.long(), self.convention).float()
        if self.kind == "binary":
            return (label > 0).float()
        classes = torch.arange(1, len(self.names) + 1, device=label.device).view(1, -1, 1, 1, 1)
        return (label.long() == classes).float()

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Binary region masks from network logits.

        Args:
            logits: ``(B, out_channels, X, Y, Z)``.

        Returns:
            float ``(B, R, X, Y, Z)`` masks in the order of :attr:`names`. For BraTS regions the
            nesting ET ⊆ TC ⊆ WT is enforced.
        """
        if self.sigmoid:
            masks = (logits > 0).float()
            if self.kind == "brats":
                tc, wt, et = masks[:, 0], masks[:, 1], masks[:, 2]
                wt = torch.maximum(wt, tc)
                tc = torch.maximum(tc, et)
                wt = torch.maximum(wt, tc)
                masks = torch.stack([tc, wt, et], dim=1)
            return masks
        cls = logits.argmax(dim=1, keepdim=True)
        return self.targets(cls)
