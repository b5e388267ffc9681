"""Helpers behind notebooks 03-05: look at the proxy tasks on real sampler batches and runs.

The notebooks tell, this module does: draw a batch from the scale's store, build the two
BrainMVP views of one study for any modality, mask rate and block size (with a static figure
and an ipywidgets explorer), read the masked-region errors of a pre-training run before and
after training, measure how well the contrastive embeddings of the two views find each other,
and compare learned templates with the mean image of their modality in template space.

Training itself is the pre-training engine's (:func:`mmlib.engine.pretrain.pretrain`); nothing
here trains, and runs are read through :mod:`mmlib.runs`. It lives in the viewers' room because
it draws and reads runs; the proxy room it looks at imports neither the engine nor the viewers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mmlib.modalities import MODALITIES
from mmlib.models.base import Backbone
from mmlib.proxy.brainmvp import BrainMVPObjective, ObjectiveConfig
from mmlib.proxy.masking import block_mask, cross_modal_fill, select_slot, template_fill
from mmlib.proxy.templates import Templates, scaled_volumes, scaling_of
from mmlib.runs import (
    latest_checkpoint,
    list_samples,
    read_config,
    sample_errors,
    step_of,
)
from mmlib.viz.plots import BookFigure, draw_slice

PREVIEW_KEYS: tuple[str, ...] = ("target", "mask", "view_a", "mask_b", "view_b")
PREVIEW_TITLES: dict[str, str] = {
    "target": "target",
    "mask": "mask of view A",
    "view_a": "view A: template fill",
    "mask_b": "mask of view B",
    "view_b": "view B: cross-modal fill",
}


def sample_batch(
    store: Any,
    n: int = 4,
    crop_size: int | Sequence[int] = 32,
    k: int = 4,
    seed: int = 0,
    min_modalities: int = 2,
) -> dict[str, Any]:
    """A collated sampler batch of ``n`` pre-training studies, multi-modal ones first.

    Args:
        store: a :class:`mmlib.data.store.Store` or its folder.
        n: number of studies. Defaults to 4.
        crop_size: crop edge in voxels. Defaults to 32.
        k: modality slots per study. Defaults to 4.
        seed: sampler seed. Defaults to 0.
        min_modalities: prefer studies with at least this many modalities. Defaults to 2.

    Returns:
        The batch of ARCHITECTURE.md (``image (B, K, X, Y, Z)``, ``present``, ``modality``,
        ``template_origin``, ``spacing``, ``study``).
    """
    from mmlib.data.sampler import PretrainDataset

    ds = PretrainDataset(store, crop_size, k=k, seed=seed)
    rows = [ds._rows[s] for s in ds.studies]
    order = sorted(range(len(ds)), key=lambda i: (len(rows[i]["modalities"]) < min_modalities, i))
    ds.set_epoch(0)
    return ds.collate([ds[i] for i in order[: max(1, min(n, len(ds)))]])


def _slot_of(batch: Mapping[str, Any], index: int, modality: str | None) -> int:
    mods = [int(m) for m in batch["modality"][index]]
    present = [bool(p) for p in batch["present"][index]]
    if modality is None:
        return next(i for i, p in enumerate(present) if p)
    want = MODALITIES.index(modality)
    if want not in mods or not present[mods.index(want)]:
        have = [MODALITIES[m] for m, p in zip(mods, present) if p]
        raise ValueError(
            f"study {batch['study'][index]}: modality {modality!r} not in the crop; "
            f"choose one of {have}"
        )
    return mods.index(want)


def present_modalities(batch: Mapping[str, Any], index: int = 0) -> list[str]:
    """Names of the modalities present for study ``index`` of a batch."""
    return [
        MODALITIES[int(m)]
        for m, p in zip(batch["modality"][index], batch["present"][index])
        if bool(p)
    ]


@torch.no_grad()
def preview(
    batch: Mapping[str, Any],
    index: int = 0,
    modality: str | None = None,
    mask_rate: float = 0.8,
    block_size: int = 4,
    templates: Templates | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The two BrainMVP views of one study, as numpy arrays for figures.

    Args:
        batch: a sampler batch.
        index: the study in the batch. Defaults to 0.
        modality: the target modality. Defaults to None (the first present).
        mask_rate: fraction of blocks replaced. Defaults to 0.8.
        block_size: cube edge in voxels. Defaults to 4.
        templates: the templates for view A; zeros when None (their initial state). Defaults to
            None.
        seed: mask seed. Defaults to 0.

    Returns:
        ``target, mask, view_a, view_b`` ``(X, Y, Z)`` arrays plus ``modality`` and ``source``
        (the modality that filled view B, or ``"template"`` for a single-modality study).
    """
    image = batch["image"][index : index + 1].float()
    present = batch["present"][index : index + 1].bool()
    slot = torch.tensor([_slot_of(batch, index, modality)])
    target = select_slot(image, slot)
    g = torch.Generator().manual_seed(int(seed))
    size = tuple(image.shape[2:])
    mask_a = block_mask(1, size, block_size, mask_rate, g)
    mask_b = block_mask(1, size, block_size, mask_rate, g)
    mod = batch["modality"][index : index + 1][0, slot]
    if templates is None:
        crop_a = crop_b = torch.zeros_like(target)
    else:
        origin = batch["template_origin"][index : index + 1]
        spacing = batch["spacing"][index : index + 1]
        crop_a = templates.crop(mod, origin, size, spacing, scale_where=mask_a)
        crop_b = templates.crop(mod, origin, size, spacing, scale_where=mask_b)
    view_a = template_fill(target, crop_a, mask_a)
    view_b, source, _ = cross_modal_fill(image, present, slot, mask_b, crop_b, g, target)
    src = int(source[0])
    return {
        "target": target[0, 0].numpy(),
        "mask": mask_a[0, 0].numpy().astype(np.float32),
        "view_a": view_a[0, 0].numpy(),
        "view_b": view_b[0, 0].numpy(),
        "mask_b": mask_b[0, 0].numpy().astype(np.float32),
        "modality": MODALITIES[int(mod)],
        "source": "template" if src < 0 else MODALITIES[int(batch["modality"][index, src])],
        "study": batch["study"][index],
    }


