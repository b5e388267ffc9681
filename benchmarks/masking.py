"""Batched block masking and fills (mmlib.proxy) against a per-study loop like the authors'.

Both sides build the two BrainMVP views of a batch: a fresh random block mask per view and per
study, view A filled from the template crop of the target modality, view B from another present
modality of the same study. The baseline loops over studies and over masked blocks in Python,
copying one cube at a time, as the released training code does; mmlib draws all masks with one
topk and fills with one ``torch.lerp`` per view, on the batch's device.

Two settings are timed, the forward pass only: ``no_grad`` and ``train`` (the templates are a
learnable parameter, as in pre-training, so autograd records the fills; mmlib's template
scaling uses the pre-training default ``ObjectiveConfig.template_grad``, straight-through,
``--template-grad exact`` for the exact gradient). The template grid is the default head box
at 1 mm (192 x 228 x 192), the batch B x 4 modalities of S^3 crops. Each side runs
``--repeats`` times (default 7), interleaved, after a warm-up; medians, spreads and the load
average are printed (see ``harness.py``).

Then the share of a demo pre-training step spent in masking, fills and template crops: the
forward of mmlib's masking, fills and crops at the demo preset (batch 4, 32^3 at 2 mm, block 4)
against one full step of :class:`mmlib.proxy.brainmvp.BrainMVPObjective` (demo U-Net, both
views and the contrastive term, forward + backward), interleaved likewise.

Run: ``OMP_NUM_THREADS=1 python benchmarks/masking.py [--batch 3] [--size 96] [--block 8]``
(about 1 minute). The last line printed is the ratio of medians (per-study loop / mmlib,
wall time, ``train``).

Where the time goes (B=3, 96^3, 1 thread): mmlib makes about seven passes over the 10 MB batch
(target and source selection, template gather, the scaling's statistics, scaling, two fills);
the authors' loop spends most of its time min-max scaling the whole template volume once per
study and per view (8.4 M voxels each time, two fresh 33 MB temporaries: ~100,000 minor page
faults per call) and in boolean-index assignment.

The template scaling timed is the objective's (``ObjectiveConfig.template_scaling`` where it
exists, printed in the header): ``crop`` takes each crop's range over the view's masked blocks
(per-block minimum and maximum on the block grid, then over the masked blocks); ``global``
(the official rule) the range of the whole template of the modality, which
:func:`mmlib.proxy.masking.modality_minmax` computes once per distinct modality of the batch
(one whole-volume ``aminmax``, 1.5 ms per 192 x 228 x 192 template on one thread).

Kept (each measured with this script's sides interleaved, thread CPU time, minimum of 7-9
runs, as the shared machine was at load 15-24 when they were made; results bit-identical, see
tests/test_proxy_masking.py):

- fill weights in block form (:func:`mmlib.proxy.masking.block_weight`): the block grid
  written along z only and expanded (stride 0) along the block's x and y,
  ``(B, 1, gx, bx, gy, by, gz, bz)``, 166 kB instead of 10.6 MB per view, read by one
  ``torch.lerp`` over the same view of the images (0.75-1.0 ms, as fast as voxel weights,
  0.9-1.3 ms): no voxel weight is expanded (0.45 ms) or faulted in (2,600 pages) per view.
  mmlib's side went from 12.7-17.6 to 10.9-11.0 ms CPU per call (minimum of 9, train, crop
  scaling).
- a fill under autograd saves its weights only (``_Fill01``: torch.lerp's gradients from the
  weights; ``LerpBackward`` saves the target and the template crop too): the scaled crop is
  freed after view A instead of living until the backward pass (10.6 MB less per view at
  B=3, 96^3, in training as here); bit-identical values and gradients. Its speed effect was
  within the noise at load 19 (median CPU 21.9-24.0 against 13.8-24.4 ms per call).
- ``topk`` instead of a full ``argsort`` to keep the lowest scores of each study's draw (the
  same set: 0.016 ms against 0.23 ms per mask).
- ``global`` statistics by :func:`~mmlib.proxy.masking.modality_minmax` instead of ``amin`` /
  ``amax`` along ``dim=1`` of all eight templates (21 ms per crop call on CPU, one thread):
  with that call mmlib's side took 29 ms CPU per call (13.5x), with ``modality_minmax``
  15.6 ms (24x CPU time, 20x wall at load 24).

- view A in one pass per study (:meth:`mmlib.proxy.templates.Templates.fill`, issue 17's
  second round; the objective's call): each study's scaled template window written straight
  into the view (``torch.add`` with a Python scale: 0.11 ms per 96³ window in cache, against
  0.61 ms for ``addcmul`` with 0-dim tensors, which takes a slow broadcasting path), then the
  kept voxels blended in place: one fresh full-size tensor instead of three (gather, scaling,
  fill). View B reads each study's source in place from the batch (no gathered copy). Minor
  page faults per call with the heap trimmed between calls: 8,700 before, 3,600 after
  (standalone loop, 1 thread). Measured on a quiet machine (load 0.3-0.7, 1 thread, 9-15
  interleaved runs), the medians barely moved: mmlib's side is now bound by memory traffic,
  ~217 MB per call (the target gather, both views, and the ``global`` rule's statistics,
  which read each distinct modality's whole 33 MB template: 100 MB, 5.1 ms of ~15 ms).

Where the ratio stands, and why (quiet machine, 1 thread): with glibc's default heap
trimming the last line varied 14-24x between identical runs (mmlib's median 13-29 ms, min
11-13 ms; its slow calls have no page faults of their own but 5-28 ms of system time: the
heap grown by the authors' call is trimmed (``brk``) inside mmlib's timed call, seen with
``strace``). With trimming off for both sides (``MALLOC_TRIM_THRESHOLD_=4294967296
MALLOC_MMAP_THRESHOLD_=1073741824``), which removes the page-fault costs of both, the authors'
loop takes 228 ms and mmlib 14.5 ms: 15.8x, the ratio of the work itself; with 2 threads
117 vs 9.4 ms (12.5x). Both sides then read and write memory at its speed, and the global
rule's whole-template statistics alone are a third of mmlib's traffic, so ~18x is the most a
bandwidth-bound eager implementation gets here; a fused single-pass kernel (Triton or C++)
would be the next step.

Tried and left out:

- ``torch.where`` with the bool mask instead of ``lerp`` with weights: 1.8-2.0 ms per fill
  against 0.9-1.0 ms (the bool-conditioned kernel is not vectorised); with the block mask
  broadcast like the block weights, 4 ms.
- copying only the kept blocks (20 %) into the other image, by advanced indexing of the
  block view (``index_put_``): 10-22 ms per fill (strided 32-byte rows, one index per row).
- output buffers kept across calls (no fresh pages): the views, masks and targets are the
  objective's outputs (its result dict, autograd's saved tensors), so a reused buffer would
  overwrite a view the caller still holds; only internal temporaries could be pooled, and in
  this path they are the template gather and the block statistics, in templates.py.
- PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` (transparent huge pages for large tensors, the
  machine's THP mode is ``madvise``): it cuts the page faults of both sides (the authors'
  from 115,000 to 15,000 per call) and helps the baseline more (ratio 12-14x against 21-22x
  without), so it is no lever for mmlib; glibc's trimming off
  (``MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_MMAP_THRESHOLD_=1073741824``) likewise speeds
  up both sides (issue 17: the authors' loop about 2x).
- the template gather scaled in place (``addcmul(..., out=crop)``, an in-place
  straight-through map) and view A written over it (a ``lerp`` into the scaled crop, its
  own autograd function): two fresh 10.6 MB tensors fewer, but no faster (median thread CPU
  time 21.0-21.6 ms against 17.7-19.2 ms per call, train, global scaling, load 16-19, 15
  runs; no page faults in the median call of either), so left out.
- ``torch.compile`` of the fused gather, scaling and fills (issue 17): 6 ms per call against
  ~5 ms for the eager kernels it replaces, after 19 s of compilation.
- Issue 17 also measured the kernel time of fresh pages: with glibc's default heap trimming,
  freed 10 MB tensors go back to the kernel between calls, so every call faults its
  temporaries in again (4-40 ms of kernel time, 2,400-20,000 minor faults, varying between
  identical runs); hence fewer fresh full-size tensors per call (the block statistics reduce
  in place in their own temporaries, view B is written over its own source gather, and now no
  voxel weights). Scaling the template gather in place was tried then: it saves a fresh
  tensor but the aliased ``addcmul`` ran 0.1-0.8 ms slower, so it was left out.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch

from mmlib.proxy.masking import (
    block_mask,
    cross_modal_fill,
    sample_slot,
    select_slot,
    template_fill,
)
from mmlib.proxy.templates import Templates

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    Runs,
    add_arguments,
    check_load,
    interleave,
    ratio,
    ratio_line,
    summarize,
    time_call,
)


def _authors_block_replace(x, fill_from, block, rate):
    """One study, one view, as the released ``Uniform_block_replace``: a randperm of block
    coordinates, a sparse-to-dense keep grid expanded to voxels, boolean-index assignment."""
    out = x.detach().clone()
    h, w, z = out.shape
    gh, gw, gz = h // block, w // block, z // block
    c1, c2, c3 = torch.meshgrid(torch.arange(gh), torch.arange(gw), torch.arange(gz), indexing="ij")
    cor = torch.stack((c1, c2, c3), dim=3).reshape(-1, 3)
    kept = cor[torch.randperm(len(cor))][: math.floor(len(cor) * (1 - rate))]
    keep = torch.sparse_coo_tensor(
        kept.T,
        torch.ones(kept.shape[0], dtype=torch.bool),
        size=(gh, gw, gz),
        check_invariants=False,  # torch's default, stated (it warns otherwise)
    ).to_dense()
    keep = keep.view(gh, 1, gw, 1, gz, 1).expand(-1, block, -1, block, -1, block).reshape(h, w, z)
    mask = ~keep
    out[mask] = fill_from[mask]
    return out


def authors_style(
    image, present, target_slot, templates, modality, start, size, block, rate, rng, use_template
):
    """Per-study loop as the released ``aug_rand_with_learnable_rep``: for every study, min-max
    scale the whole template of its modality, slice the crop, draw the other modality, replace."""
    bsz = image.shape[0]
    x_aug = image.detach().clone()
    for i in range(bsz):
        t = target_slot[i]
        tmpl = templates[modality[i]]
        tmpl = (tmpl - tmpl.min()) / (tmpl.max() - tmpl.min() + 1e-9)
        sx, sy, sz = (int(v) for v in start[i])
        tmpl = tmpl[sx : sx + size, sy : sy + size, sz : sz + size]
        if use_template:
            other = tmpl
        else:
            others = [k for k in range(image.shape[1]) if present[i, k] and k != t]
            other = image[i, rng.choice(others)] if others else tmpl
        x_aug[i, t] = _authors_block_replace(image[i, t], other, block, rate)
    return x_aug[torch.arange(bsz), target_slot].unsqueeze(1)


def mmlib_batched(
    image,
    present,
    target_slot,
    templates,
    modality,
    origin,
    block,
    rate,
    gen,
    straight_through=False,
    scaling=None,
):
    """mmlib: batched masks, batched template gather, batched fills (as the objective)."""
    bsz, _, *size = image.shape
    target = select_slot(image, target_slot)
    mask_a, weight_a = block_mask(bsz, size, block, rate, gen, image.device, return_weight=True)
    if hasattr(templates, "fill"):  # one pass per study (the objective's call since issue 17)
        view_a = templates.fill(
            target,
            weight_a,
            modality,
            origin,
            scale_where=mask_a,
            scale_block=block,
            straight_through=straight_through,
            **({} if scaling is None else {"scaling": scaling}),
        )
        crop = None  # the objective crops for view B only when a study has one modality
    else:
        crop = templates.crop(
            modality,
            origin,
            size,
            scale=True,
            scale_where=mask_a,
            scale_block=block,
            straight_through=straight_through,
            **({} if scaling is None else {"scaling": scaling}),
        )
        view_a = template_fill(target, crop, weight_a)
    mask_b, weight_b = block_mask(bsz, size, block, rate, gen, image.device, return_weight=True)
    view_b, _, _ = cross_modal_fill(image, present, target_slot, weight_b, crop, gen, target)
    return view_a, view_b


def mmlib_settings(template_grad: str) -> bool:
    """``straight_through`` for mmlib's template scaling (the objective's default or not)."""
    return template_grad == "straight_through"


def objective_scaling() -> str | None:
    """The pre-training default template scaling (``ObjectiveConfig.template_scaling``,
    ``global`` or ``crop``), passed to ``Templates.crop`` as the objective does; None for an
    objective with the single per-crop rule (before ``objective.template_scaling``)."""
    from mmlib.proxy.brainmvp import ObjectiveConfig

    return getattr(ObjectiveConfig(), "template_scaling", None)


def step_share(repeats: int) -> tuple[Runs, Runs]:
    """Seconds of one demo pre-training step and of its masking, fills and crops (forward)."""
    from mmlib.models import build_backbone
    from mmlib.proxy.brainmvp import BrainMVPObjective, ObjectiveConfig

    torch.manual_seed(0)
    bsz, k, s, block, spacing = 4, 4, 32, 4, 2.0  # the demo preset (pretrain_demo.yaml)
    cfg = ObjectiveConfig(block_size=block, warmup_epochs=1, cl_start_epoch=4)
    templates = Templates(spacing=spacing)
    objective = BrainMVPObjective(build_backbone("unet", in_channels=1), templates, cfg)
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(bsz, k, s, s, s, generator=g),
        "present": torch.ones(bsz, k, dtype=torch.bool),
        "modality": torch.arange(k).repeat(bsz, 1),
        "template_origin": torch.full((bsz, 3), -s * spacing / 2),
        "spacing": torch.full((bsz, 3), spacing),
        "study": [str(i) for i in range(bsz)],
    }
    gen = torch.Generator().manual_seed(1)
    slot, _ = sample_slot(batch["present"], g)
    modality = batch["modality"][torch.arange(bsz), slot]

    def step() -> float:
        t = time.perf_counter()
        out = objective(batch, epoch=5, generator=gen)  # views A and B and the contrastive term
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return time.perf_counter() - t

    def masking() -> float:
        t = time.perf_counter()
        mmlib_batched(
            batch["image"],
            batch["present"],
            slot,
            templates,
            modality,
            batch["template_origin"],
            block,
            cfg.mask_rate,
            gen,
            straight_through=mmlib_settings(cfg.template_grad),
            scaling=getattr(cfg, "template_scaling", None),
        )
        return time.perf_counter() - t

    runs = interleave({"step": step, "masking": masking}, repeats, warmup=True)
    return runs["step"], runs["masking"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--block", type=int, default=8)
    p.add_argument("--rate", type=float, default=0.8)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--template-grad",
        choices=("straight_through", "exact"),
        default="straight_through",
        help="mmlib's gradient through the template scaling in 'train' (default: "
        "the pre-training default, straight_through)",
    )
    p.add_argument(
        "--no-step-share", action="store_true", help="skip the share of a demo pre-training step"
    )
    add_arguments(p, repeats=7)
    args = p.parse_args()
    check_load(args.busy)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    bsz, k, s = args.batch, 4, args.size
    image = torch.rand(bsz, k, s, s, s, generator=g).to(dev)
    present = torch.ones(bsz, k, dtype=torch.bool, device=dev)
    templates = Templates(spacing=1.0)
    templates.volumes.data.uniform_(0, 1, generator=g)
    templates = templates.to(dev)
    target_slot, _ = sample_slot(present.cpu(), g)
    target_slot = target_slot.to(dev)
    modality = (torch.arange(bsz) % 8).to(dev)
    origin = torch.full((bsz, 3), -s / 2.0, device=dev)
    start = torch.round((origin - templates.origin) / templates.spacing).long().cpu()
    slot_list, mod_list = target_slot.tolist(), modality.tolist()
    rng = random.Random(0)
    gen = torch.Generator(device=dev).manual_seed(0)
    scaling = objective_scaling()
    print(
        f"B={bsz} size={s}^3 block={args.block} rate={args.rate} device={dev} "
        f"threads={torch.get_num_threads()} mmlib template_grad (train)={args.template_grad} "
        f"template_scaling={scaling or 'crop'} (the pre-training default)"
    )
    results: dict[str, dict[str, Runs]] = {}
    for setting in ("no_grad", "train"):
        # "train": the templates are learnable (requires_grad), as during pre-training
        templates.volumes.requires_grad_(setting == "train")
        vols = templates.volumes
        straight = setting == "train" and mmlib_settings(args.template_grad)

        def baseline(vols=vols):
            return time_call(
                lambda: (
                    authors_style(
                        image,
                        present,
                        slot_list,
                        vols,
                        mod_list,
                        start,
                        s,
                        args.block,
                        args.rate,
                        rng,
                        use_template=True,
                    ),
                    authors_style(
                        image,
                        present,
                        slot_list,
                        vols,
                        mod_list,
                        start,
                        s,
                        args.block,
                        args.rate,
                        rng,
                        use_template=False,
                    ),
                ),
                sync,
            )

        def ours(straight=straight):
            return time_call(
                lambda: mmlib_batched(
                    image,
                    present,
                    target_slot,
                    templates,
                    modality,
                    origin,
                    args.block,
                    args.rate,
                    gen,
                    straight_through=straight,
                    scaling=scaling,
                ),
                sync,
            )

        with torch.set_grad_enabled(setting == "train"):
            results[setting] = interleave(
                {"authors": baseline, "mmlib": ours}, args.repeats, warmup=True
            )
        for name, label in (
            ("authors", "authors-style per-study loop (views A and B)"),
            ("mmlib", "mmlib batched (views A and B)"),
        ):
            print(summarize(f"[{setting}] {label}", results[setting][name], "ms", 1e3))
    print(
        f"[no_grad] ratio of medians: "
        f"{ratio(results['no_grad']['authors'], results['no_grad']['mmlib']):.1f}x"
    )
    if not args.no_step_share and dev.type == "cpu":
        step, mask = step_share(args.repeats)
        print(
            summarize(
                "demo pre-training step (B=4, 32^3 at 2 mm, U-Net, fwd+bwd+AdamW)", step, "ms", 1e3
            )
        )
        print(summarize("  of which masking, fills and template crops (forward)", mask, "ms", 1e3))
        print(
            f"share of the demo step in masking, fills and template crops: "
            f"{100 * mask.median / step.median:.1f} %"
        )
    print(
        ratio_line(
            "per-study loop / mmlib (wall, forward, templates learnable as in training)",
            results["train"]["authors"],
            results["train"]["mmlib"],
        )
    )


if __name__ == "__main__":
    main()
