"""Fine-tuning on a downstream task, from scratch or from a pre-trained checkpoint.

:func:`finetune` trains one (task, initialisation, label fraction, seed) cell of the experiment
grid into a run folder and returns it; :class:`FinetuneTrainer` is its loop, built like the
pre-training :class:`~mmlib.engine.pretrain.Trainer` (build, one step, the training loop, a
summary). Scoring the trained network on the test studies is evaluation's
(:func:`mmlib.evaluate.scoring.score_run`); :func:`mmlib.evaluate.grid.finetune_grid` and
``mmlib finetune`` do both.

A configuration comes from the engine's one loader, ``load_config(config, overrides,
kind="finetune")`` (:mod:`mmlib.engine.config`, defaults
:data:`~mmlib.engine.config.FINETUNE_DEFAULTS`,
presets ``mmlib/configs/finetune_<scale>.yaml``): ``task`` (:data:`mmlib.tasks.TASKS`),
``init`` (``scratch``; a pre-training objective of :data:`mmlib.proxy.brainmvp.OBJECTIVES`
such as ``brainmvp``, ``mim``, ``cmr_only``, pre-trained with
:func:`mmlib.engine.pretrain.pretrain` and reused when finished; or the path of a pre-training
run or checkpoint folder), ``data.*`` (store, label fraction, crop size, ...), ``model.*``
(backbone, decoder, channel adaptation, ``head_prior``: the foreground probability that sigmoid
segmentation heads start at, bias ``log(p / (1 - p))``, None for a zero bias), ``fill`` (absent
channels: ``template`` or ``zero``), ``optim.*`` (``encoder_lr_scale`` multiplies the encoder's
learning rate of a pre-trained initialisation; a scratch encoder always trains at the full
rate), ``train.*`` (steps, batch size, seed; ``epochs``: when set, the budget is counted in
passes over the labelled studies instead, ``steps = ceil(epochs x n_labelled / batch_size)``, so
that label fractions compare labels and not steps, :func:`budget_steps`; ``amp``: autocast as
in pre-training, :func:`mmlib.engine.binding.amp_mode`, with bf16's thin convolutions kept in
fp32 on CPU and a step with non-finite gradients skipped and counted, ``skipped_steps`` in
``results.json``;
``template_replacement`` and ``consistency_weight``, below), ``eval.*`` (sliding window and
``amp``, the precision of test-time inference, read by scoring).

Template replacement (BrainMVP's supplement; :mod:`mmlib.proxy.replacement`):
``train.template_replacement = N > 0`` makes each training crop into two copies, in each of
which ``n ~ uniform{0..N}`` modalities (at most C - 1) are replaced by the run's fill (the
templates of a pre-trained init, as at test time; zeros for scratch, whose test-time fill is
zeros); both copies go through one forward pass and get the supervised loss, and
``train.consistency_weight`` (default 0.1, the authors' script) times the mean squared
difference of the two copies' deepest encoder features is added. ``N = 0`` (the default) is
plain fine-tuning: one copy, no consistency term, whatever the weight. The paper preset uses
``N = 3`` as the authors' script does. A step then costs about twice as much (2B crops).

DDP: under ``torchrun`` (or :func:`launch`) every rank trains on its own slice of each
global batch of ``train.batch_size`` x world size crops (the crops are those one process would
draw at that global batch), gradients are averaged by DDP, the logged losses over ranks, and
rank 0 writes the run folder; ``results.json`` records ``world_size`` and every rank's weight
digest (they must agree). Scoring stays a single-process step.

Pairing: at a given ``train.seed`` every initialisation sees the same labelled studies, the
same crops in the same order (a function of the seed and the sample index only) and starts with
the same decoder (or head) weights (:mod:`mmlib.engine.initialise`), so the difference between
two initialisations at one seed is the effect of the encoder's initialisation alone. The
labelled subset of a label fraction is nested across fractions (``data.subset_seed``).
Modality dropout draws from a generator seeded ``train.seed + 3``; the global RNG (dropout
inside the head) is seeded ``train.seed + 4`` just before the loop.

Reuse: a run folder is named by the task, initialisation, fraction, seed and
:func:`~mmlib.engine.config.config_hash` of the resolved configuration *and* of the
pre-training checkpoint's identity (path, step and a hash of its weights).

Run folder: ``config.json`` (resolved), ``identity.json``, ``metrics.csv`` (step, loss, lr,
seconds), ``model.safetensors`` (fine-tuned weights), ``results.json`` (the training summary;
scoring adds ``test`` and the evaluation time), then the marker ``TRAINED``. Scoring writes
``test_scores.csv``, ``predictions/`` and, last, ``DONE``. A folder with ``TRAINED`` is never
trained again (a run killed between training and scoring is scored, not retrained); one with
``DONE`` is finished. Every JSON file and marker is written atomically.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mmlib.data.labelled import (
    ClassificationInputs,
    SegmentationCrops,
    apply_flips,
    collate_samples,
)
from mmlib.engine import distributed as D
from mmlib.engine.binding import MixedPrecision
from mmlib.engine.config import config_hash, load_config
from mmlib.engine.initialise import build_network, checkpoint_identity, resolve_init
from mmlib.engine.losses import consistency_loss, segmentation_loss
from mmlib.engine.schedule import WarmupCosine, adamw
from mmlib.paths import work_dir
from mmlib.proxy.missing import fill_missing
from mmlib.proxy.replacement import two_copies
from mmlib.runs import write_text_atomic
from mmlib.tasks import TaskSpec, get_task, label_subset, resolve_task, task_rows, task_splits

TRAINED = "TRAINED"
"""Marker of a run folder whose network is trained and saved (written by :func:`finetune`)."""

DONE = "DONE"
"""Marker of a run folder that is trained and scored (written by scoring, last)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU) or a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def open_store(cfg: Mapping[str, Any]) -> Any:
    """The store of a fine-tuning config: ``data.store``, else the scale's shared store."""
    from mmlib.data.store import Store

    root = cfg["data"].get("store")
    if not root:
        from mmlib.data import ensure_store

        root = ensure_store(cfg["scale"])
    return Store(root)


