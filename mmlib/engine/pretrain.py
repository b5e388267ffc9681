"""Self-supervised pre-training: config → store and sampler → backbone → objective → AdamW → loop.

One code path from a 2-core CPU to many GPU nodes::

    mmlib pretrain --config demo                                   # CPU or one GPU
    mmlib pretrain --config paper data.store=/data/store           # one GPU, paper preset
    torchrun --nproc-per-node 8 -m mmlib pretrain --config paper   # 8 GPUs on one node
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m mmlib pretrain --config paper  # 4 nodes

The loop: gradient accumulation over ``train.accum`` micro-batches (``no_sync`` under DDP
until the last), mixed precision (``train.amp``: ``auto`` = bf16 autocast where the GPU has it,
fp16 with a ``GradScaler`` on other GPUs, off on CPU; ``bf16``/``fp16``/``off`` force it),
gradient clipping (``train.clip``, the norm is logged), AdamW with warm-up and cosine decay
counted in optimiser steps (:mod:`mmlib.engine.schedule`), a progress bar, and periodic atomic
checkpoints (:mod:`mmlib.engine.checkpointing`) from which a killed run resumes bit for bit.

The template volumes are a parameter group of their own (:func:`optimizer_groups`): learning
rate ``optim.template_lr`` (null: ``optim.lr``), weight decay ``optim.template_weight_decay``
(default 0: a decay pulls every template voxel towards 0 whether or not a crop used it), and,
unless ``train.clip_templates``, outside the gradient-norm clip: a template voxel's gradient is
tiny against the backbone's, and one clip over both mostly shrinks what AdamW's per-voxel
normalisation would have kept (the official code applies no clip at all).

Determinism: the studies of every optimiser step come from :class:`StepBatchSampler` (a
function of seed, epoch and position), and every random draw of the objective (target modality,
masks, cross-modal source) comes from a generator re-seeded per micro-batch from
``(seed, step, chunk)``. A resumed run, or a run split differently between ranks and
accumulation, therefore sees the same batches and the same masks.

The run folder (``run.root/run.name``, default ``work_dir(scale)/runs/pretrain/<objective>-
<backbone>-<hash of the config>``)::

    config.json          the resolved configuration
    metrics.csv          one row per optimiser step (loss terms, lr, samples/s, data wait, memory,
                         ``skipped``: 1 where non-finite gradients skipped the update)
    tb/                  TensorBoard events (when tensorboard is installed)
    checkpoints/step_XXXXXXX/  model.safetensors + meta.json + train_state.pt
    checkpoints/latest   name of the newest checkpoint
    samples/step_XXXXXXX.npz   views and reconstructions of a fixed few studies
    results.json         final losses, steps, time, throughput
    DONE                 written last

A finished run with the same resolved configuration is returned at once; an unfinished one
resumes from its latest checkpoint. The run folder's format is :mod:`mmlib.runs`'s; the
configuration is bound to the machine by :mod:`mmlib.engine.binding`; :func:`launch` runs the
same job in several processes from Python (:func:`mmlib.engine.distributed.launch`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmlib.engine import checkpointing as ckpt
from mmlib.engine import distributed as D
from mmlib.engine.binding import (
    MixedPrecision,
    amp_name,
    default_run_dir,
    resolve,
)
from mmlib.engine.config import config_hash, diff, identity, load_config
from mmlib.engine.metrics import MetricsLogger, peak_memory_mb
from mmlib.engine.sampling import StepBatchSampler
from mmlib.engine.schedule import adamw, build_scheduler
from mmlib.runs import (
    SAMPLE_KEYS,
    find_latest,
    is_done,
    latest_checkpoint,
    mark_done,
    read_config,
    read_metrics,
    write_config,
    write_json,
    write_samples,
)

STEP_HOOK: Any = None
"""Called as ``STEP_HOOK(step)`` after each optimiser step (fault-injection tests kill the
process there). None in normal use."""


# --------------------------------------------------------------------------------- the loop
def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch on ``device``; a float16 image (the loader's transport dtype) becomes float32
    there, after the transfer (half the bytes moved; float16 -> float32 is exact)."""
    nb = device.type == "cuda"
    out = {
        k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v)
        for k, v in batch.items()
    }
    if out["image"].dtype == torch.float16:
        out["image"] = out["image"].float()
    return out


def _scalars(out: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v.detach())
        for k, v in out.items()
        if isinstance(v, torch.Tensor) and v.dim() == 0 and v.is_floating_point()
    }


