"""Block masks and the two BrainMVP fills, batched on the batch's device.

BrainMVP (Rui et al., CVPR 2025) splits each crop into cubes (8³ voxels at paper scale), keeps a
random ``1 - mask_rate`` of them and *replaces* every other cube: from the learned template of
the same modality (view A, :func:`template_fill`) or from the same cube of another modality of
the same study (view B, :func:`cross_modal_fill`). Everything here works on a whole batch at
once, with no Python loop over studies or blocks, and draws its randomness from an optional
:class:`torch.Generator` so that a figure or a test is reproducible.

Conventions: a mask is ``bool (B, 1, X, Y, Z)``, ``True`` where a voxel is *masked* (replaced);
``mask_rate`` is the fraction of blocks masked, exactly ``floor(n_blocks * (1 - mask_rate))``
blocks are kept per study. Spatial sizes need not be multiples of the block size: the last
block along an axis is then partial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, overload

import torch
from torch import Tensor


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """``value`` as three positive ints; one clear error otherwise."""
    vals = (int(value),) * 3 if isinstance(value, (int, float)) else tuple(int(v) for v in value)
    if len(vals) != 3 or min(vals) < 1:
        raise ValueError(f"{name} should be one or three positive ints, got {value!r}.")
    return vals


def rand(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform [0, 1) draws on ``device`` from ``generator`` (which may live on another device).

    The draw happens on the generator's device and is moved to ``device``, so a CPU generator
    drives a CUDA batch reproducibly.
    """
    gen_device = generator.device if generator is not None else device
    out = torch.rand(tuple(shape), generator=generator, device=gen_device)
    return out.to(device) if device is not None else out


def n_blocks(spatial_size: Sequence[int], block_size: int | Sequence[int]) -> tuple[int, int, int]:
    """Number of blocks along each axis (the last one may be partial)."""
    size = _triple(tuple(spatial_size), "spatial_size")
    block = _triple(block_size, "block_size")
    return tuple(math.ceil(s / b) for s, b in zip(size, block))  # type: ignore[return-value]


def n_kept(spatial_size: Sequence[int], block_size: int | Sequence[int], mask_rate: float) -> int:
    """Blocks kept (not masked) per study: ``floor(n_blocks * (1 - mask_rate))``."""
    total = math.prod(n_blocks(spatial_size, block_size))
    # a tiny epsilon so that e.g. 0.8 of 125 blocks keeps 25, not 24, despite float rounding
    return int(math.floor(total * (1.0 - mask_rate) + 1e-9))


@overload
def block_mask(
    batch_size: int,
    spatial_size: Sequence[int],
    block_size: int | Sequence[int] = 8,
    mask_rate: float = 0.8,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    return_weight: Literal[False] = False,
) -> Tensor: ...