@dataclass
class FinetuneSplit:
    """The studies of a fine-tuning run.

    Attributes:
        spec: the task resolved against the store (modalities, label convention, classes).
        train: every training study of the task.
        labelled: the label fraction's nested subset of ``train``.
        test: the test studies (at most ``data.max_test``).
    """

    spec: TaskSpec
    train: list[str]
    labelled: list[str]
    test: list[str]


def finetune_split(cfg: Mapping[str, Any], store: Any) -> FinetuneSplit:
    """The resolved task and the studies a config trains and tests on (deterministic)."""
    spec = resolve_task(cfg["task"], store.manifest, store)
    rows = task_rows(store.manifest, spec)
    splits = task_splits(spec, rows, seed=int(cfg["data"]["subset_seed"]))
    labelled = label_subset(
        splits["train"],
        float(cfg["data"]["label_fraction"]),
        int(cfg["data"]["subset_seed"]),
        minimum=2 if spec.kind == "classification" else 1,
    )
    max_test = cfg["data"]["max_test"]
    test = splits["test"][:max_test] if max_test else splits["test"]
    return FinetuneSplit(spec, splits["train"], labelled, test)


def crop_size(cfg: Mapping[str, Any]) -> list[int]:
    """``data.crop_size`` as three ints."""
    crop = cfg["data"]["crop_size"]
    return [int(crop)] * 3 if isinstance(crop, (int, float)) else [int(c) for c in crop]


def budget_steps(train: Mapping[str, Any], n_labelled: int) -> int:
    """Optimiser steps of a run: ``train.steps``, or with ``train.epochs`` set,
    ``ceil(epochs x n_labelled / batch_size)`` (``epochs`` crops of every labelled study).

    Raises:
        ValueError: When ``train.epochs`` is set but not positive.
    """
    epochs = train.get("epochs")
    if epochs is None:
        return int(train["steps"])
    if float(epochs) <= 0:
        raise ValueError(f"finetune config: train.epochs should be positive or null, got {epochs}")
    return max(1, math.ceil(float(epochs) * n_labelled / int(train["batch_size"])))


