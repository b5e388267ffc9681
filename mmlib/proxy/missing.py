"""Missing modalities: subsets of a task's modalities, and filling absent channels.

A downstream network takes the task's modalities as input channels in a fixed order. When a
study lacks one (or a robustness evaluation drops it on purpose) its channel is filled with
either the learned BrainMVP template of that modality, cropped at the anatomically matching
place and min-max scaled to [0, 1] by the rule the templates were trained with (the paper's
choice), or zeros (the usual baseline).

Templates live on a head-centred grid: the template coordinates (mm) of image voxel ``v`` are
``template_origin + v * spacing``, where ``template_origin`` is the head-centred position of the
crop's voxel (0, 0, 0) (see ``ARCHITECTURE.md``, sampler batch). :func:`fill_missing` crops
the templates there with :meth:`mmlib.proxy.templates.Templates.crop` (the one template crop),
asking for trilinear interpolation (crop origins of whole volumes need not fall on the template
grid), and scales them with the one template scaling
(:func:`mmlib.proxy.templates.scale_template_crop`) by the templates' own rule
(:attr:`~mmlib.proxy.templates.Templates.scaling`, which
:func:`~mmlib.proxy.templates.load_templates` reads from the checkpoint): ``global`` (the
whole template's range, as in pre-training) or ``crop`` (the range of the crop's voxels inside
the template grid). The official downstream code feeds raw template values; a network
pre-trained on scaled fills sees the same scale here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from mmlib.modalities import MODALITY_INDEX, canonical
from mmlib.proxy.templates import Templates

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


def fill_missing(
    image: torch.Tensor,
    present: torch.Tensor,
    modalities: Sequence[str],
    fill: str = "template",
    templates: Templates | None = None,
    template_origin: torch.Tensor | None = None,
    spacing: torch.Tensor | Sequence[float] | None = None,
) -> torch.Tensor:
    """Replace absent channels by the modality's template or by zeros.

    Args:
        image: ``(B, C, X, Y, Z)`` with channels in the order of ``modalities``.
        present: ``(B, C)`` bool, False where the channel is absent.
        modalities: C canonical modality names.
        fill: ``"template"`` or ``"zero"``. Defaults to "template".
        templates: the learned templates (e.g. :func:`mmlib.proxy.templates.load_templates`
            of a pre-training checkpoint), for template fill; scaled by their
            :attr:`~mmlib.proxy.templates.Templates.scaling`.
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
            f"image {tuple(image.shape)}, present {tuple(present.shape)} and "
            f"{len(modalities)} modalities "
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
            "fill='template' needs templates (a Templates), template_origin and spacing "
            "(a pre-trained checkpoint's templates); use fill='zero' for a model without templates"
        )
    bs, cs = torch.nonzero(absent, as_tuple=True)
    origin = template_origin.reshape(-1, 3)[bs]
    sp = torch.as_tensor(spacing, dtype=torch.float32).reshape(-1, 3)
    sp = sp.expand(image.shape[0], 3)[bs] if sp.shape[0] in (1, image.shape[0]) else sp
    index = torch.tensor([MODALITY_INDEX[canonical(modalities[c])] for c in cs.tolist()])
    with torch.no_grad():  # the templates are inputs here, not trained
        crops = templates.crop(index, origin, tuple(image.shape[2:]), sp, resample="trilinear")
    out[bs, cs] = crops[:, 0].to(out.dtype).to(out.device)
    return out
