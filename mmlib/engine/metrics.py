"""Metrics of a run while it trains: ``metrics.csv`` always, TensorBoard (``tb/``) when installed.

The CSV format is the run folder's (:mod:`mmlib.runs.metrics`, which also reads it back); this
module adds what only a training process knows: the TensorBoard writer and the memory probe.
``mem_mb`` is the peak CUDA memory allocated, or the peak resident memory of the process on CPU.
Only rank 0 writes.
"""

from __future__ import annotations

import math
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from mmlib.runs.metrics import FIRST, LAST, MetricsCSV, read_metrics

__all__ = ["FIRST", "LAST", "MetricsLogger", "peak_memory_mb", "read_metrics"]


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident memory (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class MetricsLogger:
    """Append step metrics to ``run_dir/metrics.csv`` (and TensorBoard).

    Args:
        run_dir: the run folder.
        enabled: False on ranks other than 0 (nothing is written). Defaults to True.
        tensorboard: ``"auto"`` (when ``tensorboard`` is installed), True or False.
            Defaults to ``"auto"``.
        resume_step: drop rows with ``step`` above this (the checkpoint resumed from); None
            starts a new log. Defaults to None.

    Raises:
        ImportError: When ``tensorboard=True`` and the package is not installed.
    """

    def __init__(
        self,
        run_dir: Path,
        enabled: bool = True,
        tensorboard: Any = "auto",
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.writer: Any = None
        self.csv: MetricsCSV | None = None
        self.path = Path(run_dir) / "metrics.csv"
        if not enabled:
            return
        self.csv = MetricsCSV(run_dir, resume_step)
        if tensorboard in (True, "auto", "true", "on"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(
                    str(Path(run_dir) / "tb"), purge_step=(resume_step or 0) + 1
                )
            except ImportError:
                if tensorboard is True:
                    raise ImportError(
                        "log.tensorboard=true needs the tensorboard package: "
                        "pip install tensorboard"
                    ) from None

    def log(self, row: dict[str, Any]) -> None:
        """Write one row (missing columns stay empty; a new column rewrites the header)."""
        if self.csv is None:
            return
        self.csv.append(row)
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
