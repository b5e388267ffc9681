"""Learnable modality templates in a head-centred template space (BrainMVP view A).

BrainMVP (Rui et al., CVPR 2025) keeps one full-head volume ``T_m`` per modality, initialised to
zeros and learned only through the reconstruction loss of view A: the masked cubes of a crop of
modality ``m`` are filled from ``T_m`` at the anatomically matching position, min-max scaled to
[0, 1] where it is used. The released training code exports these templates with an identity
affine, so they do not overlay anything; here the template grid is a head-centred world frame
(mm, origin at the head's foreground centre, RAS axes), the affine is the true one, and the
sampler's ``template_origin`` (head-centred mm of crop voxel (0, 0, 0)) locates every crop.

Scaling (:func:`scale_template_crop`, the one rule used by pre-training, the missing-modality
fill and the viewers), ``objective.template_scaling``:

- ``"global"``: min-max the *whole* template of a modality, then crop (the official code,
  ``utils/ops.py`` lines 81-83 of github shaohao011/BrainMVP at a466bb2): a template voxel has
  one value wherever it is used, so the template's low-frequency anatomy is learnable;
- ``"crop"``: min-max each crop over the voxels it fills (the view's masked voxels; every voxel
  of the crop inside the grid for a fill), so each fill spans exactly [0, 1] whatever anatomy
  lies under it.

Examples::

    >>> t = Templates(spacing=4.0)
    >>> t.volumes.shape
    torch.Size([8, 48, 57, 48])
    >>> c = t.crop(torch.tensor([1]), torch.zeros(1, 3), (8, 8, 8))
    >>> c.shape, float(c.abs().sum())
    (torch.Size([1, 1, 8, 8, 8]), 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmlib.modalities import MODALITIES, canonical
from mmlib.proxy.masking import _lerp, fill, fill_grads, modality_minmax

DEFAULT_EXTENT_MM: tuple[float, float, float] = (192.0, 228.0, 192.0)
"""A box (mm) that holds any adult head, centred at the head's centre."""

RELEASED_SHAPE: tuple[int, int, int, int] = (8, 240, 240, 155)
"""Shape of the BrainMVP authors' released ``rep_template`` (SRI24/BraTS grid, 1 mm)."""

TEMPLATE_SCALINGS: tuple[str, ...] = ("global", "crop")
"""The template scaling rules (see the module docstring); ``global`` is the official one."""

LEGACY_SCALING = "crop"
"""The scaling of checkpoints that record none (mmlib before ``objective.template_scaling``)."""


def check_scaling(scaling: str, where: str = "template_scaling") -> str:
    """``scaling`` if it is one of :data:`TEMPLATE_SCALINGS`.

    Raises:
        ValueError: When it is not, naming ``where`` and the known rules.
    """
    if scaling not in TEMPLATE_SCALINGS:
        raise ValueError(
            f"{where}: unknown template scaling {scaling!r}; use one of "
            f"{', '.join(TEMPLATE_SCALINGS)}"
        )
    return scaling


def scaling_of(meta: dict[str, Any] | None) -> str:
    """The template scaling a pre-training checkpoint's ``meta.json`` records.

    Reads ``objective.template_scaling``. An mmlib run that records an objective without it was
    trained with :data:`LEGACY_SCALING` (per-crop scaling); a checkpoint with no objective at all
    (the authors' released weights, imported) used the official rule, ``global``.
    """
    objective = (meta or {}).get("objective")
    if not isinstance(objective, dict):
        return "global"
    return check_scaling(
        str(objective.get("template_scaling", LEGACY_SCALING)), "meta.json objective"
    )