def _select_studies(store: Any, spec: Any) -> list[str] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return store.studies(split=spec)
    if isinstance(spec, Mapping):
        return store.studies(**spec)
    return [str(s) for s in spec]


def optimizer_groups(objective: nn.Module, optim: Mapping[str, Any]) -> list[dict[str, Any]]:
    """AdamW parameter groups: the network (group 0), then the template volumes (if any).

    Args:
        objective: a :class:`~mmlib.proxy.brainmvp.BrainMVPObjective` (its ``templates``, when
            not None, hold the template volumes).
        optim: the ``optim`` section: ``lr``, ``weight_decay``, ``template_lr`` (None: ``lr``),
            ``template_weight_decay``.

    Returns:
        ``[{"params", "lr", "weight_decay", "name": "network"}, {..., "name": "templates"}]``;
        one group when the objective has no templates.
    """
    templates = getattr(objective, "templates", None)
    tpl = [] if templates is None else [p for p in templates.parameters() if p.requires_grad]
    ids = {id(p) for p in tpl}
    net = [p for p in objective.parameters() if p.requires_grad and id(p) not in ids]
    groups: list[dict[str, Any]] = [
        {
            "params": net,
            "lr": float(optim["lr"]),
            "weight_decay": float(optim["weight_decay"]),
            "name": "network",
        }
    ]
    if tpl:
        t_lr = optim.get("template_lr")
        groups.append(
            {
                "params": tpl,
                "lr": float(optim["lr"] if t_lr is None else t_lr),
                "weight_decay": float(optim.get("template_weight_decay", 0.0)),
                "name": "templates",
            }
        )
    return groups


