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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mmlib.engine.config import FINETUNE_FREE_SECTIONS, load_config, parse_overrides
from mmlib.engine.finetune import finetune, open_store
from mmlib.engine.initialise import resolve_init
from mmlib.evaluate.scoring import score_run

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
        Exception: The first failing cell's error, with the cell named in a note; the cells
            still queued are cancelled, the finished ones are kept (a rerun reuses them).
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
    if workers <= 1 or len(cells) <= 1:
        runs = []
        for cell in tqdm(cells, desc="grid", disable=not progress):
            runs.append(_run_cell(config, cell))
        return runs
    _prepare(config, cells, progress)
    threads = max(1, torch.get_num_threads() // workers)
    pool = _pool(workers, threads)
    futures = {pool.submit(_run_cell, config, cell): k for k, cell in enumerate(cells)}
    done: dict[int, Path] = {}
    bar = tqdm(total=len(cells), desc=f"grid ({workers}x{threads} threads)", disable=not progress)
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
                c = cells[k]
                err.add_note(
                    f"grid cell: init={c['init']} fraction={c['data.label_fraction']} "
                    f"seed={c['train.seed']}"
                )
                raise
            bar.update()
    finally:
        bar.close()
    return [done[k] for k in range(len(cells))]


def grid_workers(scale: str) -> int:
    """How many cells a grid at ``scale`` runs at once (:data:`mmlib.tasks.plan.PLAN`'s
    ``grid_workers``; 1 for a scale or config file without one)."""
    from mmlib.tasks.plan import PLAN

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