@overload
def block_mask(
    batch_size: int,
    spatial_size: Sequence[int],
    block_size: int | Sequence[int] = 8,
    mask_rate: float = 0.8,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    *,
    return_weight: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@overload
def block_mask(
    batch_size: int,
    spatial_size: Sequence[int],
    block_size: int | Sequence[int],
    mask_rate: float,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    return_weight: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@overload
def block_mask(
    batch_size: int,
    spatial_size: Sequence[int],
    block_size: int | Sequence[int] = 8,
    mask_rate: float = 0.8,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    return_weight: bool = False,
) -> Tensor | tuple[Tensor, Tensor]: ...


def block_mask(
    batch_size: int,
    spatial_size: Sequence[int],
    block_size: int | Sequence[int] = 8,
    mask_rate: float = 0.8,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    return_weight: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Random block masks for a batch, one independent draw per study.

    Args:
        batch_size: number of studies ``B``.
        spatial_size: crop size ``(X, Y, Z)``.
        block_size: cube edge in voxels (or one per axis). Defaults to 8.
        mask_rate: fraction of blocks masked, in [0, 1]. Defaults to 0.8 (the authors' script;
            the paper's text says 0.875).
        generator: source of randomness. Defaults to None (torch's global generator).
        device: device of the returned mask. Defaults to None (the generator's, else CPU).
        return_weight: also return the mask as ``float32`` 0/1 weights, the fastest input of
            :func:`fill` (see :func:`block_weight`: a compact block form when the sizes are
            multiples of the block). Defaults to False.

    Returns:
        ``bool (B, 1, X, Y, Z)``, ``True`` where masked. Exactly
        ``floor(n_blocks * (1 - mask_rate))`` blocks are ``False`` in each study. With
        ``return_weight``, the pair ``(mask, weight)``, ``weight`` from :func:`block_weight`
        (for the fills; read voxels from ``mask``).

    Raises:
        ValueError: When ``mask_rate`` is outside [0, 1] or a size is not positive.

    Examples::

        >>> m = block_mask(2, (16, 16, 16), 8, 0.75, torch.Generator().manual_seed(0))
        >>> m.shape, int((~m[0]).sum()) // 8**3
        (torch.Size([2, 1, 16, 16, 16]), 2)
    """
    if not 0.0 <= float(mask_rate) <= 1.0:
        raise ValueError(f"mask_rate should be in the range [0, 1], got {mask_rate}.")
    if batch_size < 1:
        raise ValueError(f"batch_size should be positive, got {batch_size}.")
    size = _triple(tuple(spatial_size), "spatial_size")
    block = _triple(block_size, "block_size")
    grid = n_blocks(size, block)
    total = math.prod(grid)
    keep = n_kept(size, block, mask_rate)
    if device is None and generator is not None:
        device = generator.device
    scores = rand((batch_size, total), generator, device)
    # the `keep` lowest scores of each row are kept: one partial selection for the whole batch
    # (topk: the same set as the first `keep` of an argsort, 15x faster on CPU)
    masked = torch.ones(batch_size, total, dtype=torch.bool, device=scores.device)
    if keep > 0:
        kept = scores.topk(keep, dim=1, largest=False, sorted=False).indices
        masked.scatter_(1, kept, False)
    blocks = masked.view(batch_size, *grid)
    mask = expand_blocks(blocks, block, size)
    if return_weight:
        return mask, block_weight(blocks, block, size)
    return mask


def block_weight(
    blocks: Tensor,
    block_size: int | Sequence[int],
    spatial_size: Sequence[int],
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fill weights of a block-level mask, in the compact form :func:`fill` broadcasts.

    When every size is a multiple of the block, the weights are ``(B, 1, gx, bx, gy, by, gz,
    bz)``, the block grid written along the innermost axis only and *expanded* (stride 0, no
    copy) along ``bx`` and ``by``: 1/(bx*by) of the voxels in memory (166 kB instead of 10.6 MB
    for three 96³ crops in 8³ blocks). :func:`fill` views the images the same way (no copy)
    and one :func:`torch.lerp` reads the weights, as fast as voxel weights and without writing
    them. Otherwise (partial last blocks) the voxel weights ``(B, 1, X, Y, Z)``. Either way
    ``weight.reshape(B, 1, X, Y, Z)`` gives the voxel weights.

    Args:
        blocks: ``bool (B, gx, gy, gz)``, ``True`` where a block is masked.
        block_size: cube edge in voxels (or one per axis).
        spatial_size: crop size ``(X, Y, Z)``.
        dtype: floating type of the weights. Defaults to ``float32``.

    Returns:
        0/1 weights, 1 where masked: ``(B, 1, gx, bx, gy, by, gz, bz)`` or ``(B, 1, X, Y, Z)``.
    """
    bsz, gx, gy, gz = blocks.shape
    block = _triple(block_size, "block_size")
    size = _triple(tuple(spatial_size), "spatial_size")
    if any(s != g * b for s, g, b in zip(size, (gx, gy, gz), block)):
        return expand_blocks(blocks, block, size, dtype=dtype)
    bx, by, bz = block
    w = blocks.to(dtype).view(bsz, 1, gx, 1, gy, 1, gz, 1)
    w = w.expand(bsz, 1, gx, 1, gy, 1, gz, bz).contiguous()
    return w.expand(bsz, 1, gx, bx, gy, by, gz, bz)


def _blocked(weight: Tensor, *images: Tensor) -> list[Tensor] | None:
    """``images`` ``(B, C, X, Y, Z)`` viewed as ``(B, C, gx, bx, gy, by, gz, bz)`` to match the
    block-form ``weight`` of :func:`block_weight`; None for voxel weights or bool masks."""
    if weight.dim() != 8:
        return None
    _, _, gx, bx, gy, by, gz, bz = weight.shape
    out = []
    for img in images:
        bsz, c, sx, sy, sz = img.shape
        if (sx, sy, sz) != (gx * bx, gy * by, gz * bz):
            raise ValueError(
                f"fill: block weights {tuple(weight.shape)} do not tile images of shape "
                f"{tuple(img.shape)}; build the weights for this crop size (block_weight)."
            )
        out.append(img.reshape(bsz, c, gx, bx, gy, by, gz, bz))
    return out


def expand_blocks(
    blocks: Tensor,
    block_size: int | Sequence[int],
    spatial_size: Sequence[int],
    dtype: torch.dtype = torch.bool,
) -> Tensor:
    """Block-level mask ``(B, gx, gy, gz)`` to voxels ``(B, 1, X, Y, Z)`` of ``dtype``.

    Expands one axis at a time (innermost first; bytes for a bool result), which is several
    times faster than a single 7-D expand-and-copy.
    """
    bsz, gx, gy, gz = blocks.shape
    bx, by, bz = _triple(block_size, "block_size")
    sx, sy, sz = _triple(tuple(spatial_size), "spatial_size")
    u = blocks.to(torch.uint8 if dtype == torch.bool else dtype)
    u = u.unsqueeze(-1).expand(bsz, gx, gy, gz, bz).reshape(bsz, gx, gy, gz * bz)[..., :sz]
    u = u.unsqueeze(3).expand(bsz, gx, gy, by, sz).reshape(bsz, gx, gy * by, sz)[:, :, :sy]
    u = u.unsqueeze(2).expand(bsz, gx, bx, sy, sz).reshape(bsz, gx * bx, sy, sz)[:, :sx]
    u = u.contiguous()
    return (u.view(torch.bool) if dtype == torch.bool else u).unsqueeze(1)


def fill(target: Tensor, source: Tensor, mask: Tensor) -> Tensor:
    """Replace the masked voxels of ``target`` by those of ``source``.

    Args:
        target: ``(B, 1, X, Y, Z)`` images.
        source: ``(B, 1, X, Y, Z)`` (or broadcastable) replacement values.
        mask: ``bool (B, 1, X, Y, Z)``, ``True`` where replaced, or the same as 0/1 float
            weights (faster: a single :func:`torch.lerp`, exact for weights 0 and 1), voxel
            weights or the block form of :func:`block_weight`.

    Returns:
        ``(B, 1, X, Y, Z)``: ``source`` where masked, ``target`` elsewhere. Gradients flow to
        ``source`` only through masked voxels.
    """
    if not mask.is_floating_point():
        return torch.where(mask, source, target)
    source = source.expand_as(target) if source.shape != target.shape else source
    weight = mask.to(target.dtype)
    if torch.is_grad_enabled() and (target.requires_grad or source.requires_grad):
        if not weight.requires_grad:
            return _Fill01.apply(target, source, weight)
    return _lerp(target, source, weight)


def _lerp(target: Tensor, source: Tensor, weight: Tensor, out: Tensor | None = None) -> Tensor:
    """:func:`torch.lerp` with voxel or block weights (:func:`block_weight`); ``out`` may be
    ``source`` (contiguous)."""
    views = _blocked(weight, target, source)
    if views is None:
        return torch.lerp(target, source, weight, out=out)
    if out is None:
        return torch.lerp(views[0], views[1], weight).view(target.shape)
    torch.lerp(views[0], views[1], weight, out=out.view(views[1].shape))
    return out


class _Fill01(torch.autograd.Function):
    """``lerp(target, source, weight)`` for 0/1 weights that autograd does not track: the
    gradients of :func:`torch.lerp` (``grad * (1 - weight)``, ``grad * weight``) from the
    weights alone, so that the graph keeps neither image (``LerpBackward`` saves both: a
    view's 10.6 MB template crop alive until the backward pass, for three 96³ crops)."""

    @staticmethod
    def forward(ctx: Any, target: Tensor, source: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(weight)
        return _lerp(target, source, weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        (weight,) = ctx.saved_tensors
        grad_target, grad_source = fill_grads(
            grad, weight, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return grad_target, grad_source, None


def fill_grads(
    grad: Tensor, weight: Tensor, to_target: bool, to_source: bool
) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of a 0/1 fill ``lerp(target, source, weight)`` from its output's
    ``grad (B, 1, X, Y, Z)``: ``grad * (1 - weight)`` to the target, ``grad * weight`` to the
    source (None where not wanted); voxel or block weights (:func:`block_weight`)."""
    g = _blocked(weight, grad)
    g8 = grad if g is None else g[0]
    grad_target = (g8 * (1 - weight)).view(grad.shape) if to_target else None
    grad_source = (g8 * weight).view(grad.shape) if to_source else None
    return grad_target, grad_source


def _fill_over_source(target: Tensor, source: Tensor, mask: Tensor) -> Tensor:
    """:func:`fill` written into ``source``, a fresh temporary of the caller, when autograd
    records nothing: the same kernel and numbers, one full-size allocation (fresh pages to fault
    in) fewer."""
    tracked = torch.is_grad_enabled() and (
        target.requires_grad or source.requires_grad or mask.requires_grad
    )
    if (
        tracked
        or source.shape != target.shape
        or source.dtype != target.dtype
        or not source.is_contiguous()
    ):
        return fill(target, source, mask)
    if not mask.is_floating_point():
        return torch.where(mask, source, target, out=source)
    return _lerp(target, source, mask.to(target.dtype), out=source)


def template_fill(target: Tensor, template_crop: Tensor, mask: Tensor) -> Tensor:
    """View A: masked blocks of ``target`` filled from the same modality's template crop.

    Args:
        target: ``(B, 1, X, Y, Z)`` the target modality of each study.
        template_crop: ``(B, 1, X, Y, Z)`` the anatomically matching crop of that modality's
            template (see :meth:`mmlib.proxy.templates.Templates.crop`).
        mask: ``bool (B, 1, X, Y, Z)``, or fill weights (see :func:`fill`).

    Returns:
        ``(B, 1, X, Y, Z)`` the filled view.
    """
    return fill(target, template_crop, mask)


def zero_fill(target: Tensor, mask: Tensor) -> Tensor:
    """Masked-image-modelling baseline (SimMIM style): masked voxels set to 0."""
    if mask.is_floating_point():
        views = _blocked(mask, target)
        if views is not None:
            keep = 1 - mask[:, :, :, :1, :, :1].to(target.dtype)  # on the stored weights only
            return (views[0] * keep).view(target.shape)
        return target * (1 - mask.to(target.dtype))
    return fill(target, torch.zeros((), dtype=target.dtype, device=target.device), mask)


def noise_fill(target: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Masked-image-modelling baseline: masked voxels replaced by uniform [0, 1) noise."""
    noise = rand(target.shape, generator, target.device).to(target.dtype)
    return fill(target, noise, mask)


def sample_slot(
    present: Tensor,
    generator: torch.Generator | None = None,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Pick one present modality slot per study, uniformly, in one batched draw.

    Args:
        present: ``bool (B, K)`` which slots of each study hold a modality.
        generator: source of randomness. Defaults to None.
        exclude: ``int64 (B,)`` a slot per study that may not be chosen (the target, for the
            cross-modal source). Defaults to None.

    Returns:
        ``(slot int64 (B,), found bool (B,))``; where no slot is eligible, ``slot`` is -1 and
        ``found`` is False.
    """
    allowed = present.clone()
    if exclude is not None:
        rows = torch.arange(present.shape[0], device=present.device)
        allowed[rows, exclude.clamp(min=0)] &= exclude < 0
    scores = rand(present.shape, generator, present.device)
    scores = torch.where(allowed, scores, torch.full_like(scores, -1.0))
    slot = scores.argmax(dim=1)
    found = allowed.any(dim=1)
    return torch.where(found, slot, torch.full_like(slot, -1)), found


def select_slot(image: Tensor, slot: Tensor) -> Tensor:
    """``image[b, slot[b]]`` for every study: ``(B, K, X, Y, Z), (B,) -> (B, 1, X, Y, Z)``.

    Slots of -1 give zeros.
    """
    bsz, k = image.shape[:2]
    rows = torch.arange(bsz, device=image.device)
    flat = image.reshape(bsz * k, -1).index_select(0, rows * k + slot.clamp(min=0))
    out = flat.view(bsz, 1, *image.shape[2:])
    if bool((slot < 0).any()):
        out = out * (slot >= 0).view(-1, 1, 1, 1, 1).to(out.dtype)
    return out


def cross_modal_fill(
    image: Tensor,
    present: Tensor,
    target_slot: Tensor,
    mask: Tensor,
    fallback: Tensor | None = None,
    generator: torch.Generator | None = None,
    target: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """View B: masked blocks of the target filled with the same blocks of another modality.

    For each study a source slot ``n != m`` is drawn uniformly among the present modalities.
    A study with only its target present cannot be filled cross-modally: it falls back to
    ``fallback`` (the template crop; zeros when None) and is reported in the returned flags.

    Args:
        image: ``(B, K, X, Y, Z)`` all modalities of each study (zeros where absent).
        present: ``bool (B, K)``.
        target_slot: ``int64 (B,)`` slot of the target modality ``m`` of each study.
        mask: ``bool (B, 1, X, Y, Z)``, or fill weights (see :func:`fill`).
        fallback: ``(B, 1, X, Y, Z)`` values used for single-modality studies. Defaults to None.
        generator: source of randomness. Defaults to None.
        target: ``(B, 1, X, Y, Z)`` the already selected target, to save a copy. Defaults to
            None (selected from ``image``).

    Returns:
        ``(view (B, 1, X, Y, Z), source_slot int64 (B,), fell_back bool (B,))``;
        ``source_slot`` is -1 where the study fell back.

    Raises:
        ValueError: When the shapes of ``image``, ``present`` and ``target_slot`` disagree.
    """
    if image.dim() != 5 or present.shape != image.shape[:2] or target_slot.shape != image.shape[:1]:
        raise ValueError(
            "cross_modal_fill: image should be (B, K, X, Y, Z), present (B, K) and target_slot "
            f"(B,), got {tuple(image.shape)}, {tuple(present.shape)}, {tuple(target_slot.shape)}."
        )
    if target is None:
        target = select_slot(image, target_slot)
    source_slot, found = sample_slot(present, generator, exclude=target_slot)
    tracked = torch.is_grad_enabled() and (
        image.requires_grad or target.requires_grad or mask.requires_grad
    )
    if (
        bool(found.all())
        and not tracked
        and mask.is_floating_point()
        and target.is_contiguous()
        and target.dtype == image.dtype
    ):
        # each study's source read in place from ``image``: no gathered copy of the sources
        weight = mask.to(target.dtype)
        out = torch.empty_like(target)
        for b, src in enumerate(source_slot.tolist()):
            row = slice(b, b + 1)
            _lerp(target[row], image[row, src : src + 1], weight[row], out=out[row])
        return out, source_slot, ~found
    source = select_slot(image, source_slot)
    if not bool(found.all()):
        if fallback is None:
            fallback = torch.zeros_like(target)
        source = torch.where(found.view(-1, 1, 1, 1, 1), source, fallback.to(source.dtype))
    # `source` is this call's own gather (or blend): the view may overwrite it
    return _fill_over_source(target, source, mask), source_slot, ~found


def modality_minmax(volumes: Tensor, modality: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum and maximum of the whole volume of each study's modality, once per modality.

    The statistics of the ``global`` template scaling (min-max the whole template of a
    modality, then crop): one :func:`torch.aminmax` over the whole volume per *distinct*
    modality of the batch, shared by the studies of that modality. On CPU a whole-volume
    reduction is ~15x faster than ``amin``/``amax`` along ``dim=1`` of the ``(M, -1)`` view
    (1.5 ms against 21 ms for all eight 192 x 228 x 192 templates, one thread), and the
    modalities absent from the batch are not read at all. Values and gradients equal those
    of ``volumes.flatten(1).amin(1)[modality]`` and ``amax`` (ties share the gradient evenly).

    Args:
        volumes: ``(M, X, Y, Z)`` the template volumes (any trailing shape).
        modality: ``int64 (B,)`` the volume of each study, in ``[0, M)``.

    Returns:
        ``(lo (B,), hi (B,))`` in ``volumes``' dtype, differentiable with respect to
        ``volumes``.

    Raises:
        ValueError: When ``modality`` is empty or out of range.
    """
    idx = modality.to(volumes.device).long().view(-1)
    n = volumes.shape[0]
    if idx.numel() == 0 or bool(((idx < 0) | (idx >= n)).any()):
        raise ValueError(
            f"modality_minmax: modality should be a non-empty list of indices in [0, {n}), "
            f"got {modality.tolist()}."
        )
    distinct = torch.unique(idx)  # sorted; a loop over modalities (<= M), not over studies
    stats = [torch.aminmax(volumes[m]) for m in distinct.tolist()]
    lo = torch.stack([s.min for s in stats])
    hi = torch.stack([s.max for s in stats])
    pos = torch.searchsorted(distinct, idx)
    return lo.index_select(0, pos), hi.index_select(0, pos)