def _vec3(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    vals = (
        (float(value),) * 3 if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    )
    if len(vals) != 3 or min(vals) <= 0:
        raise ValueError(f"{name} should be one or three positive numbers, got {value!r}.")
    return vals


def _tree_reduce(
    t: Tensor, op: Callable[..., Tensor], dims: Sequence[int], overwrite: bool = False
) -> Tensor:
    """Reduce ``dims`` of ``t`` to size 1 by pairwise ``op`` on halves (fast on CPU and GPU).

    With ``overwrite`` (``t`` is the caller's temporary) every step writes into the first half
    of ``t`` instead of a new tensor: the same values, no further allocation.
    """
    for d in dims:
        while t.shape[d] > 1:
            n = t.shape[d]
            h = n // 2
            first = t.narrow(d, 0, h)
            head = (
                op(first, t.narrow(d, h, h), out=first)
                if overwrite
                else op(first, t.narrow(d, h, h))
            )
            if n % 2:
                last = t.narrow(d, n - 1, 1)
                head = op(head, last, out=head) if overwrite else op(head, last)
            t = head
    return t


def block_minmax(crop: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Minimum and maximum of every ``block``³ cube: ``(B, 1, X, Y, Z) -> 2 × (B, gx, gy, gz)``.

    The sizes must be multiples of ``block``. Pairwise reductions over the block axes, outermost
    first, so that most of the work runs on long contiguous rows.
    """
    bsz = crop.shape[0]
    gx, gy, gz = (s // block for s in crop.shape[2:])
    v = crop.reshape(bsz, gx, block, gy, block, gz, block)
    h = block // 2
    if block > 1:
        a, b = v.narrow(2, 0, h), v.narrow(2, h, h)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        if block % 2:
            last = v.narrow(2, block - 1, 1)
            lo, hi = torch.minimum(lo, last), torch.maximum(hi, last)
    else:
        lo = hi = v
    # lo and hi are new tensors when block > 1: reduced in place unless autograd records them
    own = block > 1 and not (torch.is_grad_enabled() and crop.requires_grad)
    lo = _tree_reduce(lo, torch.minimum, (2, 4, 6), own).reshape(bsz, gx, gy, gz)
    hi = _tree_reduce(hi, torch.maximum, (2, 4, 6), own).reshape(bsz, gx, gy, gz)
    return lo, hi


def minmax_scale(
    crop: Tensor,
    where: Tensor | None = None,
    eps: float = 1e-6,
    block: int | None = None,
    straight_through: bool = False,
) -> Tensor:
    """Min-max scale each crop of a batch to [0, 1] over the voxels ``where`` it is used.

    A crop whose range is below ``eps`` (the all-zero template at initialisation) is returned
    unscaled, i.e. zeros, not NaN, with an identity gradient so that a zero template can start
    to learn.

    Args:
        crop: ``(B, 1, X, Y, Z)``.
        where: ``bool (B, 1, X, Y, Z)`` the voxels whose minimum and maximum define the scaling
            (e.g. the masked voxels, so that no other voxel receives a gradient). Defaults to
            None (all voxels).
        eps: smallest range that is scaled. Defaults to 1e-6.
        block: when ``where`` is made of whole ``block``³ cubes (a block mask) and the sizes are
            multiples of it, the statistics are computed per cube first (faster, same result).
            Defaults to None.
        straight_through: exact values, identity gradient (the scaling is treated as a
            constant map in the backward pass). The exact gradient is amplified by
            ``1 / range``, which for a template near its zero initialisation is ~1e3-1e4:
            harmless under Adam alone, but it dominates a global gradient-norm clip and so
            starves the backbone. Defaults to False (exact).

    Returns:
        ``(B, 1, X, Y, Z)``.
    """
    if straight_through and crop.requires_grad:
        with torch.no_grad():  # the statistics are constants of the straight-through map
            inv, off = _minmax_coefficients(crop.detach(), where, eps, block)
        return _AffineStraightThrough.apply(crop, inv, off)
    inv, off = _minmax_coefficients(crop, where, eps, block)
    return torch.addcmul(off, crop, inv)


def _minmax_coefficients(
    crop: Tensor, where: Tensor | None, eps: float, block: int | None
) -> tuple[Tensor, Tensor]:
    """``(inv, off)`` shaped ``(B, 1, 1, 1, 1)`` so that ``crop * inv + off`` is min-max scaled."""
    bsz = crop.shape[0]
    flat = crop.reshape(bsz, -1)
    if where is None:
        lo, hi = torch.aminmax(flat, dim=1)
    else:
        inf = torch.tensor(float("inf"), dtype=crop.dtype, device=crop.device)
        if block and all(s % block == 0 for s in crop.shape[2:]):
            blo, bhi = block_minmax(crop, block)
            w = where[:, 0, ::block, ::block, ::block].reshape(bsz, -1)
            lo = torch.where(w, blo.reshape(bsz, -1), inf).amin(dim=1)
            hi = torch.where(w, bhi.reshape(bsz, -1), -inf).amax(dim=1)
        else:
            w = where.reshape(bsz, -1)
            lo = torch.where(w, flat, inf).amin(dim=1)
            hi = torch.where(w, flat, -inf).amax(dim=1)
        empty = ~w.any(dim=1)
        lo = torch.where(empty, torch.zeros_like(lo), lo)
        hi = torch.where(empty, torch.zeros_like(hi), hi)
    rng = hi - lo
    ok = rng > eps
    inv = torch.where(ok, 1.0 / torch.where(ok, rng, torch.ones_like(rng)), torch.ones_like(rng))
    off = torch.where(ok, -lo * inv, torch.zeros_like(lo))
    shape = (-1,) + (1,) * (crop.dim() - 1)
    return inv.view(shape), off.view(shape)


def scale_template_crop(
    volumes: Tensor,
    modality: Tensor,
    crop: Tensor,
    scaling: str = "global",
    where: Tensor | None = None,
    inside: Tensor | None = None,
    block: int | None = None,
    straight_through: bool = False,
) -> Tensor:
    """The one template scaling: min-max a crop of ``volumes`` to [0, 1] by ``scaling``.

    - ``"global"``: ``(crop - min T_m) / (max T_m - min T_m)`` with the minimum and maximum of
      the *whole* template ``T_m = volumes[modality[b]]``: the same as scaling the whole
      template and then cropping it (the official rule);
    - ``"crop"``: the minimum and maximum of the crop over ``where & inside`` (see
      :func:`minmax_scale`).

    A range below 1e-6 (the zero templates at initialisation) leaves the values unscaled, so a
    zero template gives zeros (not NaN) and can start to learn. Voxels outside the grid
    (``~inside``) are zero.

    Args:
        volumes: ``(M, X', Y', Z')`` the template volumes (their range is the global rule's).
        modality: ``int64 (B,)`` the template of each crop.
        crop: ``(B, 1, X, Y, Z)`` crops of ``volumes`` (unscaled).
        scaling: ``"global"`` or ``"crop"``. Defaults to "global".
        where: ``bool (B, 1, X, Y, Z)`` voxels whose range defines the ``crop`` rule (the
            view's masked voxels). Defaults to None (every voxel inside the grid).
        inside: ``bool (B, 1, X, Y, Z)`` voxels inside the template grid. Defaults to None
            (all).
        block: block size of ``where`` when it is a block mask (faster ``crop`` statistics).
            Defaults to None.
        straight_through: exact values, identity gradient (the scaling is a constant map in
            the backward pass). Defaults to False: the exact gradient, which under ``global``
            is the official code's autograd (the template's minimum and maximum voxels receive
            the gradient of the range too).

    Returns:
        ``(B, 1, X, Y, Z)``.

    Raises:
        ValueError: When ``scaling`` is unknown.

    Examples::

        >>> v = torch.arange(8.0).view(1, 2, 2, 2)
        >>> c = v[:, :1].unsqueeze(1)  # a crop holding 0..3 of a template spanning 0..7
        >>> scale_template_crop(v, torch.zeros(1, dtype=torch.long), c, "global").max()
        tensor(0.4286)
        >>> scale_template_crop(v, torch.zeros(1, dtype=torch.long), c, "crop").max()
        tensor(1.)
    """
    check_scaling(scaling, "scale_template_crop")
    if scaling == "crop":
        w = inside if where is None else (where.bool() if inside is None else where.bool() & inside)
        out = minmax_scale(
            crop, w, block=block if inside is None else None, straight_through=straight_through
        )
    else:
        inv, off = _global_affine(volumes.detach() if straight_through else volumes, modality)
        shape = (-1,) + (1,) * (crop.dim() - 1)
        inv, off = inv.view(shape).to(crop.dtype), off.view(shape).to(crop.dtype)
        if straight_through and crop.requires_grad:
            out = _AffineStraightThrough.apply(crop, inv, off)
        else:
            out = torch.addcmul(off, crop, inv)
    return out if inside is None else out * inside


def _global_affine(volumes: Tensor, modality: Tensor) -> tuple[Tensor, Tensor]:
    """``(inv (B,), off (B,))`` of the ``global`` rule: ``scaled = crop * inv + off`` maps each
    study's whole template ``volumes[modality[b]]`` onto [0, 1]; a range below 1e-6 (the zero
    templates at initialisation) gives the identity."""
    lo, hi = modality_minmax(volumes, modality)  # once per distinct modality of the batch
    rng = hi - lo
    ok = rng > 1e-6
    inv = torch.where(ok, 1.0 / torch.where(ok, rng, torch.ones_like(rng)), torch.ones_like(rng))
    off = torch.where(ok, -lo * inv, torch.zeros_like(lo))
    return inv, off


def scaled_volumes(volumes: Tensor) -> Tensor:
    """Every whole template min-max scaled to [0, 1]: ``(M, X, Y, Z) -> (M, X, Y, Z)``.

    What the viewers show: :func:`scale_template_crop` with the whole grid as the crop (both
    rules agree there); a constant template (zeros) stays zeros.
    """
    vol = volumes.detach().float()
    m = torch.arange(vol.shape[0], device=vol.device)
    return scale_template_crop(vol, m, vol.unsqueeze(1), "global")[:, 0]


class _AffineStraightThrough(torch.autograd.Function):
    """``crop * inv + off`` in one pass forward, identity gradient to ``crop`` backward."""

    @staticmethod
    def forward(ctx: Any, crop: Tensor, inv: Tensor, off: Tensor) -> Tensor:
        return torch.addcmul(off, crop, inv)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


class _WindowGather(torch.autograd.Function):
    """``volumes[m_b, x_b:x_b+X, y_b:y_b+Y, z_b:z_b+Z]`` for all b in one gather.

    Forward indexes a sliding-window view of the volumes (``as_strided``, no copy), so the batch
    is one ``index_select``; backward adds each study's gradient into its window.
    All windows must lie inside the grid.
    """

    @staticmethod
    def forward(
        ctx: Any,
        volumes: Tensor,
        modality: Tensor,
        start: Tensor,
        size: tuple[int, int, int],
    ) -> Tensor:
        sx, sy, sz = size
        vols = volumes.contiguous()
        st = vols.stride()
        # a window starting at every storage offset (a view, no copy); one index_select
        # picks each study's window
        n = vols.numel() - ((sx - 1) * st[1] + (sy - 1) * st[2] + (sz - 1) * st[3])
        win = vols.reshape(-1).as_strided((n, sx, sy, sz), (1, st[1], st[2], st[3]))
        offset = modality * st[0] + start[:, 0] * st[1] + start[:, 1] * st[2] + start[:, 2] * st[3]
        out = win.index_select(0, offset)
        ctx.save_for_backward(modality, start)
        ctx.size = size
        ctx.shape = volumes.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        modality, start = ctx.saved_tensors
        return _add_windows(grad, modality, start, ctx.size, ctx.shape), None, None, None


def _add_windows(
    grad: Tensor, modality: Tensor, start: Tensor, size: tuple[int, int, int], shape: torch.Size
) -> Tensor:
    """The gradient of a window gather: ``grad (B, X, Y, Z)`` added into each study's window of
    a zero ``(M, X', Y', Z')``."""
    sx, sy, sz = size
    gv = grad.new_zeros(shape)
    for b, (m, x, y, z) in enumerate(zip(modality.tolist(), *start.T.tolist())):
        gv[m, x : x + sx, y : y + sy, z : z + sz] += grad[b]
    return gv


class _WindowFill(torch.autograd.Function):
    """View A in one pass per study: ``lerp(target, window * inv + off, weight)``.

    Each study's scaled template window is written straight into the output (no gathered crop,
    no scaled copy), then the kept voxels of ``target`` are blended in place: one fresh
    full-size tensor instead of three (the gather, the scaling and the fill), which on CPU is
    mostly the page faults of fresh memory. Straight-through scaling: the gradient reaching the
    templates is ``grad * weight`` added into each window, as :func:`scale_template_crop`
    with ``straight_through=True`` followed by :func:`~mmlib.proxy.masking.fill` gives.
    """

    @staticmethod
    def forward(
        ctx: Any,
        target: Tensor,
        volumes: Tensor,
        modality: Tensor,
        start: Tensor,
        inv: Tensor,
        off: Tensor,
        weight: Tensor,
    ) -> Tensor:
        bsz, _, sx, sy, sz = target.shape
        out = torch.empty_like(target, memory_format=torch.contiguous_format)
        for b, (m, x, y, z, a) in enumerate(
            zip(modality.tolist(), *start.T.tolist(), inv.tolist())
        ):
            window = volumes[m, x : x + sx, y : y + sy, z : z + sz]
            # off + a * window with a Python scale: ~5x faster on CPU than addcmul with
            # 0-dim tensors, which takes a slow broadcasting path
            torch.add(off[b].expand_as(window), window, alpha=a, out=out[b, 0])
        _lerp(target, out, weight, out=out)
        ctx.save_for_backward(weight, modality, start)
        ctx.size = (sx, sy, sz)
        ctx.shape = volumes.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        weight, modality, start = ctx.saved_tensors
        grad_target, to_template = fill_grads(
            grad, weight, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        grad_volumes = None
        if to_template is not None:
            grad_volumes = _add_windows(to_template[:, 0], modality, start, ctx.size, ctx.shape)
        return grad_target, grad_volumes, None, None, None, None, None


class Templates(nn.Module):
    """One learnable volume per canonical modality on a head-centred grid.

    Args:
        spacing: voxel size of the template grid in mm (one or three values). Defaults to 1.0.
        extent_mm: size of the box in mm, centred at 0 (the head's centre). Defaults to
            :data:`DEFAULT_EXTENT_MM` (192 × 228 × 192 mm).
        shape: grid shape ``(X, Y, Z)``; when given it overrides ``extent_mm``
            (extent = shape × spacing). Defaults to None.
        n_modalities: number of templates. Defaults to ``len(MODALITIES)`` (8).
        scaling: how a crop is min-max scaled where it is used, ``"global"`` or ``"crop"``
            (:func:`scale_template_crop`); pre-training passes its objective's rule, a
            checkpoint's templates carry the rule they were trained with (:func:`load_templates`),
            and the missing-modality fill uses it. Defaults to "global".

    Attributes:
        volumes: ``Parameter (8, X, Y, Z)``, zeros at construction, in :data:`MODALITIES` order.
        spacing: ``(3,)`` mm per voxel.
        shape: ``(X, Y, Z)``.
        origin: head-centred mm of voxel (0, 0, 0); the grid is centred at 0.
        scaling: the default rule of :meth:`crop`.

    Raises:
        ValueError: When a size or spacing is not positive, or ``scaling`` is unknown.
    """

    # declared for the type checker: nn.Module's __getattr__ types registered buffers as
    # Tensor | Module
    volumes: nn.Parameter
    spacing: Tensor
    origin: Tensor

    def __init__(
        self,
        spacing: float | Sequence[float] = 1.0,
        extent_mm: float | Sequence[float] = DEFAULT_EXTENT_MM,
        *,
        shape: Sequence[int] | None = None,
        n_modalities: int = len(MODALITIES),
        scaling: str = "global",
    ) -> None:
        super().__init__()
        self.scaling = check_scaling(scaling, "Templates: scaling")
        sp = _vec3(spacing, "Templates: spacing")
        if shape is None:
            ext = _vec3(extent_mm, "Templates: extent_mm")
            grid = tuple(max(1, int(round(e / s))) for e, s in zip(ext, sp))
        else:
            grid = tuple(int(v) for v in shape)
            if len(grid) != 3 or min(grid) < 1:
                raise ValueError(f"Templates: shape should be three positive ints, got {shape!r}.")
        self.shape: tuple[int, int, int] = grid  # type: ignore[assignment]
        self.n_modalities = int(n_modalities)
        self.volumes = nn.Parameter(torch.zeros((self.n_modalities, *grid), dtype=torch.float32))
        sp_t = torch.tensor(sp, dtype=torch.float64)
        self.register_buffer("spacing", sp_t.float(), persistent=False)
        origin = -(torch.tensor(grid, dtype=torch.float64) - 1) / 2 * sp_t
        self.register_buffer("origin", origin.float(), persistent=False)

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` voxel → head-centred world mm (RAS), diagonal."""
        aff = np.eye(4)
        aff[:3, :3] = np.diag(self.spacing.double().cpu().numpy())
        aff[:3, 3] = self.origin.double().cpu().numpy()
        return aff

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, spacing={tuple(self.spacing.tolist())}, scaling={self.scaling!r}"
        )

    def scaled(self) -> Tensor:
        """Every whole template min-max scaled to [0, 1] (:func:`scaled_volumes`), ``(M, X, Y, Z)``,
        detached: what the viewers and the NIfTI export show."""
        return scaled_volumes(self.volumes)

    def crop(
        self,
        modality: Tensor,
        template_origin: Tensor,
        size: Sequence[int],
        spacing: Tensor | Sequence[float] | None = None,
        scale: bool = True,
        scale_where: Tensor | None = None,
        scale_block: int | None = None,
        straight_through: bool = False,
        resample: str = "auto",
        scaling: str | None = None,
    ) -> Tensor:
        """The anatomically matching template crop of each study, in one batched gather.

        Crop voxel ``j`` of study ``b`` sits at head-centred ``template_origin[b] + j *
        spacing[b]`` mm. When the crop spacing equals the template spacing the crop is a
        nearest-voxel gather (exact copies, zero outside the grid); otherwise it is resampled
        trilinearly with :func:`torch.nn.functional.grid_sample` (zero padding).

        Args:
            modality: ``int64 (B,)`` index into :data:`MODALITIES` of each study's target.
            template_origin: ``float32 (B, 3)`` head-centred mm of crop voxel (0, 0, 0).
            size: crop size ``(X, Y, Z)``.
            spacing: ``float32 (B, 3)`` mm per crop voxel. Defaults to None (the template's).
            scale: min-max scale each crop to [0, 1] by ``scaling`` (see
                :func:`scale_template_crop`); False returns raw template values. Defaults to
                True.
            scale_where: ``bool (B, 1, X, Y, Z)`` voxels whose range defines the ``crop``
                rule (e.g. the mask). Defaults to None (the crop's voxels inside the grid).
            scale_block: block size of ``scale_where`` when it is a block mask (faster
                statistics, see :func:`minmax_scale`). Defaults to None.
            straight_through: identity gradient through the scaling (see
                :func:`scale_template_crop`). Defaults to False (exact).
            resample: ``"auto"`` (a voxel gather when the spacings match, trilinear
                otherwise) or ``"trilinear"`` (always :func:`~torch.nn.functional.grid_sample`,
                also between grid points: the missing-modality fill of fine-tuning, whose crop
                origins need not fall on the template grid). Defaults to "auto".
            scaling: ``"global"`` (min-max of the whole template, the official rule) or
                ``"crop"`` (min-max over ``scale_where`` inside the grid). Defaults to None
                (:attr:`scaling`).

        Returns:
            ``(B, 1, X, Y, Z)``.

        Raises:
            ValueError: When ``modality`` is out of range, shapes disagree, or ``resample`` or
                ``scaling`` is unknown.
        """
        if resample not in ("auto", "trilinear"):
            raise ValueError(
                f"Templates.crop: resample should be auto or trilinear, got {resample!r}."
            )
        rule = check_scaling(self.scaling if scaling is None else scaling, "Templates.crop")
        if spacing is not None:
            spacing = torch.as_tensor(spacing, dtype=torch.float32)
        modality = modality.to(self.volumes.device).long().view(-1)
        bsz = modality.shape[0]
        if (modality < 0).any() or (modality >= self.n_modalities).any():
            raise ValueError(
                f"Templates.crop: modality should be in [0, {self.n_modalities}), "
                f"got {modality.tolist()}."
            )
        org = template_origin.to(self.volumes.device, torch.float32).view(bsz, 3)
        sx, sy, sz = (int(v) for v in size)
        dev = self.volumes.device
        t_sp = self.spacing.to(dev)
        same = resample != "trilinear" and self._on_grid_spacing(spacing, bsz)
        grid_n = torch.tensor(self.shape, device=dev)
        fully_inside = True
        if same:
            start = self._start(org)
            fully_inside = self._inside(start, (sx, sy, sz))
        if same and fully_inside:
            out = _WindowGather.apply(self.volumes, modality, start, (sx, sy, sz)).unsqueeze(1)
            inside = None
        elif same:
            axes = [
                start[:, i : i + 1] + torch.arange(n, device=dev)
                for i, n in enumerate((sx, sy, sz))
            ]
            valid = [(a >= 0) & (a < grid_n[i]) for i, a in enumerate(axes)]
            ix, iy, iz = (a.clamp(0, int(grid_n[i]) - 1) for i, a in enumerate(axes))
            out = self.volumes[
                modality.view(bsz, 1, 1, 1),
                ix.view(bsz, sx, 1, 1),
                iy.view(bsz, 1, sy, 1),
                iz.view(bsz, 1, 1, sz),
            ]
            inside = (
                valid[0].view(bsz, sx, 1, 1)
                & valid[1].view(bsz, 1, sy, 1)
                & valid[2].view(bsz, 1, 1, sz)
            )
            out = (out * inside).unsqueeze(1)
            inside = inside.unsqueeze(1)
        else:
            sp = (
                t_sp.expand(bsz, 3)
                if spacing is None
                else spacing.to(dev, torch.float32).reshape(-1, 3).expand(bsz, 3)
            )
            coords = [
                org[:, i].view(bsz, 1) + sp[:, i].view(bsz, 1) * torch.arange(n, device=dev)
                for i, n in enumerate((sx, sy, sz))
            ]  # world mm per axis, (B, n)
            idx = [(c - self.origin[i].to(dev)) / t_sp[i] for i, c in enumerate(coords)]
            norm = [2 * v / max(int(grid_n[i]) - 1, 1) - 1 for i, v in enumerate(idx)]
            gx = norm[0].view(bsz, sx, 1, 1).expand(bsz, sx, sy, sz)
            gy = norm[1].view(bsz, 1, sy, 1).expand(bsz, sx, sy, sz)
            gz = norm[2].view(bsz, 1, 1, sz).expand(bsz, sx, sy, sz)
            # grid_sample's last grid axis is (W, H, D) = (Z, Y, X) for an input (B, 1, X, Y, Z)
            grid = torch.stack((gz, gy, gx), dim=-1)
            vols = self.volumes.index_select(0, modality).unsqueeze(1)
            out = F.grid_sample(
                vols, grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )
            inside = ((grid.abs() <= 1 + 1e-6).all(dim=-1)).unsqueeze(1)
        if scale:
            out = scale_template_crop(
                self.volumes,
                modality,
                out,
                rule,
                where=None if scale_where is None else scale_where.to(dev).bool(),
                inside=inside,
                block=scale_block,
                straight_through=straight_through,
            )
        return out

    def _on_grid_spacing(self, spacing: Tensor | Sequence[float] | None, bsz: int) -> bool:
        """Whether crops at ``spacing`` (``(B, 3)`` mm, None: the template's) are voxel windows
        of the grid (every study's spacing equals the template's, to 1e-4 relative)."""
        if spacing is None:
            return True
        dev = self.volumes.device
        sp = torch.as_tensor(spacing, dtype=torch.float32).to(dev).reshape(-1, 3)
        return bool(torch.allclose(sp, self.spacing.to(dev).expand(bsz, 3), rtol=1e-4, atol=1e-5))

    def _start(self, template_origin: Tensor) -> Tensor:
        """``int64 (B, 3)`` grid voxel of each crop's voxel (0, 0, 0) (spacings equal)."""
        dev = self.volumes.device
        return torch.round((template_origin - self.origin.to(dev)) / self.spacing.to(dev)).long()

    def _inside(self, start: Tensor, size: Sequence[int]) -> bool:
        """Whether every window ``start + [0, size)`` lies inside the grid."""
        grid_n = torch.tensor(self.shape, device=start.device)
        size_t = torch.tensor(tuple(size), device=start.device)
        return bool(((start >= 0) & (start + size_t <= grid_n)).all())

    def fill(
        self,
        target: Tensor,
        weight: Tensor,
        modality: Tensor,
        template_origin: Tensor,
        spacing: Tensor | Sequence[float] | None = None,
        scale_where: Tensor | None = None,
        scale_block: int | None = None,
        straight_through: bool = False,
        scaling: str | None = None,
    ) -> Tensor:
        """View A: the masked voxels of ``target`` replaced by each study's scaled template crop.

        The same values and gradients as ``template_fill(target, self.crop(...), weight)``
        (:func:`~mmlib.proxy.masking.template_fill`, :meth:`crop`), in one pass per study when
        the crops are voxel windows inside the grid, the rule is ``global`` and its gradient is
        straight-through (or not recorded) — the pre-training default: each study's scaled
        window is written straight into the output and the kept voxels blended in place, one
        fresh full-size tensor instead of three. Otherwise it is exactly that composition.

        Args:
            target: ``(B, 1, X, Y, Z)`` the target modality of each study.
            weight: 0/1 fill weights, 1 where masked (:func:`~mmlib.proxy.masking.block_mask`
                with ``return_weight=True``), or a bool mask.
            modality: ``int64 (B,)`` index into :data:`MODALITIES` of each study's target.
            template_origin: ``float32 (B, 3)`` head-centred mm of crop voxel (0, 0, 0).
            spacing: ``float32 (B, 3)`` mm per crop voxel. Defaults to None (the template's).
            scale_where: ``bool (B, 1, X, Y, Z)`` voxels whose range defines the ``crop`` rule
                (the mask). Defaults to None.
            scale_block: block size of ``scale_where`` when it is a block mask. Defaults to None.
            straight_through: identity gradient through the scaling. Defaults to False (exact).
            scaling: ``"global"`` or ``"crop"``. Defaults to None (:attr:`scaling`).

        Returns:
            ``(B, 1, X, Y, Z)`` in ``target``'s dtype.
        """
        rule = check_scaling(self.scaling if scaling is None else scaling, "Templates.fill")
        size = tuple(int(v) for v in target.shape[2:])
        modality = modality.to(self.volumes.device).long().view(-1)
        tracked = torch.is_grad_enabled() and self.volumes.requires_grad
        start = None
        if (
            rule == "global"
            and (straight_through or not tracked)
            and weight.is_floating_point()
            and not weight.requires_grad
            and target.dtype == self.volumes.dtype
            and target.device == self.volumes.device
            and self._on_grid_spacing(spacing, target.shape[0])
            and bool(((modality >= 0) & (modality < self.n_modalities)).all())
        ):
            start = self._start(template_origin.to(target.device, torch.float32).view(-1, 3))
            if not self._inside(start, size):
                start = None
        if start is None:
            crop = self.crop(
                modality,
                template_origin,
                size,
                spacing=spacing,
                scale=True,
                scale_where=scale_where,
                scale_block=scale_block,
                straight_through=straight_through,
                scaling=rule,
            )
            return fill(target, crop.to(target.dtype), weight)
        inv, off = _global_affine(self.volumes.detach(), modality)
        out: Tensor = _WindowFill.apply(
            target, self.volumes, modality, start, inv, off, weight.to(target.dtype)
        )
        return out

    def to_nifti(
        self, path: str | Path, modality: str | int | None = None, scale: bool = False
    ) -> Path:
        """Write one template (3-D) or all of them (4-D, last axis in MODALITIES order).

        Args:
            path: output ``.nii.gz`` file.
            modality: a modality name (any alias) or index; None or ``"all"`` writes all.
                Defaults to None.
            scale: min-max scale each whole template to [0, 1] (:meth:`scaled`). Defaults to
                False.

        Returns:
            The written path. Its affine is the true head-centred one (:attr:`affine`), so the
            template overlays images given in head-centred world coordinates.
        """
        import nibabel as nib

        vols = (self.scaled() if scale else self.volumes.detach()).float().cpu()
        if modality is None or modality == "all":
            data = vols.permute(1, 2, 3, 0).numpy()
        else:
            idx = (
                modality
                if isinstance(modality, int)
                else MODALITIES.index(canonical(str(modality), "Templates.to_nifti"))
            )
            data = vols[idx].numpy()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), self.affine)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(path))
        return path

    @classmethod
    def from_volumes(
        cls,
        volumes: Tensor | np.ndarray,
        affine: np.ndarray | Sequence,
        scaling: str = "global",
    ) -> Templates:
        """Templates holding given volumes on the grid of a diagonal ``affine``.

        Args:
            volumes: ``(M, X, Y, Z)`` in :data:`MODALITIES` order.
            affine: ``(4, 4)`` voxel -> head-centred mm (diagonal); its translation is kept as
                the grid's origin, so a checkpoint's templates keep their exact position.
            scaling: the rule they were trained with (:attr:`Templates.scaling`). Defaults to
                "global".

        Returns:
            :class:`Templates` (a copy of ``volumes``, float32).

        Raises:
            ValueError: When ``volumes`` is not 4-D or ``affine`` is not a diagonal ``(4, 4)``.
        """
        vol = torch.as_tensor(np.asarray(volumes) if not isinstance(volumes, Tensor) else volumes)
        vol = vol.detach().float()
        aff = np.asarray(affine, dtype=np.float64).reshape(4, 4)
        if vol.dim() != 4:
            raise ValueError(
                f"Templates.from_volumes: volumes should be (M, X, Y, Z), got {tuple(vol.shape)}."
            )
        step = np.diag(aff[:3, :3]).copy()
        if not np.allclose(aff[:3, :3], np.diag(step)) or np.any(step == 0):
            raise ValueError(
                "Templates.from_volumes: the affine should be diagonal with a "
                f"non-zero spacing, got {aff[:3, :3].tolist()}."
            )
        out = cls(
            spacing=np.abs(step).tolist(),
            shape=tuple(vol.shape[1:]),
            n_modalities=int(vol.shape[0]),
            scaling=scaling,
        )
        out.volumes.data.copy_(vol)
        # the exact grid of the affine, signs included (float32 like the constructor's buffers)
        out.spacing = torch.as_tensor(step, dtype=torch.float64).float()
        out.origin = torch.as_tensor(aff[:3, 3], dtype=torch.float64).float()
        return out

    @staticmethod
    def released_to_mni(
        rep_template: Tensor, source_affine: np.ndarray, mode: str = "affine"
    ) -> np.ndarray:
        """The SRI24 -> ICBM 2009a relation used to import the released templates, estimated.

        The released T1 template (``rep_template[MODALITIES.index("t1")]`` on
        ``source_affine``) is registered to the ICBM 2009a T1 (SimpleITK, mutual information,
        :func:`mmlib.data.register.register_images`, at 2 mm or the release's spacing if
        coarser).

        Returns:
            ``(4, 4)``: SRI24 world mm -> MNI mm.
        """
        from mmlib.data import register as reg

        t1 = torch.as_tensor(rep_template)[MODALITIES.index("t1")].detach().float().numpy()
        sp = max(2.0, float(np.abs(np.diag(np.asarray(source_affine))[:3]).max()))
        return reg.register_images(
            reg.icbm_template(sp),
            (t1, np.asarray(source_affine, np.float64)),
            mode,
            spacing=sp,
            fixed_mask=reg.template_mask(sp),
        )

    @classmethod
    def from_released(
        cls,
        rep_template: Tensor,
        spacing: float | Sequence[float] = 1.0,
        source_spacing: float = 1.0,
        *,
        register: str = "none",
        source_affine: np.ndarray | None = None,
        to_mni: np.ndarray | None = None,
    ) -> Templates:
        """Import the BrainMVP authors' released templates (``rep_template``).

        The released tensor is ``(8, 240, 240, 155)`` on the 1 mm BraTS/SRI24 grid, in
        :data:`MODALITIES` order. With ``register="none"`` its grid is taken as centred at the
        head's centre (0), the frame of an unregistered store. With ``rigid`` or ``affine`` it
        is brought into the frame of a store curated with ``mmlib curate --register`` (ICBM
        2009a, :mod:`mmlib.data.register`): the SRI24 -> ICBM relation is *estimated* by
        registering the released T1 template to the ICBM 2009a T1
        (:meth:`released_to_mni`), and every channel is resampled once onto a grid covering
        the ICBM box, in template coordinates (MNI mm minus
        :func:`mmlib.data.register.template_center`).

        Args:
            rep_template: ``(8, X, Y, Z)`` tensor (e.g. ``state_dict["rep_template"]``).
            spacing: spacing of the returned grid in mm; other than ``source_spacing`` the
                volumes are resampled trilinearly. Defaults to 1.0.
            source_spacing: spacing of ``rep_template``. Defaults to 1.0.
            register: ``none``, ``rigid`` or ``affine``. Defaults to "none".
            source_affine: the released grid's voxel -> SRI24 world matrix in RAS voxel
                order (:func:`mmlib.models.released.released_template_affine` for the 1 mm
                release); needed when registering. Defaults to None.
            to_mni: a known SRI24 world -> MNI mm matrix (4, 4) to use instead of estimating
                it (e.g. one estimated once with :meth:`released_to_mni`). Defaults to None.

        Returns:
            :class:`Templates` holding the released volumes.

        Raises:
            ValueError: When ``rep_template`` is not ``(8, X, Y, Z)``, ``register`` is unknown,
                or registering without ``source_affine`` or with an anisotropic ``spacing``.
        """
        rep = torch.as_tensor(rep_template).detach().float()
        if rep.dim() != 4 or rep.shape[0] != len(MODALITIES):
            raise ValueError(
                f"Templates.from_released: rep_template should be (8, X, Y, Z) such as "
                f"{RELEASED_SHAPE}, got {tuple(rep.shape)}."
            )
        src_sp = _vec3(source_spacing, "source_spacing")
        dst_sp = _vec3(spacing, "spacing")
        from mmlib.data import register as reg

        reg.check_mode(register)
        if register != "none":
            if source_affine is None:
                raise ValueError(
                    "Templates.from_released: registering needs source_affine (the released "
                    "grid's voxel-to-world matrix, mmlib.models.released_template_affine())"
                )
            if not np.allclose(dst_sp, dst_sp[0]):
                raise ValueError(f"Templates.from_released: spacing {dst_sp} is not isotropic")
            from mmlib.data.curate import resample

            if to_mni is None:
                to_mni = cls.released_to_mni(rep, source_affine, register)
            grid_data, grid = reg.icbm_template(float(dst_sp[0]))
            head = np.eye(4)
            head[:3, 3] = -reg.template_center()  # MNI mm -> template (head-centred) mm
            out_affine = head @ grid
            data_affine = head @ np.asarray(to_mni, np.float64) @ np.asarray(source_affine)
            vols = np.stack(
                [
                    resample(v, data_affine, grid_data.shape, out_affine, order=1)
                    for v in rep.numpy()
                ]
            )
            return cls.from_volumes(torch.from_numpy(vols.astype(np.float32)), out_affine)
        extent = [n * s for n, s in zip(rep.shape[1:], src_sp)]
        if np.allclose(src_sp, dst_sp):
            out = cls(spacing=dst_sp, shape=tuple(rep.shape[1:]))
            out.volumes.data.copy_(rep)
            return out
        out = cls(spacing=dst_sp, extent_mm=extent)
        src = cls(spacing=src_sp, shape=tuple(rep.shape[1:]))
        src.volumes.data.copy_(rep)
        with torch.no_grad():
            corner = out.origin.view(1, 3).expand(len(MODALITIES), 3)
            res = src.crop(
                torch.arange(len(MODALITIES)),
                corner,
                out.shape,
                spacing=out.spacing.view(1, 3).expand(len(MODALITIES), 3),
                scale=False,
            )
        out.volumes.data.copy_(res[:, 0])
        return out


def load_templates(checkpoint: str | Path) -> Templates:
    """The learned templates of a checkpoint folder (``model.safetensors`` + ``meta.json``).

    The volumes are the ``*templates.volumes`` tensor; the affine is ``meta.json``'s
    ``template_affine`` (or ``templates.affine``), the identity when the checkpoint records none;
    the scaling is the one the run trained with (:func:`scaling_of`).

    Args:
        checkpoint: a checkpoint folder, e.g. ``runs/pretrain/<run>/checkpoints/step_0000100``.

    Returns:
        :class:`Templates` on the checkpoint's grid.

    Raises:
        FileNotFoundError: When the folder has no ``model.safetensors``.
        KeyError: When the weights hold no ``*templates.volumes`` tensor.
    """
    import json

    from safetensors.numpy import load_file

    folder = Path(checkpoint)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{folder}: no model.safetensors; pass a checkpoint folder checkpoints/step_XXXXXXX"
        )
    tensors = load_file(str(weights))
    keys = [k for k in tensors if k.endswith("templates.volumes")]
    if not keys:
        raise KeyError(
            f"{weights}: no 'templates.volumes' tensor; this checkpoint has no templates"
        )
    meta: dict = {}
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
    affine = meta.get("template_affine")
    if affine is None and isinstance(meta.get("templates"), dict):
        affine = meta["templates"].get("affine")
    out = Templates.from_volumes(
        np.asarray(tensors[keys[0]], dtype=np.float32),
        np.eye(4) if affine is None else affine,
        scaling=scaling_of(meta),
    )
    out.volumes.requires_grad_(False)  # read to view or to fill, not to train
    return out
