"""Experiments: fine-tune and score every (initialisation, label fraction, seed) cell; find or make
the pre-training run a chapter shows.

Each cell is trained by :func:`mmlib.engine.finetune.finetune` (a trained or finished run is
reused) and scored by :func:`mmlib.evaluate.scoring.score_run` (a scored run is read back), so a
grid that was interrupted anywhere resumes where it stopped.

``workers > 1`` runs cells in that many processes at once, each with ``threads`` torch threads
(the machine's threads divided between them). Small demo networks use two CPU threads poorly:
on the 2-core book machine two 1-thread runs side by side finish a pair of runs 1.4x sooner than
one 2-thread run after the other (benchmarks/grid.py). A cell's result depends on its thread
count (a floating-point path), never on which process or in what order it ran; the grid
resolves every initialisation (pre-training it when needed) and opens the store in the calling
process first, so that workers never race to make the same run or store.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from mmlib.engine.config import FINETUNE_FREE_SECTIONS, load_config, parse_overrides
from mmlib.engine.finetune import finetune, open_store
from mmlib.engine.initialise import resolve_init
from mmlib.evaluate.scoring import score_run

T = TypeVar("T")

_POOL: dict[tuple[int, int], cf.ProcessPoolExecutor] = {}
"""Worker pools kept for the life of the process (a kernel runs many grids; starting workers
costs an import of torch and mmlib each), keyed by (workers, threads)."""


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_cell(config: Any, cell: dict[str, Any]) -> Path:
    run = finetune(config, cell, progress=False)
    score_run(run)
    return run


def _pool(workers: int, threads: int) -> cf.ProcessPoolExecutor:
    key = (workers, threads)
    if key not in _POOL:
        # spawn: a forked torch (OpenMP threads, a kernel's state) is not safe to use
        _POOL[key] = cf.ProcessPoolExecutor(
            workers, mp.get_context("spawn"), initializer=_start_worker, initargs=(threads,)
        )
    return _POOL[key]


@atexit.register
def shutdown_workers() -> None:
    """Stop the grid's worker processes (also run at exit)."""
    while _POOL:
        _POOL.popitem()[1].shutdown(wait=True, cancel_futures=True)


def _prepare(config: Any, cells: Sequence[dict[str, Any]], progress: bool) -> None:
    """Resolve each distinct initialisation and open the store once, here, before workers
    start (pre-training a missing objective run, making the scale's store)."""
    seen = set()
    for cell in cells:
        cfg = load_config(config, cell, kind="finetune")
        key = (str(cfg["init"]), str(cfg["data"].get("store")), str(cfg.get("task")))
        if key in seen:
            continue
        seen.add(key)
        resolve_init(cfg, progress)
        open_store(cfg)


