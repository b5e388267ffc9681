"""Missing modalities: subsets of a task's modalities, and filling absent channels.

A downstream network takes the task's modalities as input channels in a fixed order. When a
study lacks one (or a robustness evaluation drops it on purpose) its channel is filled with
either the learned BrainMVP template of that modality, cropped at the anatomically matching
place and min-max scaled to [0, 1] (the paper's choice), or zeros (the usual baseline).

Templates live on a head-centred grid: the template coordinates (mm) of image voxel ``v`` are
``template_origin + v * spacing``, where ``template_origin`` is the head-centred position of the
crop's voxel (0, 0, 0) (see ``ARCHITECTURE.md``, sampler batch). :func:`template_crop` samples
the template volumes there with trilinear interpolation (``grid_sample``), which also covers crop
spacings different from the template's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmlib.modalities import MODALITY_INDEX, canonical

FILLS: tuple[str, ...] = ("template", "zero")


def modality_subsets(modalities: Sequence[str], min_size: int = 1) -> list[tuple[str, ...]]:
    """Every non-empty subset of a task's modalities, largest first, order kept inside a subset.

    Args:
        modalities: the task's modalities, e.g. ``["flair", "t1", "t1c", "t2"]``.
        min_size: smallest subset size. Defaults to 1.

    Returns:
        ``2**n - 1`` subsets for ``min_size=1`` (15 for four modalities), by decreasing size and
        then in the order of ``itertools.combinations``.

    Raises:
        ValueError: When a modality repeats or ``min_size`` is outside ``[1, n]``.

    Examples::

        >>> modality_subsets(["flair", "dwi"])
        [('flair', 'dwi'), ('flair',), ('dwi',)]
    """
    mods = tuple(modalities)
    if len(set(mods)) != len(mods):
        raise ValueError(f"modalities {list(mods)} repeat a name")
    if not 1 <= min_size <= len(mods):
        raise ValueError(f"min_size should be in [1, {len(mods)}], got {min_size}")
    out: list[tuple[str, ...]] = []
    for k in range(len(mods), min_size - 1, -1):
        out.extend(itertools.combinations(mods, k))
    return out


def template_crop(
    volumes: torch.Tensor,
    affine: np.ndarray | torch.Tensor,
    modality: Sequence[str] | Sequence[int],
    template_origin: torch.Tensor,
    size: Sequence[int],
    spacing: torch.Tensor | Sequence[float],
    scale: bool = True,
) -> torch.Tensor:
    """Template crops matching image crops, one batched trilinear gather.

    Args:
        volumes: template volumes ``(8, TX, TY, TZ)`` in :data:`mmlib.modalities.MODALITIES` order.
        affine: ``(4, 4)`` diagonal affine of the template grid (head-centred mm of each voxel).
        modality: one modality per crop, names or template indices, length B.
        template_origin: ``(B, 3)`` head-centred mm of crop voxel (0, 0, 0).
        size: crop size ``(X, Y, Z)``.
        spacing: ``(B, 3)`` or ``(3,)`` mm per crop voxel.
        scale: min-max scale each crop to [0, 1] (an all-constant crop gives zeros, not NaN).
            Defaults to True.

    Returns:
        ``(B, 1, X, Y, Z)`` float32, zero outside the template grid.
    """
    vol = volumes.detach().float()
    dev = vol.device
    aff = torch.as_tensor(np.asarray(affine, dtype=np.float64), dtype=torch.float32, device=dev)
    idx = torch.tensor(
        [m if isinstance(m, (int, np.integer)) else MODALITY_INDEX[canonical(str(m))] for m in modality],
        device=dev,
    )
    b = idx.shape[0]
    origin = template_origin.to(dev, torch.float32).reshape(b, 3)
    sp = torch.as_tensor(spacing, dtype=torch.float32, device=dev).reshape(-1, 3).expand(b, 3)
    axes = [torch.arange(n, device=dev, dtype=torch.float32) for n in size]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
    world = origin.view(b, 1, 1, 1, 3) + grid.unsqueeze(0) * sp.view(b, 1, 1, 1, 3)
    # template voxel index = (world - offset) / step, for a diagonal affine
    step = torch.diagonal(aff[:3, :3])
    offset = aff[:3, 3]
    vox = (world - offset) / step
    shape = torch.tensor(vol.shape[1:], device=dev, dtype=torch.float32)
    norm = 2.0 * vox / (shape - 1).clamp(min=1) - 1.0
    # grid_sample's last axis is (x, y, z) = (W, H, D) of an input laid out (D, H, W)
    src = vol[idx].unsqueeze(1)  # (B, 1, TX, TY, TZ) seen as (D=TX, H=TY, W=TZ)
    out = F.grid_sample(src, norm.flip(-1), mode="bilinear", padding_mode="zeros", align_corners=True)
    if scale:
        flat = out.flatten(1)
        lo = flat.min(1).values.view(b, 1, 1, 1, 1)
        hi = flat.max(1).values.view(b, 1, 1, 1, 1)
        rng = hi - lo
        out = torch.where(rng > 1e-8, (out - lo) / rng.clamp(min=1e-8), torch.zeros_like(out))
    return out


def fill_missing(
    image: torch.Tensor,
    present: torch.Tensor,
    modalities: Sequence[str],
    fill: str = "template",
    templates: tuple[torch.Tensor, np.ndarray | torch.Tensor] | None = None,
    template_origin: torch.Tensor | None = None,
    spacing: torch.Tensor | Sequence[float] | None = None,
) -> torch.Tensor:
    """Replace absent channels by the modality's template or by zeros.

    Args:
        image: ``(B, C, X, Y, Z)`` with channels in the order of ``modalities``.
        present: ``(B, C)`` bool, False where the channel is absent.
        modalities: C canonical modality names.
        fill: ``"template"`` or ``"zero"``. Defaults to "template".
        templates: ``(volumes (8, TX, TY, TZ), affine (4, 4))`` for template fill.
        template_origin: ``(B, 3)`` head-centred mm of voxel (0, 0, 0), for template fill.
        spacing: ``(B, 3)`` or ``(3,)`` mm per voxel, for template fill.

    Returns:
        A new ``(B, C, X, Y, Z)`` tensor; present channels are unchanged.

    Raises:
        ValueError: When ``fill`` is unknown, or template fill lacks templates or positions.
    """
    if fill not in FILLS:
        raise ValueError(f"fill should be one of {', '.join(FILLS)}, got {fill!r}")
    if image.ndim != 5 or present.shape != image.shape[:2] or len(modalities) != image.shape[1]:
        raise ValueError(
            f"image {tuple(image.shape)}, present {tuple(present.shape)} and {len(modalities)} modalities "
            "disagree; expected (B, C, X, Y, Z), (B, C) and C names"
        )
    out = image.clone()
    absent = ~present.bool()
    if not absent.any():
        return out
    if fill == "zero":
        out[absent] = 0.0
        return out
    if templates is None or template_origin is None or spacing is None:
        raise ValueError(
            "fill='template' needs templates=(volumes, affine), template_origin and spacing "
            "(a pre-trained checkpoint's templates); use fill='zero' for a model without templates"
        )
    volumes, affine = templates
    bs, cs = torch.nonzero(absent, as_tuple=True)
    origin = template_origin.reshape(-1, 3)[bs]
    sp = torch.as_tensor(spacing, dtype=torch.float32).reshape(-1, 3)
    sp = sp.expand(image.shape[0], 3)[bs] if sp.shape[0] in (1, image.shape[0]) else sp
    crops = template_crop(volumes, affine, [modalities[c] for c in cs.tolist()], origin, image.shape[2:], sp)
    out[bs, cs] = crops[:, 0].to(out.dtype).to(out.device)
    return out