def run_name(cfg: Mapping[str, Any], init_label: str, ident: Mapping[str, Any]) -> str:
    """``<init>-f<percent>-s<seed>-<hash>``: the default folder name of a run."""
    h = config_hash(cfg, extra={"checkpoint": ident})
    frac = round(100 * float(cfg["data"]["label_fraction"]))
    return f"{init_label}-f{frac:03d}-s{int(cfg['train']['seed'])}-{h}"


class FinetuneTrainer:
    """One fine-tuning run: the network, its data and optimiser, the loop, the summary.

    Args:
        cfg: a resolved fine-tuning configuration.
        init_label: the initialisation's label (:func:`~mmlib.engine.initialise.resolve_init`).
        ckpt: the pre-training checkpoint folder, or None for scratch.
        progress: show a progress bar. Defaults to True.

    Raises:
        ValueError: When ``fill='template'`` is asked of an initialisation without templates.
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        init_label: str,
        ckpt: Path | None,
        progress: bool = True,
        info: D.DistInfo | None = None,
    ) -> None:
        self.cfg, self.init_label, self.ckpt, self.progress = cfg, init_label, ckpt, progress
        self.t0 = time.time()
        self.info = info or D.DistInfo(0, 1, 0, resolve_device(cfg["device"]), "none")
        self.device = self.info.device if info is not None else resolve_device(cfg["device"])
        self.store = open_store(cfg)
        self.split = finetune_split(cfg, self.store)
        self.spec = self.split.spec
        self.net, self.templates, self.desc = build_network(cfg, self.spec, ckpt)
        fill = cfg["fill"]
        if fill == "auto":
            fill = "template" if self.templates is not None else "zero"
        if fill == "template" and self.templates is None:
            raise ValueError(
                f"finetune: fill='template' but init {init_label!r} has no templates; use fill=zero"
            )
        self.fill: str = fill
        self.net.to(self.device)
        self.seed = int(cfg["train"]["seed"])
        self.batch_size = int(cfg["train"]["batch_size"])
        self.steps = budget_steps(cfg["train"], len(self.split.labelled))
        self.loader = self._loader()
        self.lr = float(cfg["optim"]["lr"])
        # a smaller encoder lr keeps what pre-training learned; a scratch encoder has nothing
        # to keep
        scale = float(cfg["optim"]["encoder_lr_scale"]) if ckpt is not None else 1.0
        self.encoder_lr = self.lr * scale
        enc = {id(p) for p in self.net.encoder_parameters()}  # type: ignore[operator]
        groups = [
            {"params": [p for p in self.net.parameters() if id(p) in enc], "lr": self.encoder_lr},
            {"params": [p for p in self.net.parameters() if id(p) not in enc], "lr": self.lr},
        ]
        self.opt = adamw(groups, lr=self.lr, weight_decay=float(cfg["optim"]["weight_decay"]))
        schedule = WarmupCosine(
            self.steps, int(cfg["optim"]["warmup_steps"]), float(cfg["optim"]["min_lr"]) / self.lr
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        rank = self.info.rank
        # modality dropout; rank 0 keeps the single-process seed
        self.gen = torch.Generator().manual_seed(
            self.seed + 3 if rank == 0 else D.seed_for(self.seed + 3, rank)
        )
        self.replace_gen = torch.Generator().manual_seed(D.seed_for(self.seed + 5, rank))
        self.replacement = int(cfg["train"]["template_replacement"])
        self.consistency_weight = float(cfg["train"]["consistency_weight"])
        self.amp = MixedPrecision(cfg["train"]["amp"], self.device, self.net)
        self.model: torch.nn.Module = self.net
        if self.info.distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.net,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                # the backbone's pre-training decoder (no skips) is not used in fine-tuning
                find_unused_parameters=True,
            )
        self.log: list[dict[str, float]] = []
        self.train_s = 0.0

    def _loader(self) -> torch.utils.data.DataLoader:
        cfg, spec = self.cfg, self.spec
        world, rank, bsz = self.info.world_size, self.info.rank, self.batch_size
        n = self.steps * bsz * world
        data: torch.utils.data.Dataset
        if spec.kind == "segmentation":
            data = SegmentationCrops(
                self.store,
                self.split.labelled,
                spec.modalities,
                crop_size(cfg),
                n,
                self.seed,
                float(cfg["data"]["pos_fraction"]),
                bool(cfg["data"]["flip"]),
            )
        else:
            assert spec.attr is not None
            data = ClassificationInputs(
                self.store,
                self.split.labelled,
                spec.modalities,
                spec.attr,
                spec.classes,
                cfg["data"]["input_size"],
                n,
                self.seed,
                bool(cfg["data"]["flip"]),
            )
        if world > 1:  # rank r takes the r-th slice of every global batch of bsz * world
            mine = [
                step * bsz * world + rank * bsz + j
                for step in range(self.steps)
                for j in range(bsz)
            ]
            data = torch.utils.data.Subset(data, mine)
        return torch.utils.data.DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=0,
            collate_fn=collate_samples,
            drop_last=True,
        )

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step on a collated batch; returns the loss terms.

        Absent channels (and those modality dropout removes) are filled before the flips, so
        that a template fill stays anatomically aligned. With ``train.template_replacement``
        N > 0 each study becomes two copies with up to N modalities each replaced by the fill
        (:func:`mmlib.proxy.replacement.two_copies`); both copies go through one forward pass
        (``2B`` studies, so DDP and normalisation see one batch), both get the supervised loss
        and ``train.consistency_weight`` times the mean squared difference of their deepest
        encoder features is added.

        Returns:
            ``loss`` (the total), ``supervised`` and ``consistency`` (0 when off).
        """
        spec = self.spec
        image, present = batch["image"].to(self.device), batch["present"].clone()
        p_drop = float(self.cfg["train"]["modality_dropout"])
        if p_drop > 0 and len(spec.modalities) > 1:
            drop = torch.rand(present.shape, generator=self.gen) < p_drop
            keep_one = torch.randint(drop.shape[1], (drop.shape[0],), generator=self.gen)
            drop[torch.arange(drop.shape[0]), keep_one] = False
            present = present & ~drop
        flip, label = batch["flip"], batch["label"]
        copies = self.replacement > 0
        if copies:
            image, _ = two_copies(
                image,
                present,
                spec.modalities,
                self.replacement,
                self.fill,
                self.templates,
                batch["template_origin"],
                batch["spacing"],
                self.replace_gen,
            )
            flip, label = torch.cat([flip, flip]), torch.cat([label, label])
        elif not bool(present.all()):
            image = fill_missing(
                image,
                present,
                spec.modalities,
                self.fill,
                self.templates,
                batch["template_origin"],
                batch["spacing"],
            )
        image = apply_flips(image, flip)
        with self.amp.autocast():
            if copies:
                logits, deepest = self.model(image, return_features=True)
                # the flips differ between studies but are the same for a study's two copies
                consistency = consistency_loss(deepest.float())
            else:
                logits, consistency = self.model(image), None
        # the losses in fp32 under autocast (deep supervision gives a list of logits)
        logits = [x.float() for x in logits] if isinstance(logits, list) else logits.float()
        if spec.kind == "segmentation":
            label = apply_flips(label, flip).to(self.device)
            supervised = segmentation_loss(
                spec, logits, label, batch=bool(self.cfg["train"]["batch_dice"])
            )
        else:
            assert isinstance(logits, torch.Tensor)  # a classifier has one output
            supervised = F.cross_entropy(logits, label.to(self.device))
        loss = supervised
        if consistency is not None:
            loss = supervised + self.consistency_weight * consistency
        self.opt.zero_grad(set_to_none=True)
        self.amp.scaler.scale(loss).backward()
        self.amp.scaler.unscale_(self.opt)
        clip = self.cfg["train"]["clip"]
        # the norm is needed anyway to see a non-finite step; max_norm=inf does not clip
        norm = torch.nn.utils.clip_grad_norm_(
            self.net.parameters(), float(clip) if clip else float("inf")
        )
        where = f"finetune {spec.name} (step {len(self.log) + 1})"
        skipped = self.amp.step(self.opt, math.isfinite(float(norm)), where)
        self.sched.step()
        return {
            "loss": float(loss.detach()),
            "supervised": float(supervised.detach()),
            "consistency": float(consistency.detach()) if consistency is not None else 0.0,
            "skipped": float(skipped),
        }

    def train(self) -> list[dict[str, float]]:
        """Run every step; returns the metrics rows (step, loss, lr of the decoder, seconds)."""
        torch.manual_seed(self.seed + 4)  # dropout inside the head; before the loader's iterator
        self.net.train()
        bar = tqdm(
            self.loader,
            total=self.steps,
            desc=f"finetune {self.spec.name} {self.init_label}",
            disable=not (self.progress and self.info.is_main),
            leave=False,
        )
        t_train = time.time()
        for step, batch in enumerate(bar):
            terms = D.reduce_mean(self.step(batch), self.info)
            self.log.append(
                {
                    "step": step + 1,
                    **terms,
                    "lr": float(self.opt.param_groups[1]["lr"]),
                    "seconds": time.time() - t_train,
                }
            )
            bar.set_postfix(loss=f"{terms['loss']:.3f}")
        self.train_s = time.time() - t_train
        if self.info.distributed:
            self.replica_digests = D.check_replicas(self.net, self.info)
        return self.log

    def summary(self) -> dict[str, Any]:
        """The training part of ``results.json`` (scoring adds ``test`` and its time)."""
        cfg, spec = self.cfg, self.spec
        final = float(np.mean([r["loss"] for r in self.log[-10:]])) if self.log else None
        return {
            "task": spec.name,
            "kind": spec.kind,
            "init": self.init_label,
            "label_fraction": float(cfg["data"]["label_fraction"]),
            "seed": self.seed,
            "fill": self.fill,
            "n_labelled": len(self.split.labelled),
            "n_train_available": len(self.split.train),
            "n_test": len(self.split.test),
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "encoder_lr": self.encoder_lr,
            "model": self.desc,
            "spec": spec.to_dict(),
            "labelled_studies": self.split.labelled,
            "final_loss": final,
            "template_replacement": self.replacement,
            "consistency_weight": self.consistency_weight,
            "final_consistency": float(np.mean([r["consistency"] for r in self.log[-10:]]))
            if self.log and self.replacement > 0
            else None,
            "amp": str(cfg["train"]["amp"]),
            "skipped_steps": int(sum(bool(r.get("skipped", 0.0)) for r in self.log)),
            "world_size": self.info.world_size,
            "global_batch": self.batch_size * self.info.world_size,
            "threads": torch.get_num_threads(),
            "weights_digest_per_rank": getattr(self, "replica_digests", None),
            "seconds": {
                "train": self.train_s,
                "total": time.time() - self.t0,
                "per_step": self.train_s / max(self.steps, 1),
            },
        }

    def save(self, run_dir: Path) -> None:
        """Write ``metrics.csv``, ``model.safetensors``, ``results.json`` and, last, ``TRAINED``."""
        from safetensors.torch import save_file

        pd.DataFrame(self.log).to_csv(run_dir / "metrics.csv", index=False)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(run_dir / "model.safetensors"))
        write_text_atomic(
            run_dir / "results.json", json.dumps(self.summary(), indent=1, default=str)
        )
        write_text_atomic(run_dir / TRAINED, time.strftime("%Y-%m-%dT%H:%M:%S"))


