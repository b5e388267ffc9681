"""Template replacement: two copies of a study, some modalities replaced by their templates.

BrainMVP's supplement fine-tunes with *template replacement*: each training study is made into
two copies, in each of which a random set of modalities is replaced by the modality's template
(the same fill the test-time missing-modality path uses, :func:`mmlib.proxy.missing.fill_missing`),
and a consistency loss ties the two copies' deepest encoder features
(:func:`mmlib.engine.losses.consistency_loss`); both copies get the supervised loss. A network
so trained has seen template-filled channels before it meets a study that lacks a modality.

How many are replaced (``train.template_replacement = N``, the authors' ``num_mix``, 3 in their
script ``Downstream/dataset/transforms.py`` line 16): for each copy independently, a number ``n``
is drawn uniformly from ``0..N`` and capped at ``C - 1`` (at least one real modality stays), and
``n`` distinct channels are drawn uniformly (``Downstream/dataset/mix_transform.py`` lines
17-27). ``N = 0`` turns the method off.

The authors build the pair with ``np.repeat(image, 2, axis=0)`` and split the channels in halves
(``mix_transform.py`` lines 39-43, ``Downstream/trainer.py`` lines 19-20); ``np.repeat``
interleaves (``f, f, t1, t1, t1c, t1c, t2, t2``), so their first "copy" holds FLAIR twice and T1
twice and the second T1c and T2 twice: the two halves are different modality pairs, not two
copies of the study. mmlib makes what the paper describes: two copies of all C channels that
differ only where a modality was replaced.

Scratch networks have no learned templates; their test-time fill is zeros (``fill: auto``),
so their replacement is zeros too (modality dropout with a consistency loss): replacement always
uses the run's own fill.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmlib.proxy.missing import fill_missing
from mmlib.proxy.templates import Templates


def replacement_mask(
    shape: tuple[int, int], max_replaced: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Which channels of each study to replace by their templates (one copy).

    Args:
        shape: ``(B, C)``: studies and channels.
        max_replaced: N; per study ``n ~ uniform{0..N}``, capped at ``C - 1``, channels drawn
            without repetition. 0 replaces nothing.
        generator: the random generator. Defaults to None (the global one).

    Returns:
        ``(B, C)`` bool, True where the channel is replaced.

    Raises:
        ValueError: When ``max_replaced`` is negative.
    """
    b, c = int(shape[0]), int(shape[1])
    if max_replaced < 0:
        raise ValueError(f"train.template_replacement should be >= 0, got {max_replaced}")
    out = torch.zeros(b, c, dtype=torch.bool)
    if max_replaced == 0 or c < 2:
        return out
    counts = torch.randint(0, max_replaced + 1, (b,), generator=generator).clamp(max=c - 1)
    for i in range(b):
        order = torch.randperm(c, generator=generator)
        out[i, order[: int(counts[i])]] = True
    return out


def two_copies(
    image: torch.Tensor,
    present: torch.Tensor,
    modalities: Sequence[str],
    max_replaced: int,
    fill: str,
    templates: Templates | None,
    template_origin: torch.Tensor | None,
    spacing: torch.Tensor | Sequence[float] | None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two copies of each study, each with its own random modalities replaced by the fill.

    Channels absent from a study (``present`` False) are filled in both copies, as at test
    time; a replaced channel is filled even when present.

    Args:
        image: ``(B, C, X, Y, Z)``, channels in the order of ``modalities``.
        present: ``(B, C)`` bool.
        modalities: C canonical names.
        max_replaced: N of :func:`replacement_mask`.
        fill: ``"template"`` or ``"zero"`` (:func:`mmlib.proxy.missing.fill_missing`).
        templates: the templates, for template fill.
        template_origin: ``(B, 3)`` head-centred mm of voxel (0, 0, 0), for template fill.
        spacing: ``(B, 3)`` or ``(3,)`` mm per voxel, for template fill.
        generator: the random generator of the replacement draws. Defaults to None.

    Returns:
        ``(copies, replaced)``: ``copies (2B, C, X, Y, Z)`` (copy A of every study, then copy B,
        in batch order) and ``replaced (2B, C)`` bool, True where a present channel was
        replaced by the fill.
    """
    b, c = image.shape[:2]
    present = present.bool().cpu()
    replaced = torch.cat(
        [
            replacement_mask((b, c), max_replaced, generator),
            replacement_mask((b, c), max_replaced, generator),
        ]
    )
    replaced &= torch.cat([present, present])
    keep = torch.cat([present, present]) & ~replaced
    origin = None if template_origin is None else torch.cat([template_origin] * 2)
    sp = spacing
    if isinstance(spacing, torch.Tensor) and spacing.ndim == 2 and spacing.shape[0] == b:
        sp = torch.cat([spacing, spacing])
    both = torch.cat([image, image])
    if bool(keep.all()):
        return both, replaced
    return fill_missing(both, keep, modalities, fill, templates, origin, sp), replaced
