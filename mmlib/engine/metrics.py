"""Metrics of a run: ``metrics.csv`` always, TensorBoard (``tb/``) when it is installed.

One row per optimiser step: ``step, epoch, lr``, every scalar loss term the objective returns
(``loss, md, cmr, cl``, ...), ``samples_per_s``, ``step_time_s``, ``data_wait_frac`` (the share
of the step spent waiting for the data loader), ``mem_mb`` (peak CUDA memory allocated, or
peak resident memory of the process on CPU) and ``elapsed_s``. Only rank 0 writes. On resume
the rows after the checkpoint's step (written by the interrupted process) are dropped, so the
log reads as one run.
"""

from __future__ import annotations

import csv
import math
import resource
import sys
from pathlib import Path
from typing import Any

import torch

FIRST = ["step", "epoch", "lr"]
LAST = ["samples_per_s", "step_time_s", "data_wait_frac", "mem_mb", "elapsed_s"]


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident memory (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as dicts of floats (empty cells are NaN)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else math.nan) for k, v in row.items()} for row in csv.DictReader(fh)]


class MetricsLogger:
    """Append step metrics to ``run_dir/metrics.csv`` (and TensorBoard).

    Args:
        run_dir: the run folder.
        enabled: False on ranks other than 0 (nothing is written). Defaults to True.
        tensorboard: ``"auto"`` (when ``tensorboard`` is installed), True or False.
            Defaults to ``"auto"``.
        resume_step: drop rows with ``step`` above this (the checkpoint resumed from); None
            starts a new log. Defaults to None.
    """

    def __init__(
        self, run_dir: Path, enabled: bool = True, tensorboard: Any = "auto", resume_step: int | None = None
    ) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.enabled = enabled
        self.header: list[str] = []
        self.writer: Any = None
        if not enabled:
            return
        rows = read_metrics(self.path) if resume_step is not None else []
        rows = [r for r in rows if resume_step is not None and r["step"] <= resume_step]
        if rows:
            self.header = list(rows[0])
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()
        if tensorboard in (True, "auto", "true", "on"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=(resume_step or 0) + 1)
            except ImportError:
                if tensorboard is True:
                    raise ImportError("log.tensorboard=true needs the tensorboard package: pip install tensorboard") from None

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.header, restval="")
            w.writeheader()
            for r in rows:
                w.writerow({k: _fmt(r.get(k, "")) for k in self.header})

    def log(self, row: dict[str, Any]) -> None:
        """Write one row (missing columns stay empty; a new column rewrites the header)."""
        if not self.enabled:
            return
        keys = list(row)
        if not self.header:
            terms = [k for k in keys if k not in FIRST and k not in LAST]
            self.header = [k for k in FIRST if k in row] + terms + [k for k in LAST if k in row]
        elif any(k not in self.header for k in keys):
            old = read_metrics(self.path)
            extra = [k for k in keys if k not in self.header]
            self.header = self.header + extra
            self._rewrite(old)
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.header, restval="")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row[k]) for k in keys})
        if self.writer is not None:
            step = int(row["step"])
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(float(v)):
                    group = "loss" if k not in FIRST + LAST else "train"
                    self.writer.add_scalar(f"{group}/{k}", float(v), step)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)
    return v