class Trainer:
    """One pre-training run (built by :func:`pretrain`; exposed for notebooks that step it).

    Args:
        cfg: a resolved configuration (:func:`resolve`).
        run_dir: the run folder.
        info: this process's place in the job (:func:`mmlib.engine.distributed.setup`).
        progress: show a progress bar on rank 0. Defaults to True.
    """

    def __init__(
        self, cfg: dict[str, Any], run_dir: Path, info: D.DistInfo, progress: bool = True
    ) -> None:
        from mmlib.data.sampler import PretrainDataset
        from mmlib.data.store import Store
        from mmlib.models import build_backbone
        from mmlib.proxy.brainmvp import BrainMVPObjective, ObjectiveConfig
        from mmlib.proxy.templates import Templates
        from mmlib.tasks import check_pretrain_studies

        self.cfg, self.run_dir, self.info, self.progress = cfg, Path(run_dir), info, progress
        t, d = cfg["train"], cfg["data"]
        self.seed = int(t["seed"])
        self.accum = int(t["accum"])
        torch.manual_seed(self.seed)
        # numpy's global state is seeded (and checkpointed) on purpose: exact resume
        np.random.seed((self.seed + info.rank) % 2**32)  # noqa: NPY002
        import random

        random.seed(self.seed + info.rank)

        self.store = Store(d["store"])
        studies = _select_studies(self.store, d.get("studies"))
        # for a GPU, float16 through shared memory, pinning and the copy to the device, which
        # converts to float32 (exact, in _to_device); on CPU that conversion would be one more
        # pass over the batch in the training process, so the loader serves float32
        self.dataset = PretrainDataset(
            self.store,
            d["crop_size"],
            d["k"],
            studies,
            self.seed,
            image_dtype=torch.float16 if info.device.type == "cuda" else torch.float32,
        )
        # a downstream task's test study seen in pre-training would inflate its fine-tuned scores
        check_pretrain_studies(self.dataset.studies, self.store.manifest)
        self.sampler = StepBatchSampler(
            len(self.dataset), t["batch_size"], self.accum, info.rank, info.world_size, self.seed
        )
        self.steps_per_epoch = self.sampler.steps
        total = math.ceil(float(cfg["schedule"]["epochs"]) * self.steps_per_epoch)
        if t["max_steps"] is not None:
            total = min(total, int(t["max_steps"]))
        self.total = max(total, 1)

        torch.manual_seed(self.seed)
        size = {**cfg["model"]["size"], "in_channels": 1}
        backbone = build_backbone(cfg["model"]["name"], **size)
        objective_cfg = ObjectiveConfig.from_dict(
            {k: v for k, v in cfg["objective"].items() if k != "name"}
        )
        self.templates = Templates(
            spacing=self.store.spacing, scaling=objective_cfg.template_scaling
        )
        self.objective = BrainMVPObjective(backbone, self.templates, objective_cfg)
        if t.get("sync_bn") and info.distributed:
            self.objective = nn.SyncBatchNorm.convert_sync_batchnorm(self.objective)
        self.objective.to(info.device)
        self.model: nn.Module = self.objective
        if info.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.objective,
                device_ids=[info.device] if info.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        o = cfg["optim"]
        self.optimizer = adamw(
            optimizer_groups(self.objective, o),
            lr=float(o["lr"]),
            betas=tuple(o["betas"]),
            weight_decay=float(o["weight_decay"]),
        )
        self.scheduler = build_scheduler(
            self.optimizer, self.total, int(o["warmup_steps"]), float(o["min_lr"])
        )
        self.amp = MixedPrecision(t["amp"], info.device, self.objective)
        self.generator = torch.Generator(device=info.device)
        self.step = 0
        self.elapsed_before = 0.0

    # ------------------------------------------------------------------ state
    def _cuda_device(self) -> torch.device | None:
        """This rank's device when it is a GPU (its RNG is saved too), else None."""
        return self.info.device if self.info.device.type == "cuda" else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Weights: ``backbone.*``, ``templates.volumes`` (and the projection head, if any)."""
        return dict(self.objective.state_dict())

    def meta(self) -> dict[str, Any]:
        """Checkpoint metadata (mmlib's pre-training convention)."""
        from mmlib import __version__
        from mmlib.modalities import MODALITIES

        bb = self.objective.backbone
        return {
            "kind": "pretrain",
            "model": {
                "name": self.cfg["model"]["name"],
                "size": dict(getattr(bb, "size", self.cfg["model"]["size"])),
            },
            "modalities": list(MODALITIES),
            "template_affine": np.asarray(self.templates.affine).tolist(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "objective": self.cfg["objective"],
            "config": self.cfg,
            "mmlib_version": __version__,
        }

    def train_state(self) -> dict[str, Any]:
        """Optimiser, scheduler, scaler, per-rank RNG, sampler position, step (collective)."""
        rngs = D.gather_objects(ckpt.rng_state(self._cuda_device()), self.info)
        epoch, position = divmod(self.step, self.steps_per_epoch)
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.amp.scaler.state_dict(),
            "rng": rngs,
            "sampler": {
                "epoch": epoch,
                "position": position,
                "steps_per_epoch": self.steps_per_epoch,
                "n": self.sampler.n,
            },
            "world_size": self.info.world_size,
            "elapsed_s": self.elapsed_before
            + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0),
        }

    def resume(self, folder: Path) -> None:
        """Restore weights and training state from a checkpoint folder."""
        state, _, ts = ckpt.load(folder)
        if ts["world_size"] != self.info.world_size:
            raise ValueError(
                f"{folder}: written by {ts['world_size']} processes, resumed with "
                f"{self.info.world_size}; exact resume needs the same world size "
                "(or start a new run.name)"
            )
        if ts["sampler"]["n"] != self.sampler.n:
            raise ValueError(
                f"{folder}: the run had {ts['sampler']['n']} studies, the store now "
                "has "
                f"{self.sampler.n}; start a new run.name"
            )
        self.objective.load_state_dict(
            {k: v.to(self.info.device) for k, v in state.items()}, strict=True
        )
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        self.amp.scaler.load_state_dict(ts["scaler"])
        ckpt.set_rng_state(ts["rng"][self.info.rank], self._cuda_device())
        self.step = int(ts["step"])
        self.elapsed_before = float(ts.get("elapsed_s", 0.0))

    # ------------------------------------------------------------------ samples
    def fixed_batch(self) -> dict[str, Any]:
        """The first ``samples.n`` studies at epoch 0 with a fixed seed (the same at every
        checkpoint)."""
        from mmlib.data.sampler import PretrainDataset

        d = self.cfg["data"]
        ds = PretrainDataset(
            self.store,
            d["crop_size"],
            d["k"],
            _select_studies(self.store, d.get("studies")),
            self.seed + 7919,
        )
        ds.set_epoch(0)
        n = min(int(self.cfg["samples"]["n"]), len(ds))
        return ds.collate([ds[i] for i in range(n)])

    @torch.no_grad()
    def write_samples(self) -> Path | None:
        """``samples/step_XXXXXXX.npz``: views and reconstructions (float16 ``(N, X, Y, Z)``) of
        :meth:`fixed_batch`, plus ``study`` and ``modality`` (the target's) string arrays; a view
        the objective does not compute (``view_b`` of ``mim``) is left out."""
        from mmlib.modalities import MODALITIES

        if int(self.cfg["samples"]["n"]) < 1:
            return None
        # every rank runs the forward (a contrastive loss that gathers across ranks is a
        # collective); rank 0 writes
        if not hasattr(self, "_fixed"):
            self._fixed = self.fixed_batch()
        batch = _to_device(self._fixed, self.info.device)
        gen = torch.Generator(device=self.info.device).manual_seed(D.seed_for(self.seed, 104729))
        was = self.objective.training
        self.objective.eval()
        try:
            with self.amp.autocast():
                out = self.objective(batch, epoch=self.step // self.steps_per_epoch, generator=gen)
        finally:
            self.objective.train(was)
        if not self.info.is_main:
            return None
        arrays: dict[str, Any] = {}
        for key in SAMPLE_KEYS:
            v = out.get(key)
            if v is not None:
                arrays[key] = v.detach().float().cpu()[:, 0].numpy().astype(np.float16)
        arrays["study"] = np.asarray([str(s) for s in batch["study"]])
        arrays["modality"] = np.asarray([MODALITIES[int(i)] for i in out["target_modality"].cpu()])
        arrays["step"] = np.asarray(self.step)
        arrays["epoch"] = np.asarray(self.step // self.steps_per_epoch)
        return write_samples(self.run_dir, self.step, arrays)

    # ------------------------------------------------------------------ loop
    def _loader(self, epoch: int, position: int) -> Any:
        from torch.utils.data import DataLoader

        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, position)
        workers = int(self.cfg["data"]["workers"])
        kw: dict[str, Any] = {"prefetch_factor": 4} if workers > 0 else {}
        return DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            collate_fn=self.dataset.collate,
            pin_memory=self.info.device.type == "cuda",
            generator=torch.Generator().manual_seed(D.seed_for(self.seed, epoch)),
            **kw,
        )

    def checkpoint(self) -> Path | None:
        """Samples, then an atomic checkpoint of the current step (collective under DDP)."""
        self.write_samples()
        state = self.train_state()
        folder = None
        if self.info.is_main:
            folder = ckpt.save(
                self.run_dir / "checkpoints",
                self.step,
                self.state_dict(),
                self.meta(),
                state,
                keep=int(self.cfg["checkpoint"]["keep"]),
            )
        D.barrier(self.info)
        return folder

    def train(self) -> dict[str, Any]:
        """Run from ``self.step`` to the end; return the summary written to ``results.json``."""
        from tqdm.auto import tqdm

        info, cfg = self.info, self.cfg
        every = int(cfg["checkpoint"]["every"])
        global_batch = int(cfg["train"]["batch_size"]) * self.accum * info.world_size
        clip = cfg["train"]["clip"]
        if cfg["train"].get("clip_templates", False):
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
        else:  # the templates' group is left out of the clip
            params = list(self.optimizer.param_groups[0]["params"])
        log = MetricsLogger(
            self.run_dir,
            enabled=info.is_main,
            tensorboard=cfg.get("log", {}).get("tensorboard", "auto"),
            resume_step=self.step if self.step > 0 else None,
        )
        bar = tqdm(
            total=self.total,
            initial=self.step,
            disable=not (self.progress and info.is_main),
            desc=f"pretrain {cfg['objective']['name']}",
            unit="step",
            dynamic_ncols=True,
        )
        self._t0 = time.perf_counter()
        if self.step == 0:
            self.write_samples()  # the untrained network, for "across training" figures
        try:
            while self.step < self.total:
                epoch, position = divmod(self.step, self.steps_per_epoch)
                it = iter(self._loader(epoch, position))
                for _ in range(position, self.steps_per_epoch):
                    if self.step >= self.total:
                        break
                    row = self._one_step(it, epoch, params, clip, global_batch)
                    log.log(row)
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                    if STEP_HOOK is not None:
                        STEP_HOOK(self.step)
                    if self.step % every == 0 or self.step == self.total:
                        self.checkpoint()
                del it
        finally:
            bar.close()
            log.close()
        self.replica_digests = D.check_replicas(self.objective, info)
        return self.summary()

    def _one_step(
        self, it: Any, epoch: int, params: list[nn.Parameter], clip: Any, global_batch: int
    ) -> dict[str, Any]:
        info = self.info
        t0 = time.perf_counter()
        wait = 0.0
        terms: dict[str, float] = {}
        for m in range(self.accum):
            tw = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - tw
            batch = _to_device(batch, info.device)
            self.generator.manual_seed(D.seed_for(self.seed, self.step, info.rank * self.accum + m))
            sync = contextlib.nullcontext()
            if info.distributed and m < self.accum - 1:
                sync = self.model.no_sync()  # type: ignore[operator]
            with sync:
                with self.amp.autocast():
                    out = self.model(batch, epoch=epoch, generator=self.generator)
                self.amp.scaler.scale(out["loss"].float() / self.accum).backward()
            for k, v in _scalars(out).items():
                terms[k] = terms.get(k, 0.0) + v / self.accum
        lr = float(self.optimizer.param_groups[0]["lr"])
        # the norm is needed anyway to see a non-finite step; max_norm=inf does not clip
        self.amp.scaler.unscale_(self.optimizer)
        max_norm = float("inf") if clip is None else float(clip)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if clip is not None:
            terms["grad_norm"] = grad_norm
        finite = math.isfinite(grad_norm)
        if len(self.optimizer.param_groups) > 1:  # the templates' gradient, as AdamW gets it
            grads = [p.grad for p in self.optimizer.param_groups[1]["params"] if p.grad is not None]
            template_norm = (
                float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
                if grads
                else 0.0
            )
            terms["template_grad_norm"] = template_norm
            finite = finite and math.isfinite(template_norm)
        # a non-finite step is skipped (MixedPrecision.step); 20 in a row stop the run
        skipped = self.amp.step(self.optimizer, finite, f"{self.run_dir} (step {self.step + 1})")
        self.optimizer.zero_grad(set_to_none=True)
        terms["skipped"] = float(skipped)
        self.scheduler.step()
        self.step += 1
        dt = time.perf_counter() - t0
        terms["data_wait_frac"] = wait / max(dt, 1e-9)
        terms = D.reduce_mean(terms, info)
        return {
            "step": self.step,
            "epoch": epoch,
            "lr": lr,
            **terms,
            "samples_per_s": global_batch / max(dt, 1e-9),
            "step_time_s": dt,
            "data_wait_frac": terms.pop("data_wait_frac"),
            "mem_mb": peak_memory_mb(info.device),
            "elapsed_s": self.elapsed_before + time.perf_counter() - self._t0,
        }

    def summary(self) -> dict[str, Any]:
        """Final numbers of the run, from ``metrics.csv``."""
        rows = read_metrics(self.run_dir / "metrics.csv")
        terms = [
            k
            for k in (rows[0] if rows else {})
            if k
            not in (
                "step",
                "epoch",
                "lr",
                "samples_per_s",
                "step_time_s",
                "data_wait_frac",
                "mem_mb",
                "elapsed_s",
                "skipped",
            )
        ]
        # the loss terms of skipped (non-finite) steps describe no update: left out of the means
        applied = [r for r in rows if not r.get("skipped", 0.0)]
        tail = applied[-max(1, min(10, len(applied) // 5 or 1)) :]
        head = applied[: len(tail)]

        def mean(rs: list[dict[str, float]], k: str) -> float:
            return float(np.nanmean([r[k] for r in rs])) if rs else math.nan

        timed = rows[1:] if len(rows) > 1 else rows
        return {
            "steps": self.step,
            "epochs": self.step / self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "studies": self.sampler.n,
            "global_batch": int(self.cfg["train"]["batch_size"])
            * self.accum
            * self.info.world_size,
            "world_size": self.info.world_size,
            "device": self.info.device.type,
            "amp": amp_name(self.amp.dtype),
            "skipped_steps": int(sum(bool(r.get("skipped", 0.0)) for r in rows)),
            "first": {k: mean(head, k) for k in terms},
            "final": {k: mean(tail, k) for k in terms},
            "samples_per_s": mean(timed, "samples_per_s"),
            "step_time_s": mean(timed, "step_time_s"),
            "data_wait_frac": mean(timed, "data_wait_frac"),
            "peak_mem_mb": max((r["mem_mb"] for r in rows), default=math.nan),
            "time_s": rows[-1]["elapsed_s"] if rows else 0.0,
            "checkpoint": str(latest_checkpoint(self.run_dir)) if self.info.is_main else None,
            "config_hash": config_hash(self.cfg),
            "weights_digest_per_rank": getattr(self, "replica_digests", None),
        }


# --------------------------------------------------------------------------------- entry point
def pretrain(
    config: str | Path | Mapping[str, Any] = "demo",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Pre-train (or reuse, or resume) and return the run folder.

    Args:
        config: a preset (``smoke``, ``demo``, ``paper``), a YAML/JSON file or a dict (see
            :mod:`mmlib.engine.config`). Defaults to ``"demo"``.
        overrides: ``key=value`` strings or a dict, e.g. ``["objective=mim",
            "schedule.epochs=10"]``. Defaults to None.
        run_dir: the run folder. Defaults to None (``run.root/run.name``, see the module
            docstring).
        progress: show a progress bar. Defaults to True.

    Returns:
        The run folder (with ``DONE``, ``results.json`` and ``checkpoints/latest``).

    Raises:
        ValueError: When the configuration is invalid, or ``run_dir`` holds a run with a
            different configuration.
    """
    cfg = load_config(config, overrides)
    owned = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = D.setup(cfg["device"])
    ok = False
    try:
        # rank 0 makes the store (if needed) and decides about the folder; the others follow,
        # and an error on rank 0 is raised on every rank instead of leaving them waiting
        resolved = D.on_main(info, lambda: resolve(cfg, info.device, build_store=True))
        folder = Path(run_dir) if run_dir is not None else default_run_dir(resolved)
        action = D.on_main(info, lambda: _decide(folder, resolved))
        if action == "done":
            ok = True
            return folder
        if info.is_main:
            write_config(folder, resolved)
        D.barrier(info)
        trainer = Trainer(resolved, folder, info, progress)
        latest = find_latest(folder / "checkpoints") if action == "resume" else None
        if latest is not None:
            trainer.resume(latest)
        results = trainer.train()
        if info.is_main:
            results["run_dir"] = str(folder)
            write_json(folder / "results.json", results, indent=2)
            mark_done(folder)
        D.barrier(info)
        ok = True
        return folder
    finally:
        if owned:
            D.teardown(info, wait=ok)


def launch(
    nproc: int,
    config: str | Path | Mapping[str, Any] = "demo",
    overrides: Mapping[str, Any] | Sequence[str] = (),
    run_dir: Path | None = None,
    nnodes: int = 1,
    timeout: float | None = None,
) -> Path:
    """Run :func:`pretrain` in ``nproc`` processes on this machine (one per GPU, or gloo processes
    on the CPU) from a notebook or script, and return the run folder.

    A thin wrapper over :func:`mmlib.engine.distributed.launch`: the same job as ``torchrun
    --standalone --nproc-per-node nproc -m mmlib pretrain ...``, without a command line.

    Args:
        nproc: processes on this node.
        config: as for :func:`pretrain`. Defaults to ``"demo"``.
        overrides: as for :func:`pretrain`. Defaults to none.
        run_dir: as for :func:`pretrain`. Defaults to None.
        nnodes: must be 1 (for several nodes start ``torchrun`` on each, see the module
            docstring). Defaults to 1.
        timeout: seconds before the job is stopped. Defaults to None (no limit).

    Raises:
        ValueError: When ``nnodes`` is not 1.
        RuntimeError: When a rank fails (its traceback is in the message).
    """
    if nnodes != 1:
        raise ValueError(
            "launch: one node only; for several nodes start torchrun on each (see "
            "the module docstring of mmlib.engine.pretrain)"
        )
    ovr = dict(overrides) if isinstance(overrides, Mapping) else [str(o) for o in overrides]
    folder = D.launch(pretrain, int(nproc), config, ovr, run_dir, False, timeout=timeout)
    return Path(folder)


def _decide(folder: Path, resolved: Mapping[str, Any]) -> str:
    """``new``, ``resume`` or ``done`` for a run folder, or an error when its config differs."""
    saved = read_config(folder)
    if saved is None:
        return "new"
    changed = diff(identity(saved), identity(resolved))
    if changed:
        state = "a finished" if is_done(folder) else "an unfinished"
        raise ValueError(
            f"{folder}: holds {state} run with a different config (differs in "
            f"{', '.join(changed[:6])}); choose another run.name or remove the folder"
        )
    return "done" if is_done(folder) else "resume"
