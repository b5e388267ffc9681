"""The BrainMVP pre-training objective and its baselines, as one configurable module.

BrainMVP (Rui et al., CVPR 2025), per study and step:

1. pick one present modality ``m`` as the target ``X_m`` (single-channel pre-training);
2. view A (*modality template distillation*): mask blocks of ``X_m`` and fill them from the
   learned template ``T_m`` at the matching position;
3. view B (*cross-modal reconstruction*): draw another mask and fill it with the same blocks of
   another modality ``n != m`` of the study (from ``T_m`` too during a warm-up, so that the
   templates learn faster);
4. one encoder-decoder reconstructs the unmasked ``X_m`` from each view (MSE over the whole
   crop); from ``cl_start_epoch`` on, a symmetric InfoNCE pulls the deepest features of the two
   views of each study together;
5. ``loss = w_md * md + w_cmr * cmr + w_cl * cl``.

The baselines are config values, not classes (:data:`OBJECTIVES`): single-modal masked image
modelling (``mim``: one view, zero or noise fill), cross-modal only, template only, and BrainMVP
without the contrastive term.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmlib.proxy.contrastive import InfoNCELoss, ProjectionHead
from mmlib.proxy.masking import (
    block_mask,
    cross_modal_fill,
    noise_fill,
    sample_slot,
    select_slot,
    zero_fill,
)
from mmlib.proxy.templates import TEMPLATE_SCALINGS, Templates

MODES: tuple[str, ...] = ("brainmvp", "mim")
FILLS: tuple[str, ...] = ("zero", "noise")
LOSS_REGIONS: tuple[str, ...] = ("all", "masked")
TEMPLATE_GRADS: tuple[str, ...] = ("straight_through", "exact")


@dataclass
class ObjectiveConfig:
    """Settings of :class:`BrainMVPObjective` (every ablation is a value here).

    Attributes:
        mode: ``"brainmvp"`` (views A and B) or ``"mim"`` (one view, ``fill`` instead of the
            template; its loss is reported as ``md``). Defaults to "brainmvp".
        mask_rate: fraction of blocks replaced. Defaults to 0.8, the value of the authors'
            launch script; the paper's text says 0.875.
        block_size: cube edge in voxels. Defaults to 8.
        w_md: weight of view A's reconstruction (template distillation). Defaults to 10.0, as
            the authors' code; the paper's text reportedly uses 1/1/1 (preset
            ``brainmvp_paper_weights``).
        w_cmr: weight of view B's reconstruction (cross-modal). Defaults to 1.0.
        w_cl: weight of the contrastive term. Defaults to 1.0.
        warmup_epochs: how many epochs, from epoch 0, view B is filled from the template instead
            of another modality (epochs ``0 .. warmup_epochs - 1``; 0 = none). Defaults to 301:
            the official code's ``flag = cur_epoch <= 300`` (``models/Uniformer.py`` line 144,
            ``models/Unet.py`` line 257, 0-based epochs) makes epochs 0 to 300 inclusive
            warm-up, of its 1500.
        cl_start_epoch: first epoch with the contrastive term. Defaults to 1000 (of 1500).
        temperature: InfoNCE temperature. Defaults to 1.0.
        fill: fill of the ``mim`` baseline, ``"zero"`` or ``"noise"``. Defaults to "zero".
        loss_region: ``"all"`` (MSE over the whole crop, as the authors) or ``"masked"``.
            Defaults to "all".
        gather_distributed: gather contrastive negatives across DDP ranks. Defaults to False.
        projection_dim: output width of a projection head before InfoNCE; 0 = none (the
            authors'). Defaults to 0.
        template_grad: gradient through the min-max scaling of the templates (the rule of
            ``template_scaling``), ``"straight_through"`` (identity) or ``"exact"`` (autograd
            through the scaling, the range's minimum and maximum included; with
            ``template_scaling="global"`` this is the official code's gradient). The exact
            gradient is ``1 / range`` times larger, 1e3-1e4 while the templates are near their
            zero start; when the templates share the backbone's gradient-norm clip
            (``train.clip_templates``) it takes the whole norm and the backbone barely moves.
            Values are identical either way. Defaults to "straight_through".
        template_scaling: how a template crop is min-max scaled where it fills,
            ``"global"`` (the whole template of the modality, then crop: the official
            ``utils/ops.py`` lines 81-83) or ``"crop"`` (each crop over the view's masked
            voxels). See :func:`mmlib.proxy.templates.scale_template_crop`. Defaults to
            "global".
        w_template: weight of a direct template fit, ``fit``: the mean squared difference
            between every present modality's scaled template crop and that modality's image,
            over the crop (the grid holds any head), whose gradient reaches the
            templates only (the images are data, the backbone does not see the term). It gives
            every template voxel under a crop the image's value as its gradient, for every
            modality of the study (about five times the voxels view A fills from one), where
            reconstruction alone passes a noisy ``J^T (recon - target)`` through the network;
            the template then tracks the (scaled) mean of its modality. Not in the paper or the
            official code, where templates learn only through the reconstruction loss.
            Defaults to 0.0 (off).
    """

    mode: str = "brainmvp"
    mask_rate: float = 0.8
    block_size: int = 8
    w_md: float = 10.0
    w_cmr: float = 1.0
    w_cl: float = 1.0
    warmup_epochs: int = 301
    cl_start_epoch: int = 1000
    temperature: float = 1.0
    fill: str = "zero"
    loss_region: str = "all"
    gather_distributed: bool = False
    projection_dim: int = 0
    template_grad: str = "straight_through"
    template_scaling: str = "global"
    w_template: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ObjectiveConfig: mode should be one of {MODES}, got {self.mode!r}.")
        if self.fill not in FILLS:
            raise ValueError(f"ObjectiveConfig: fill should be one of {FILLS}, got {self.fill!r}.")
        if self.loss_region not in LOSS_REGIONS:
            raise ValueError(
                f"ObjectiveConfig: loss_region should be one of {LOSS_REGIONS}, "
                f"got {self.loss_region!r}."
            )
        if self.template_grad not in TEMPLATE_GRADS:
            raise ValueError(
                f"ObjectiveConfig: template_grad should be one of {TEMPLATE_GRADS}, "
                f"got {self.template_grad!r}."
            )
        if self.template_scaling not in TEMPLATE_SCALINGS:
            raise ValueError(
                f"ObjectiveConfig: template_scaling should be one of {TEMPLATE_SCALINGS}, "
                f"got {self.template_scaling!r}."
            )
        if self.w_template < 0:
            raise ValueError(f"ObjectiveConfig: w_template should be >= 0, got {self.w_template}.")
        if self.warmup_epochs < 0:
            raise ValueError(
                f"ObjectiveConfig: warmup_epochs should be >= 0, got {self.warmup_epochs}."
            )
        if not 0.0 <= self.mask_rate <= 1.0:
            raise ValueError(
                f"ObjectiveConfig: mask_rate should be in the range [0, 1], got {self.mask_rate}."
            )
        if self.block_size < 1:
            raise ValueError(
                f"ObjectiveConfig: block_size should be positive, got {self.block_size}."
            )
        if self.temperature <= 0:
            raise ValueError(
                f"ObjectiveConfig: temperature should be positive, got {self.temperature}."
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None = None) -> ObjectiveConfig:
        """Build from a plain dict (e.g. a config file's ``objective`` section).

        A ``preset`` (or ``name``) key starts from :data:`OBJECTIVES` and the other keys
        override it.

        Raises:
            ValueError: When a key is not a field, or the preset is unknown.
        """
        d = dict(d or {})
        name = d.pop("preset", None) or d.pop("name", None)
        base = get_objective(name) if name else cls()
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(
                f"ObjectiveConfig.from_dict: unknown keys {unknown}; known keys are "
                f"{sorted(fields)} and 'preset'."
            )
        return dataclasses.replace(base, **d)

    def asdict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable), inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)


OBJECTIVES: dict[str, ObjectiveConfig] = {
    "brainmvp": ObjectiveConfig(),
    "brainmvp_paper_weights": ObjectiveConfig(w_md=1.0, w_cmr=1.0, w_cl=1.0),
    "brainmvp_nocl": ObjectiveConfig(w_cl=0.0),
    "cmr_only": ObjectiveConfig(w_md=0.0, w_cl=0.0, warmup_epochs=0),
    "md_only": ObjectiveConfig(w_cmr=0.0, w_cl=0.0),
    "cl_only": ObjectiveConfig(w_md=0.0, w_cmr=0.0, w_cl=1.0, warmup_epochs=0, cl_start_epoch=0),
    "mim": ObjectiveConfig(mode="mim", fill="zero", w_md=1.0, w_cmr=0.0, w_cl=0.0),
    "mim_noise": ObjectiveConfig(mode="mim", fill="noise", w_md=1.0, w_cmr=0.0, w_cl=0.0),
}
"""Named presets: the method, its ablations and the single-modal baselines."""


def get_objective(name: str) -> ObjectiveConfig:
    """A copy of the preset ``name`` of :data:`OBJECTIVES`.

    Raises:
        ValueError: When the name is unknown.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return dataclasses.replace(OBJECTIVES[name])


def reconstruction_loss(recon: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE over the whole crop, or over the masked voxels when ``mask`` is given."""
    if mask is None:
        return F.mse_loss(recon.float(), target.float())
    m = mask.to(recon.dtype)
    return ((recon.float() - target.float()) ** 2 * m).sum() / m.sum().clamp(min=1.0)


class BrainMVPObjective(nn.Module):
    """BrainMVP's three proxy tasks (or a baseline) around one backbone.

    Args:
        backbone: a module with ``forward(x (B, 1, X, Y, Z)) -> (reconstruction (B, 1, X, Y, Z),
            features list, deepest last)`` (see :func:`mmlib.models.build_backbone`).
        templates: the learnable :class:`Templates` (may be None for ``mim``).
        config: an :class:`ObjectiveConfig`, a preset name, or a plain dict. Defaults to None
            (``brainmvp``).

    Raises:
        ValueError: When the configuration needs templates and none are given.

    Examples::

        >>> obj = BrainMVPObjective(backbone, Templates(spacing=2.0), "brainmvp")
        >>> out = obj(batch, epoch=0, generator=torch.Generator().manual_seed(0))
        >>> out["loss"].backward()
    """

    def __init__(
        self,
        backbone: nn.Module,
        templates: Templates | None = None,
        config: ObjectiveConfig | str | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if config is None:
            config = ObjectiveConfig()
        elif isinstance(config, str):
            config = get_objective(config)
        elif isinstance(config, dict):
            config = ObjectiveConfig.from_dict(config)
        self.config: ObjectiveConfig = config
        if templates is None and config.mode == "brainmvp":
            raise ValueError(
                "BrainMVPObjective: mode 'brainmvp' needs templates; pass "
                "Templates(spacing=...) or use the 'mim' preset."
            )
        self.backbone = backbone
        self.templates = templates
        projection = None
        if config.projection_dim > 0:
            channels = getattr(backbone, "feature_channels", None)
            if not channels:
                raise ValueError(
                    "BrainMVPObjective: projection_dim > 0 needs "
                    "backbone.feature_channels; set projection_dim=0."
                )
            projection = ProjectionHead(int(channels[-1]), out=config.projection_dim)
        self.contrastive = InfoNCELoss(config.temperature, config.gather_distributed, projection)

    def _template_fit(
        self,
        image: Tensor,
        present: Tensor,
        modality: Tensor,
        origin: Tensor | None,
        spacing: Tensor | None,
    ) -> Tensor:
        """``fit``: MSE of every present modality's scaled template crop against its image
        over the crop (see ``ObjectiveConfig.w_template``)."""
        assert self.templates is not None
        if origin is None:
            raise ValueError(
                "BrainMVPObjective: w_template > 0 needs the batch's 'template_origin'."
            )
        b_idx, k_idx = torch.nonzero(present, as_tuple=True)
        size = tuple(image.shape[2:])
        sp = None if spacing is None else spacing.to(image.device)[b_idx]
        crops = self.templates.crop(
            modality[b_idx, k_idx],
            origin.to(image.device)[b_idx],
            size,
            spacing=sp,
            straight_through=self.config.template_grad == "straight_through",
            scaling=self.config.template_scaling,
        )  # (N, 1, X, Y, Z); zero outside the grid, which holds any head
        images = image[b_idx, k_idx].unsqueeze(1).detach().float()
        return F.mse_loss(crops.float(), images)

    def forward(
        self, batch: dict[str, Any], epoch: int = 0, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """One step's losses and views.

        Args:
            batch: a sampler batch: ``image (B, K, X, Y, Z)``, ``present (B, K)``,
                ``modality (B, K)``, ``template_origin (B, 3)``, ``spacing (B, 3)``.
            epoch: the current epoch (warm-up and contrastive start). Defaults to 0.
            generator: source of all random draws (target, masks, source, noise). Defaults to
                None.

        Returns:
            dict with loss terms ``loss, md, cmr, cl, fit`` (scalar tensors, 0 when off), views
            ``target, mask, view_a, view_b, recon_a, recon_b`` (``(B, 1, X, Y, Z)``; ``mask``
            is view A's, ``mask_b`` view B's; None for a view that is not computed), and
            ``target_slot, target_modality (B,)``, ``source_slot (B,)`` (-1 where view B used
            the template), ``fell_back bool (B,)`` (single-modality studies, cross-modal fill
            impossible), ``cl_active, warmup`` (bools).
        """
        cfg = self.config
        image: Tensor = batch["image"]
        device = image.device
        present = batch["present"].to(device).bool()
        modality = batch["modality"].to(device).long()
        bsz, _, *size = image.shape
        if not present.any(dim=1).all():
            bad = [s for s, p in zip(batch.get("study", range(bsz)), present.any(dim=1)) if not p]
            raise ValueError(f"BrainMVPObjective: studies without any present modality: {bad}.")
        origin = batch.get("template_origin")
        spacing = batch.get("spacing")
        slot, _ = sample_slot(present, generator)
        target = select_slot(image, slot)
        rows = torch.arange(bsz, device=device)
        target_modality = modality[rows, slot]
        zero = torch.zeros((), device=device)
        out: dict[str, Any] = {
            "target": target,
            "target_slot": slot,
            "target_modality": target_modality,
            "view_a": None,
            "view_b": None,
            "recon_a": None,
            "recon_b": None,
            "mask": None,
            "mask_b": None,
            "md": zero,
            "cmr": zero,
            "cl": zero,
            "fit": zero,
            "source_slot": torch.full_like(slot, -1),
            "fell_back": torch.zeros(bsz, dtype=torch.bool, device=device),
            "cl_active": False,
            "warmup": False,
        }

        def mask_like() -> tuple[Tensor, Tensor]:
            return block_mask(
                bsz, size, cfg.block_size, cfg.mask_rate, generator, device, return_weight=True
            )

        def need_origin() -> Tensor:
            if origin is None:
                raise ValueError(
                    "BrainMVPObjective: the batch has no 'template_origin'; the "
                    "sampler must provide it for template fills."
                )
            return origin.to(device)

        def template_view(where: Tensor, weight: Tensor) -> Tensor:
            """``target`` with the masked blocks from the template (one pass, see
            :meth:`Templates.fill`)."""
            assert self.templates is not None
            return self.templates.fill(
                target,
                weight,
                target_modality,
                need_origin(),
                spacing=None if spacing is None else spacing.to(device),
                scale_where=where,
                scale_block=cfg.block_size,
                straight_through=cfg.template_grad == "straight_through",
                scaling=cfg.template_scaling,
            )

        def template_crop(where: Tensor) -> Tensor:
            assert self.templates is not None
            crop = self.templates.crop(
                target_modality,
                need_origin(),
                size,
                spacing=None if spacing is None else spacing.to(device),
                scale=True,
                scale_where=where,
                scale_block=cfg.block_size,
                straight_through=cfg.template_grad == "straight_through",
                scaling=cfg.template_scaling,
            )
            return crop.to(target.dtype)

        region = (lambda m: m) if cfg.loss_region == "masked" else (lambda m: None)

        if cfg.mode == "mim":
            mask, weight = mask_like()
            view = (
                zero_fill(target, weight)
                if cfg.fill == "zero"
                else noise_fill(target, weight, generator)
            )
            recon, _ = self.backbone(view)
            md = reconstruction_loss(recon, target, region(mask))
            out.update(view_a=view, recon_a=recon, mask=mask, md=md, loss=cfg.w_md * md)
            return out

        cl_active = cfg.w_cl > 0 and epoch >= cfg.cl_start_epoch
        warmup = epoch < cfg.warmup_epochs
        need_a = cfg.w_md > 0 or cl_active
        need_b = cfg.w_cmr > 0 or cl_active
        views: list[Tensor] = []
        if need_a:
            mask_a, weight_a = mask_like()
            view_a = template_view(mask_a, weight_a)
            out.update(view_a=view_a, mask=mask_a)
            views.append(view_a)
        if need_b:
            mask_b, weight_b = mask_like()
            if warmup:
                view_b = template_view(mask_b, weight_b)
            else:
                single = ~(present.sum(dim=1) > 1)
                fallback = template_crop(mask_b) if bool(single.any()) else None
                view_b, source, fell_back = cross_modal_fill(
                    image, present, slot, weight_b, fallback, generator, target
                )
                out.update(source_slot=source, fell_back=fell_back)
            out.update(view_b=view_b, mask_b=mask_b)
            if out["mask"] is None:
                out["mask"] = mask_b
            views.append(view_b)
        x = torch.cat(views, dim=0)
        if cfg.w_md <= 0 and cfg.w_cmr <= 0 and hasattr(self.backbone, "encode"):
            # an optional method of backbones, which nn.Module types as Tensor | Module
            encode = cast("Callable[[Tensor], list[Tensor]]", self.backbone.encode)
            feats = encode(x)  # contrastive only: the decoder is not needed
            recons: Sequence[Tensor | None] = [None, None]
        else:
            recon, feats = self.backbone(x)
            recons = recon.split(bsz, dim=0)
        deepest = feats[-1].split(bsz, dim=0)
        total = zero
        if cfg.w_template > 0 and self.templates is not None:
            out["fit"] = self._template_fit(image, present, modality, origin, spacing)
            total = total + cfg.w_template * out["fit"]
        i = 0
        if need_a:
            recon_a = recons[i]
            out["recon_a"] = recon_a
            if cfg.w_md > 0:
                assert recon_a is not None  # None only when w_md and w_cmr are both <= 0
                out["md"] = reconstruction_loss(recon_a, target, region(out["mask"]))
                total = total + cfg.w_md * out["md"]
            i += 1
        if need_b:
            recon_b = recons[i]
            out["recon_b"] = recon_b
            if cfg.w_cmr > 0:
                assert recon_b is not None  # None only when w_md and w_cmr are both <= 0
                out["cmr"] = reconstruction_loss(recon_b, target, region(out["mask_b"]))
                total = total + cfg.w_cmr * out["cmr"]
        if cl_active and need_a and need_b:
            out["cl"] = self.contrastive(deepest[0], deepest[1])
            total = total + cfg.w_cl * out["cl"]
        out.update(loss=total, cl_active=cl_active, warmup=warmup)
        return out