def _run_folder(cfg: Mapping[str, Any], init_label: str, ident: Mapping[str, Any]) -> Path:
    """The default run folder of a resolved configuration (see :func:`finetune`)."""
    given = cfg["run"]["root"]
    root = Path(given) if given else work_dir(cfg["scale"]) / "runs" / "finetune"
    name = cfg["run"]["name"] or run_name(cfg, init_label, ident)
    return root / get_task(cfg["task"]).name / name


def finetune(
    config: str | Path | Mapping[str, Any] = "demo",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Fine-tune one (task, init, label fraction, seed) and save the network.

    Args:
        config: scale preset, file or dict (see the module docstring).
        overrides: ``key=value`` overrides. Defaults to None.
        run_dir: the run folder. Defaults to None:
            ``work_dir(scale)/runs/finetune/<task>/<init>-f<pct>-s<seed>-<hash>``.
        progress: show progress bars. Defaults to True.

    Returns:
        The run folder, trained (``TRAINED``); returned at once when it is already trained or
        finished (``DONE``). Score it with :func:`mmlib.evaluate.scoring.score_run`.

    Raises:
        ValueError: When the configuration is invalid.
        FileNotFoundError: When the init or a config file does not exist.
    """
    cfg = load_config(config, overrides, kind="finetune")
    owned = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = D.setup(cfg["device"]) if _launched() or not owned else None
    ok = False
    try:
        # every rank resolves the init: pre-training it is a collective job under DDP
        init_label, ckpt = resolve_init(cfg, progress and (info is None or info.is_main))
        ident = checkpoint_identity(ckpt)
        folder = Path(run_dir) if run_dir is not None else _run_folder(cfg, init_label, ident)
        if info is None:
            if (folder / DONE).is_file() or (folder / TRAINED).is_file():
                ok = True
                return folder
            folder.mkdir(parents=True, exist_ok=True)
            trainer = FinetuneTrainer(cfg, init_label, ckpt, progress)
        else:
            done = D.on_main(
                info, lambda: (folder / DONE).is_file() or (folder / TRAINED).is_file()
            )
            if done:
                ok = True
                return folder

            # rank 0 makes the store (when the scale's is used) before the others open it
            def prepare() -> None:
                folder.mkdir(parents=True, exist_ok=True)
                open_store(cfg)

            D.on_main(info, prepare)
            trainer = FinetuneTrainer(cfg, init_label, ckpt, progress, info)
        if info is None or info.is_main:
            write_text_atomic(folder / "config.json", json.dumps(cfg, indent=1, default=str))
            write_text_atomic(
                folder / "identity.json",
                json.dumps({"checkpoint": ident, "init": init_label}, indent=1),
            )
        trainer.train()
        if info is None or info.is_main:
            trainer.save(folder)
        if info is not None:
            D.barrier(info)
        ok = True
        return folder
    finally:
        if owned and info is not None:
            D.teardown(info, wait=ok)


def _launched() -> bool:
    """True when ``torchrun`` (or :func:`mmlib.engine.distributed.launch`) started this process
    as one of several."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(
    nproc: int,
    config: str | Path | Mapping[str, Any] = "demo",
    overrides: Mapping[str, Any] | Sequence[str] = (),
    run_dir: str | Path | None = None,
    timeout: float | None = None,
) -> Path:
    """Run :func:`finetune` in ``nproc`` processes on this machine (one per GPU, or gloo
    processes on the CPU), the same job as ``torchrun --nproc-per-node nproc``.

    Each rank trains on its own slice of every global batch (``train.batch_size`` per rank,
    so the global batch is ``nproc`` times larger); rank 0 writes the run folder. Score the
    returned folder with :func:`mmlib.evaluate.scoring.score_run` in one process.

    Args:
        nproc: processes.
        config: as for :func:`finetune`. Defaults to ``"demo"``.
        overrides: as for :func:`finetune`. Defaults to none.
        run_dir: as for :func:`finetune`. Defaults to None.
        timeout: seconds before the job is stopped. Defaults to None (no limit).

    Returns:
        The trained run folder (``TRAINED``).

    Raises:
        RuntimeError: When a rank fails (its traceback is in the message).
    """
    ovr = dict(overrides) if isinstance(overrides, Mapping) else [str(o) for o in overrides]
    folder = D.launch(finetune, int(nproc), config, ovr, run_dir, False, timeout=timeout)
    return Path(folder)