def preview_figure(
    p: Mapping[str, Any],
    axis: str | int = "axial",
    index: int | None = None,
    keys: Sequence[str] = PREVIEW_KEYS,
    size: float = 2.6,
) -> Figure:
    """One row of panels of a :func:`preview` (target, mask, view A, view B) at one slice."""
    fig = BookFigure(figsize=(size * len(keys), size + 0.5), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        title = PREVIEW_TITLES.get(key, key)
        if key == "view_b":
            title = f"view B: blocks from {p['source']}"
        lim = (0.0, 1.0)
        draw_slice(
            ax,
            p[key],
            axis,
            index,
            cmap="magma" if key.startswith("mask") else "gray",
            vmin=lim[0],
            vmax=lim[1],
            title=title,
        )
    fig.suptitle(f"{p['study']}: target {p['modality']}", fontsize=10)
    return fig


def explorer(
    batch: Mapping[str, Any],
    templates: Templates | None = None,
    index: int = 0,
    mask_rate: float = 0.8,
    block_size: int = 4,
    block_sizes: Sequence[int] = (2, 4, 8),
    seed: int = 0,
) -> Any:
    """An ipywidgets explorer of :func:`preview`: modality, mask rate, block size, slice.

    Returns:
        An ``ipywidgets.VBox`` (controls above the figure). Widgets do not run in the rendered
        book; show :func:`preview_figure` beside it for a static copy.
    """
    import io

    import ipywidgets as w
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    mods = present_modalities(batch, index)
    depth = int(batch["image"].shape[-1])
    c_mod = w.Dropdown(options=mods, value=mods[0], description="modality")
    c_rate = w.FloatSlider(value=mask_rate, min=0.0, max=1.0, step=0.025, description="mask rate")
    c_block = w.Dropdown(
        options=[b for b in block_sizes if b <= depth], value=block_size, description="block size"
    )
    c_slice = w.IntSlider(value=depth // 2, min=0, max=depth - 1, description="slice")
    image = w.Image(format="png")

    def redraw(_: Any = None) -> None:
        p = preview(batch, index, c_mod.value, c_rate.value, int(c_block.value), templates, seed)
        buf = io.BytesIO()
        FigureCanvasAgg(preview_figure(p, "axial", c_slice.value)).print_png(buf)
        image.value = buf.getvalue()

    for c in (c_mod, c_rate, c_block, c_slice):
        c.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([c_mod, c_block]), w.HBox([c_rate, c_slice]), image])


