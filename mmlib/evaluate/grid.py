"""Experiments: fine-tune and score every (initialisation, label fraction, seed) cell; find or make
the pre-training run a chapter shows.

Each cell is trained by :func:`mmlib.engine.finetune.finetune` (a trained or finished run is
reused) and scored by :func:`mmlib.evaluate.scoring.score_run` (a scored run is read back), so a
grid that was interrupted anywhere resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mmlib.engine.config import FINETUNE_FREE_SECTIONS, parse_overrides
from mmlib.engine.finetune import finetune
from mmlib.evaluate.scoring import score_run


def finetune_grid(
    config: str | Path | Mapping[str, Any],
    inits: Sequence[str],
    fractions: Sequence[float],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Train and score (or reuse) every (init, fraction, seed) cell.

    Args:
        config: scale preset, file or dict of the fine-tuning configuration.
        inits: initialisations (``scratch``, objectives, run or checkpoint folders).
        fractions: label fractions in (0, 1].
        seeds: fine-tuning seeds (``train.seed``).
        overrides: ``key=value`` overrides shared by every cell. Defaults to None.
        progress: show a progress bar over the cells. Defaults to True.

    Returns:
        The finished run folders, fractions outermost, then seeds, then inits.
    """
    base = parse_overrides(overrides, FINETUNE_FREE_SECTIONS)
    runs = []
    cells = [(i, f, s) for f in fractions for s in seeds for i in inits]
    for init, frac, seed in tqdm(cells, desc="grid", disable=not progress):
        cell = {**base, "init": init, "data.label_fraction": frac, "train.seed": seed}
        run = finetune(config, cell, progress=False)
        score_run(run)
        runs.append(run)
    return runs


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