def finetune_grid(
    config: str | Path | Mapping[str, Any],
    inits: Sequence[str],
    fractions: Sequence[float],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> list[Path]:
    """Train and score (or reuse) every (init, fraction, seed) cell.

    Args:
        config: scale preset, file or dict of the fine-tuning configuration.
        inits: initialisations (``scratch``, objectives, run or checkpoint folders).
        fractions: label fractions in (0, 1].
        seeds: fine-tuning seeds (``train.seed``).
        overrides: ``key=value`` overrides shared by every cell. Defaults to None.
        progress: show a progress bar over the cells. Defaults to True.
        workers: processes that run cells at once, each with ``torch.get_num_threads() //
            workers`` threads (at least 1). Defaults to None: the scale's
            :func:`grid_workers` when ``config`` is a scale name, else 1 (in this process).

    Returns:
        The finished run folders, fractions outermost, then seeds, then inits.

    Raises:
        Exception: The first failing cell's error, with the cell in a note; the cells still
            queued are cancelled, the finished ones are kept (a rerun reuses them).
    """
    base = parse_overrides(overrides, FINETUNE_FREE_SECTIONS)
    cells = [
        {**base, "init": i, "data.label_fraction": f, "train.seed": s}
        for f in fractions
        for s in seeds
        for i in inits
    ]
    if workers is None:
        workers = grid_workers(config) if isinstance(config, str) else 1
    if workers > 1 and len(cells) > 1:
        _prepare(config, cells, progress)
    return map_cells(_run_cell, [(config, c) for c in cells], workers, "grid", progress)


def map_cells(
    fn: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    workers: int,
    desc: str = "cells",
    progress: bool = True,
) -> list[T]:
    """``[fn(*args) for args in calls]``, in ``workers`` processes of the grid's pool when
    ``workers > 1`` (``fn`` must be importable: a module-level function). Results in order.

    Raises:
        Exception: The first failing call's error, with its arguments in a note.
    """
    if workers <= 1 or len(calls) <= 1:
        return [fn(*args) for args in tqdm(calls, desc=desc, disable=not progress)]
    threads = max(1, torch.get_num_threads() // workers)
    pool = _pool(workers, threads)
    futures = {pool.submit(fn, *args): k for k, args in enumerate(calls)}
    done: dict[int, T] = {}
    bar = tqdm(total=len(calls), desc=f"{desc} ({workers}x{threads} threads)", disable=not progress)
    try:
        for fut in cf.as_completed(futures):
            k = futures[fut]
            try:
                done[k] = fut.result()
            except Exception as err:
                for other in futures:
                    other.cancel()
                if isinstance(err, cf.process.BrokenProcessPool):
                    _POOL.pop((workers, threads), None)
                err.add_note(f"{desc}: {getattr(fn, '__name__', fn)}{calls[k]!r}")
                raise
            bar.update()
    finally:
        bar.close()
    return [done[k] for k in range(len(calls))]


def grid_workers(scale: str) -> int:
    """How many cells a grid at ``scale`` runs at once: ``$MMLIB_GRID_WORKERS`` when set (a
    machine's choice, like ``OMP_NUM_THREADS``: ``MMLIB_GRID_WORKERS=1 make book`` fine-tunes
    one run at a time with every thread, another floating-point path), else
    :data:`mmlib.tasks.plan.PLAN`'s ``grid_workers`` (1 for a scale or file without one).

    Raises:
        ValueError: When ``$MMLIB_GRID_WORKERS`` is not a positive integer.
    """
    import os

    from mmlib.tasks.plan import PLAN

    env = os.environ.get("MMLIB_GRID_WORKERS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"MMLIB_GRID_WORKERS should be a positive integer, got {env!r}")
        return int(env)
    return int(PLAN.get(scale, {}).get("grid_workers", 1))


def pretrain_run_for(
    scale: str, run_dir: str | Path | None = None, train_if_missing: bool = True
) -> Any:
    """The pre-training run a chapter shows: the given one, else the newest with samples.

    Args:
        scale: the scale whose work folder is searched (``work_dir(scale)/runs/pretrain``).
        run_dir: a run folder to use as it is. Defaults to None.
        train_if_missing: pre-train at ``scale`` (reused when finished) when the work folder
            holds no run with samples. Defaults to True.

    Returns:
        A :class:`mmlib.runs.RunFolder`, or None when there is none and training is off or
        fails (the reason is printed: a chapter shows what it can).
    """
    from mmlib.paths import work_dir
    from mmlib.runs import RunFolder, find_runs

    if run_dir is not None:
        return RunFolder(run_dir)
    runs = find_runs(work_dir(scale) / "runs" / "pretrain")
    if runs:
        return runs[0]
    if not train_if_missing:
        return None
    from mmlib.engine.pretrain import pretrain  # the experiment that makes the run

    try:
        return RunFolder(pretrain(scale, progress=False))
    except (OSError, RuntimeError, ValueError) as err:
        print(f"Could not pre-train at scale {scale!r} ({type(err).__name__}: {err})")
        return None


def label_efficiency_grid(
    config: str | Path | Mapping[str, Any],
    inits: Sequence[str],
    fractions: Sequence[float],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    epochs: float | None = None,
    reuse: Sequence[Path] = (),
    progress: bool = True,
) -> list[Path]:
    """The label-efficiency grid: every fraction with one budget, in passes over the labelled
    studies (``train.epochs = epochs``) or, with ``epochs`` None, the config's fixed steps.

    A fraction whose every (init, seed) cell has a finished run in ``reuse`` trained for
    exactly that budget's steps (``train.steps`` of a run at the main fraction can equal
    ``ceil(epochs x n_labelled / batch_size)``) takes those runs instead of training them
    again under another configuration.

    Args:
        config, inits, fractions, seeds, progress: as for :func:`finetune_grid`.
        overrides: ``key=value`` overrides shared by every cell. Defaults to None.
        epochs: crops of each labelled study per run (``train.epochs``), or None for the
            config's ``train.steps``. Defaults to None.
        reuse: finished run folders that may stand for cells (chapter 07's). Defaults to ().

    Returns:
        The run folders, fractions outermost, then seeds, then inits.
    """
    import json

    from mmlib.engine.finetune import budget_steps

    over = dict(overrides or {})
    if epochs is not None:
        over["train.epochs"] = epochs
    found: dict[tuple[str, float, int], Path] = {}
    for run in reuse:
        res = json.loads((Path(run) / "results.json").read_text())
        cfg = json.loads((Path(run) / "config.json").read_text())
        train = {**cfg["train"], "epochs": epochs}
        want = budget_steps(train, int(res["n_labelled"])) if epochs is not None else None
        if want is None or int(res["steps"]) == want:
            found[(str(cfg["init"]), float(res["label_fraction"]), int(res["seed"]))] = Path(run)
    runs: list[Path] = []
    for frac in fractions:
        cells = [(str(i), float(frac), int(s)) for s in seeds for i in inits]
        if all(c in found for c in cells):
            runs += [found[c] for c in cells]
        else:
            runs += finetune_grid(config, inits, [frac], seeds, over, progress=progress)
    return runs
