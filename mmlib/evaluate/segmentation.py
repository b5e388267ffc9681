"""Segmentation metrics: Dice and HD95 per region, over MONAI's metrics, with stated
empty-case rules.

Empty cases are scored as the BraTS challenges score them, so that a study without, say,
enhancing tumour neither disappears from the mean nor yields NaN:

========================  ======================  ==================================
ground truth / prediction  Dice                    HD95
========================  ======================  ==================================
both non-empty             MONAI DiceMetric        MONAI HausdorffDistanceMetric (95th)
ground truth empty,        1.0                     0.0
prediction empty
exactly one of them empty  0.0                     ``empty_distance`` (default: the
                                                   diagonal of the volume in mm; BraTS
                                                   uses 373.13 mm, the diagonal of its
                                                   240×240×155 1 mm grid)
========================  ======================  ==================================

Dice comes from :class:`monai.metrics.DiceMetric` with ``ignore_empty=False`` (which implements
the first two empty rules); HD95 from :class:`monai.metrics.HausdorffDistanceMetric` with
``percentile=95`` in millimetres (``spacing``), its NaN/inf for empty masks replaced by the rule.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import cast

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} should both be "
            "(B, R, X, Y, Z) binary masks"
        )


def dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice per study and region.

    Args:
        pred: binary masks ``(B, R, X, Y, Z)``.
        target: binary masks ``(B, R, X, Y, Z)``.

    Returns:
        ``(B, R)`` float Dice, empty cases scored as in the module docstring.
    """
    _check(pred, target)
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    return cast(torch.Tensor, metric(pred.bool().float(), target.bool().float())).float()


def hd95(
    pred: torch.Tensor,
    target: torch.Tensor,
    spacing: Sequence[float] | float = 1.0,
    empty_distance: float | None = None,
) -> torch.Tensor:
    """95th-percentile Hausdorff distance (mm) per study and region.

    Args:
        pred: binary masks ``(B, R, X, Y, Z)``.
        target: binary masks ``(B, R, X, Y, Z)``.
        spacing: voxel size in mm (one value or one per axis). Defaults to 1.0.
        empty_distance: distance given when exactly one of the two masks is empty. Defaults to
            None, the diagonal of the volume in mm.

    Returns:
        ``(B, R)`` float distances, empty cases scored as in the module docstring.
    """
    _check(pred, target)
    sp = [float(spacing)] * 3 if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    if empty_distance is None:
        empty_distance = math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape[2:], sp)))
    p, t = pred.bool(), target.bool()
    p_any = p.flatten(2).any(-1)
    t_any = t.flatten(2).any(-1)
    out = torch.zeros(p.shape[:2], dtype=torch.float32)
    both = p_any & t_any
    out[p_any ^ t_any] = float(empty_distance)
    if both.any():
        metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = cast(torch.Tensor, metric(p.float(), t.float(), spacing=sp)).float().cpu()
        out[both] = values[both]
    return out


def segmentation_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    names: Sequence[str],
    spacing: Sequence[float] | float = 1.0,
    with_hd95: bool = True,
) -> list[dict[str, float]]:
    """Dice and HD95 of every study and region as flat records.

    Args:
        pred: binary masks ``(B, R, X, Y, Z)``.
        target: binary masks ``(B, R, X, Y, Z)``.
        names: R region names.
        spacing: voxel size in mm. Defaults to 1.0.
        with_hd95: also compute HD95 (slower). Defaults to True.

    Returns:
        One dict per study: ``dice_<name>``, ``hd95_<name>`` per region and ``dice_mean``.
    """
    if len(names) != pred.shape[1]:
        raise ValueError(f"{len(names)} region names for {pred.shape[1]} channels")
    d = dice(pred, target)
    h = hd95(pred, target, spacing) if with_hd95 else None
    rows = []
    for b in range(pred.shape[0]):
        row = {f"dice_{n}": float(d[b, r]) for r, n in enumerate(names)}
        row["dice_mean"] = float(d[b].mean())
        if h is not None:
            row.update({f"hd95_{n}": float(h[b, r]) for r, n in enumerate(names)})
        rows.append(row)
    return rows
