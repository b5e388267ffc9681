"""A run folder as a whole: its files, reading it (:class:`RunFolder`, :func:`load_run`), finding
runs (:func:`find_runs`), and marking one finished.

``runs/<kind>/<name>/`` (see ARCHITECTURE.md, "Run folders")::

    config.json          the resolved configuration
    identity.json        fine-tuning: config hash and the pre-training checkpoint it started from
    metrics.csv          one row per optimiser step (mmlib.runs.metrics)
    checkpoints/         step_XXXXXXX/ folders and latest (mmlib.runs.checkpoints)
    samples/             step_XXXXXXX.npz views and reconstructions (mmlib.runs.samples)
    results.json         the run's final numbers (mmlib.runs.results)
    DONE                 written last
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mmlib.runs.checkpoints import (
    checkpoint_at,
    list_checkpoints,
    step_of,
    write_text_atomic,
)
from mmlib.runs.metrics import METRICS, read_metrics
from mmlib.runs.results import DONE, RESULTS, read_json, write_json
from mmlib.runs.samples import SAMPLES, Samples, list_samples, load_samples, samples_file

CONFIG = "config.json"
"""File name of a run's resolved configuration."""
IDENTITY = "identity.json"
"""File name of a fine-tuning run's identity (config hash, pre-training checkpoint)."""
CHECKPOINTS = "checkpoints"
"""Folder of a run's checkpoints."""
_MARKERS = (CONFIG, METRICS, CHECKPOINTS, SAMPLES)


def read_config(run_dir: str | Path) -> dict[str, Any] | None:
    """``config.json`` of a run folder, or None when it has none."""
    return read_json(Path(run_dir) / CONFIG)


def write_config(run_dir: str | Path, config: dict[str, Any]) -> Path:
    """Write ``config.json`` (keys sorted, indented by 2) atomically, creating the folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_json(run_dir / CONFIG, config, indent=2, sort_keys=True)


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """``results.json`` of a run folder, or None when it has none."""
    return read_json(Path(run_dir) / RESULTS)


def read_identity(run_dir: str | Path) -> dict[str, Any] | None:
    """``identity.json`` of a fine-tuning run folder, or None when it has none."""
    return read_json(Path(run_dir) / IDENTITY)


def is_done(run_dir: str | Path) -> bool:
    """Whether the run finished (its ``DONE`` exists)."""
    return (Path(run_dir) / DONE).is_file()


def mark_done(run_dir: str | Path) -> Path:
    """Write ``DONE`` (the time stamp) atomically: the last file of a finished run."""
    path = Path(run_dir) / DONE
    write_text_atomic(path, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    return path


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like a run folder (config.json, metrics.csv, checkpoints/ or
    samples/)."""
    p = Path(path)
    return p.is_dir() and any((p / n).exists() for n in _MARKERS)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Config, metrics rows, results and sample files of a run folder, for notebooks and tests.

    Returns:
        ``run_dir``, ``config`` and ``results`` (None when missing), ``metrics`` (rows of
        :func:`mmlib.runs.metrics.read_metrics`), ``samples`` (the samples files, oldest step
        first) and ``done``.
    """
    run_dir = Path(run_dir)
    return {
        "run_dir": run_dir,
        "config": read_config(run_dir),
        "results": read_results(run_dir),
        "metrics": read_metrics(run_dir / METRICS),
        "samples": list_samples(run_dir),
        "done": is_done(run_dir),
    }


class RunFolder:
    """A run folder ``runs/<kind>/<name>/`` as written by :mod:`mmlib.engine`.

    Args:
        path: the folder.

    Raises:
        NotADirectoryError: When ``path`` is not a run folder (no config.json, metrics.csv,
            checkpoints/ or samples/).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not is_run_folder(self.path):
            raise NotADirectoryError(
                f"{self.path}: not a run folder (expected config.json, "
                "metrics.csv, checkpoints/ or samples/)"
            )

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, steps={self.steps()})"

    @property
    def name(self) -> str:
        """``<kind>/<name>``."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config (empty when there is no config.json)."""
        return read_config(self.path) or {}

    @property
    def results(self) -> dict[str, Any]:
        """``results.json`` (empty when there is none)."""
        return read_results(self.path) or {}

    @property
    def done(self) -> bool:
        """Whether the run finished (``DONE``)."""
        return is_done(self.path)

    def metrics(self) -> Any:
        """``metrics.csv`` as a pandas DataFrame (empty when missing)."""
        import pandas as pd

        f = self.path / METRICS
        return pd.read_csv(f) if f.is_file() and f.stat().st_size else pd.DataFrame()

    def sample_steps(self) -> list[int]:
        """Steps that have a ``samples/step_XXXXXXX.npz`` file."""
        return [step_of(p) for p in list_samples(self.path)]

    def checkpoint_steps(self) -> list[int]:
        """Steps that have a *complete* checkpoint folder (see :func:`mmlib.runs.is_complete`)."""
        return [step_of(p) for p in list_checkpoints(self.path / CHECKPOINTS)]

    def steps(self) -> list[int]:
        """Every step with samples or a complete checkpoint, ascending."""
        return sorted(set(self.sample_steps()) | set(self.checkpoint_steps()))

    def samples_path(self, step: int | None = None) -> Path:
        """The samples file of ``step`` (the newest when None).

        Raises:
            FileNotFoundError: When the run has no samples for that step.
        """
        steps = self.sample_steps()
        if not steps:
            raise FileNotFoundError(
                f"{self.path}: no samples/step_*.npz yet (the engine writes "
                "them at each checkpoint)"
            )
        step = steps[-1] if step is None else step
        path = samples_file(self.path, step)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no samples for step {step}; steps with samples: {steps}"
            )
        return path

    def samples(self, step: int | None = None) -> Samples:
        """The samples of ``step`` (the newest when None)."""
        return load_samples(self.samples_path(step))

    def checkpoint(self, step: int | None = None) -> Path:
        """The complete checkpoint folder of ``step`` (the latest complete one when None).

        Raises:
            FileNotFoundError: When there is no complete checkpoint of that step.
        """
        return checkpoint_at(self.path, step)


def find_runs(root: str | Path, need_samples: bool = True) -> list[RunFolder]:
    """Run folders under ``root`` (e.g. ``work_dir(scale) / "runs" / "pretrain"``), newest first.

    Args:
        root: a folder of run folders (searched two levels deep: ``<kind>/<name>`` or ``<name>``).
        need_samples: keep only runs with a samples file. Defaults to True.

    Returns:
        The runs with a ``checkpoints/`` folder, newest samples file (else folder) first.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [
        p
        for p in list(root.glob("*")) + list(root.glob("*/*"))
        if p.is_dir() and (p / CHECKPOINTS).is_dir()
    ]
    runs = [RunFolder(p) for p in folders]
    if need_samples:
        runs = [r for r in runs if r.sample_steps()]

    def newest(r: RunFolder) -> float:
        return max(
            (p.stat().st_mtime for p in r.path.glob(f"{SAMPLES}/*.npz")),
            default=r.path.stat().st_mtime,
        )

    return sorted(runs, key=newest, reverse=True)