def run_errors(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """Masked-region MSE of a pre-training run's fixed sample batch, before and after training.

    Returns:
        ``{"before": {...}, "after": {...}}`` with the keys of
        :func:`mmlib.runs.sample_errors` (``recon_a``, ``recon_b``: reconstruction
        vs target; ``view_a``, ``view_b``: the filled input vs target), read from the first and
        the last ``samples/step_*.npz`` of the run.

    Raises:
        FileNotFoundError: When the run wrote fewer than two sample files.
    """
    files = list_samples(run_dir)
    if len(files) < 2:
        raise FileNotFoundError(
            f"{run_dir}: needs samples/step_*.npz at two steps; run "
            "mmlib pretrain with samples.n > 0"
        )
    return {
        "before": sample_errors(files[0]),
        "after": sample_errors(files[-1]),
        "steps": {"before": step_of(files[0]), "after": step_of(files[-1])},
    }


@torch.no_grad()
def view_embeddings(
    backbone: Backbone,
    templates: Templates,
    batch: Mapping[str, Any],
    mask_rate: float = 0.8,
    block_size: int = 4,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """L2-normalised flattened deepest features of view A and view B of every study.

    Returns:
        ``(za, zb)``, each ``(B, D)``; row ``i`` of both comes from study ``i``.
    """
    cfg = ObjectiveConfig(
        mask_rate=mask_rate,
        block_size=block_size,
        warmup_epochs=0,
        cl_start_epoch=0,
        w_md=1.0,
        w_cmr=1.0,
        w_cl=1.0,
    )
    obj = BrainMVPObjective(backbone, templates, cfg).eval()
    out = obj(dict(batch), epoch=0, generator=torch.Generator().manual_seed(int(seed)))
    views = torch.cat([out["view_a"], out["view_b"]])
    feats = backbone.encode(views)[-1].flatten(1)
    feats = torch.nn.functional.normalize(feats.float(), dim=1)
    return feats[: len(views) // 2], feats[len(views) // 2 :]


def retrieval(za: Tensor, zb: Tensor, temperature: float = 1.0) -> dict[str, float]:
    """How well each view finds its partner among the batch.

    Returns:
        ``top1`` (fraction of studies whose view A is closest to its own view B, both
        directions averaged), ``pos_cos`` / ``neg_cos`` (mean cosine of positive / negative
        pairs), ``gap`` (their difference) and ``info_nce`` (the loss at ``temperature``).
    """
    from mmlib.proxy.contrastive import info_nce

    sim = za @ zb.T
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    labels = torch.arange(n)
    top1 = 0.5 * (
        (sim.argmax(1) == labels).float().mean() + (sim.argmax(0) == labels).float().mean()
    )
    pos = sim[eye].mean()
    neg = sim[~eye].mean() if n > 1 else torch.tensor(0.0)
    return {
        "top1": float(top1),
        "pos_cos": float(pos),
        "neg_cos": float(neg),
        "gap": float(pos - neg),
        "info_nce": float(info_nce(za, zb, temperature)),
    }


#: A template voxel is "in the head" where at least this fraction of the studies covering it
#: have head (foreground, a non-zero store voxel) there.
HEAD_MAJORITY = 0.5


def modality_mean(
    store: Any,
    modality: str,
    templates: Templates,
    studies: Sequence[str] | None = None,
    head: bool = False,
) -> tuple[np.ndarray, ...]:
    """Mean image of one modality over a store's studies, on the template grid.

    Each study is placed by its head-centred frame (world minus ``center_world``, as the
    sampler places crops) and resampled linearly onto the template grid. By default the
    pre-training studies (``role == "pretrain"``) are averaged: those the templates learn from.

    Args:
        store: a :class:`mmlib.data.store.Store` or its path.
        modality: the modality.
        templates: the template grid.
        studies: the studies averaged. Defaults to None (the pre-training studies).
        head: also return the head fraction. Defaults to False.

    Returns:
        ``(mean (X, Y, Z), count (X, Y, Z))``: the mean over the studies covering each voxel
        and how many do (0 outside every study's box); with ``head``, also ``head (X, Y, Z)``:
        the fraction of those studies with head (a non-zero voxel) there. The boxes reach far
        beyond the heads (IXI's and ADNI's fields of view hold the neck): a template is only
        meant to be anatomy where ``head >= HEAD_MAJORITY``.
    """
    from scipy.ndimage import affine_transform

    from mmlib.data.store import Store

    st = store if isinstance(store, Store) else Store(store)
    if studies is None:
        man = st.manifest
        pre = man["role"] == "pretrain" if "role" in man else None
        studies = man.loc[pre, "study"].tolist() if pre is not None and pre.any() else st.studies()
    rows = [st.row(s) for s in studies]
    rows = [r for r in rows if modality in r["modalities"]]
    shape = templates.shape
    t_aff = templates.affine
    total = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.float64)
    inside = np.zeros(shape, dtype=np.float64)
    for r in rows:
        aff = np.asarray(r["affine"], dtype=np.float64)
        # template voxel -> head-centred mm -> study world mm -> study voxel
        shift = np.eye(4)
        shift[:3, 3] = np.asarray(r["center_world"], dtype=np.float64)
        m = np.linalg.inv(aff) @ shift @ t_aff
        vol = np.asarray(st.image(r["study"], modality), dtype=np.float32)
        res = affine_transform(vol, m[:3, :3], m[:3, 3], output_shape=shape, order=1, cval=np.nan)
        ok = np.isfinite(res)
        total[ok] += res[ok]
        count[ok] += 1
        if head:
            fg = (vol > 0).astype(np.float32)
            inside += affine_transform(fg, m[:3, :3], m[:3, 3], output_shape=shape, order=0)
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    out = (mean.astype(np.float32), count.astype(np.float32))
    if not head:
        return out
    frac = np.where(count > 0, inside / np.maximum(count, 1), 0.0)
    return (*out, frac.astype(np.float32))


def _head(entry: Sequence[np.ndarray]) -> np.ndarray | None:
    """The head fraction of a :func:`modality_mean` result, None when it has none."""
    return entry[2] if len(entry) > 2 else None


def template_agreement(
    template: np.ndarray | Tensor,
    mean: np.ndarray,
    count: np.ndarray,
    head: np.ndarray | None = None,
) -> float:
    """Pearson correlation of a (min-max scaled) template with a mean image.

    Over the voxels in the head (``head >= HEAD_MAJORITY``, see :func:`modality_mean`) when
    ``head`` is given, else over every voxel some study covers (``count > 0``). Returns 0.0 for
    a constant template (e.g. the zeros it starts from).
    """
    t = (
        template.detach().float().cpu()
        if isinstance(template, Tensor)
        else torch.as_tensor(np.asarray(template, dtype=np.float32))
    )
    scaled = scaled_volumes(t.unsqueeze(0))[0].numpy()
    sel = np.asarray(count) > 0
    if head is not None:
        sel &= np.asarray(head) >= HEAD_MAJORITY
    a, b = scaled[sel].astype(np.float64), np.asarray(mean)[sel].astype(np.float64)
    if a.size < 2 or a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def modality_means(
    store: Any, modalities: Sequence[str], templates: Templates
) -> dict[str, tuple[np.ndarray, ...]]:
    """:func:`modality_mean` of each modality, with its head fraction:
    ``{modality: (mean, count, head)}``."""
    return {m: modality_mean(store, m, templates, head=True) for m in modalities}


def template_corr(
    templates: Templates, means: Mapping[str, tuple[np.ndarray, ...]], where: str = "head"
) -> dict[str, float]:
    """``template_corr``: modality -> correlation of its learned template with its mean image.

    :func:`template_agreement` of each modality of ``means`` (``(mean, count)`` or ``(mean,
    count, head)`` from :func:`modality_mean`), in template space: in the head when ``means``
    carries the head fraction and ``where`` is ``"head"`` (the measure chapter 05 reports),
    over every covered voxel when ``where`` is ``"box"`` (the union of the studies' boxes: the
    neck and background of wide fields of view, where no crop teaches the template anything,
    count as much as the head there).
    """
    if where not in ("head", "box"):
        raise ValueError(f"template_corr: where should be 'head' or 'box', got {where!r}")
    vols = templates.volumes.detach()
    return {
        m: template_agreement(
            vols[MODALITIES.index(m)],
            entry[0],
            entry[1],
            _head(entry) if where == "head" else None,
        )
        for m, entry in means.items()
    }


def template_figure(
    templates: Templates,
    means: Mapping[str, tuple[np.ndarray, ...]],
    axis: str | int = "axial",
    size: float = 2.4,
) -> Figure:
    """Learned templates (top row, min-max scaled) against their modality's mean image (bottom)."""
    names = list(means)
    fig = BookFigure(figsize=(size * len(names), 2 * size + 0.4), layout="constrained")
    axes = fig.subplots(2, len(names), squeeze=False)
    vols = templates.volumes.detach().float().cpu()
    scaled = templates.scaled().cpu()
    for c, name in enumerate(names):
        mean, count = means[name][:2]
        t = scaled[MODALITIES.index(name)].numpy()
        z = None  # the middle slice: the grid is centred on the head
        r = template_agreement(vols[MODALITIES.index(name)], mean, count, _head(means[name]))
        draw_slice(
            axes[0, c],
            t,
            axis,
            z,
            cmap="gray",
            vmin=0.0,
            vmax=1.0,
            title=f"template {name} (r = {r:.2f})",
        )
        draw_slice(
            axes[1, c],
            mean,
            axis,
            z,
            cmap="gray",
            vmin=0.0,
            vmax=1.0,
            title=f"mean {name} ({int(count.max())} studies)",
        )
    return fig


def run_model(run_dir: str | Path, initial: bool = False) -> tuple[torch.nn.Module, Templates]:
    """The backbone and templates of a pre-training run: trained, or as they started.

    Args:
        run_dir: a run folder of :func:`mmlib.engine.pretrain.pretrain`.
        initial: rebuild the step-0 network instead (the engine seeds ``train.seed`` before
            building the backbone; the templates start at zero). Defaults to False (the latest
            checkpoint).

    Returns:
        ``(backbone, templates)``, both in ``eval()`` mode on the CPU.
    """
    from mmlib.data.store import Store
    from mmlib.models import build_backbone

    cfg = read_config(run_dir)
    if cfg is None:
        raise FileNotFoundError(f"{run_dir}: no config.json; pass a run folder of mmlib pretrain")
    templates = Templates(
        spacing=Store(cfg["data"]["store"]).spacing,
        scaling=scaling_of({"objective": cfg.get("objective")}),  # the rule it was trained with
    )
    if initial:
        torch.manual_seed(int(cfg["train"]["seed"]))
        size = {**cfg["model"]["size"], "in_channels": 1}
        backbone = build_backbone(cfg["model"]["name"], **size)
    else:
        from mmlib.models.checkpoints import load_pretrained

        backbone, volumes, _, _ = load_pretrained(latest_checkpoint(run_dir))
        if volumes is not None:
            templates.volumes.data.copy_(volumes.float())
    return backbone.eval(), templates.eval()


def similarity_figure(pairs: Mapping[str, tuple[Tensor, Tensor]], size: float = 3.0) -> Figure:
    """Cosine similarity of every view A (rows) with every view B (columns), one panel per entry.

    The diagonal holds the positive pairs (two views of one study); a contrastive encoder makes
    it stand out. Each panel has its own colour range (the similarities of an encoder can all
    lie close together).
    """
    fig = BookFigure(figsize=(size * len(pairs), size + 0.4), layout="constrained")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (name, (za, zb)) in zip(axes, pairs.items()):
        sim = (za @ zb.T).numpy()
        im = ax.imshow(sim, cmap="viridis", vmin=float(sim.min()), vmax=float(sim.max()))
        r = retrieval(za, zb)
        ax.set_title(f"{name}: top-1 {r['top1']:.2f}, gap {r['gap']:.3f}", fontsize=9)
        ax.set_xlabel("view B of study")
        ax.set_ylabel("view A of study")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def crop_boxes_figure(
    image: np.ndarray,
    templates: Templates,
    batch: Mapping[str, Any],
    size: float = 4.0,
    title: str | None = None,
) -> Figure:
    """Where the crops of a batch fall in template space (axial view through the grid centre).

    Args:
        image: a volume on the template grid (e.g. a modality's mean image).
        templates: the template grid (shape, spacing, origin).
        batch: a sampler batch (``template_origin``, ``spacing``, ``image``).
        size: figure height in inches. Defaults to 4.0.
        title: figure title. Defaults to None.
    """
    from matplotlib.patches import Rectangle

    sp = templates.spacing.numpy().astype(float)
    org = templates.origin.numpy().astype(float)
    fig = BookFigure(
        figsize=(size * image.shape[0] / image.shape[1] + 0.5, size), layout="constrained"
    )
    ax = fig.subplots()
    z = image.shape[2] // 2
    ax.imshow(image[:, :, z].T, cmap="gray", origin="lower", vmin=0.0, vmax=1.0)
    crop = np.asarray(batch["image"].shape[2:], dtype=float)
    for b, study in enumerate(batch["study"]):
        start = (batch["template_origin"][b].numpy() - org) / sp
        extent = crop * batch["spacing"][b].numpy() / sp
        ax.add_patch(
            Rectangle(
                (start[0] - 0.5, start[1] - 0.5),
                extent[0],
                extent[1],
                fill=False,
                lw=1.2,
                color=f"C{b % 10}",
            )
        )
        ax.text(start[0], start[1] + extent[1], study, color=f"C{b % 10}", fontsize=6, va="bottom")
    ax.set_title(title or f"crops in template space (axial, z = {z})", fontsize=9)
    ax.set_axis_off()
    return fig
