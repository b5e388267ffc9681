"""``metrics.csv`` of a run: one row per optimiser step, read and written here.

Columns: ``step, epoch, lr`` first, then every scalar loss term (``loss, md, cmr, cl``, ...),
then ``samples_per_s, step_time_s, data_wait_frac, mem_mb, elapsed_s`` (see
:mod:`mmlib.engine.metrics`, which adds TensorBoard and the memory probe). Floats are written with
``repr`` so that a row read back is the number that was logged, bit for bit. On resume the rows
after the checkpoint's step (written by the interrupted process) are dropped, so the log reads as
one run.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

METRICS = "metrics.csv"
"""File name of a run's step log."""
FIRST: list[str] = ["step", "epoch", "lr"]
"""Columns written first, in this order (when present)."""
LAST: list[str] = ["samples_per_s", "step_time_s", "data_wait_frac", "mem_mb", "elapsed_s"]
"""Bookkeeping columns written last, in this order (when present)."""


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as dicts of floats (empty cells are NaN).

    Args:
        path: the ``metrics.csv`` file, or a run folder holding one.

    Returns:
        One dict per row, in file order; an empty list when the file does not exist.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [
            {k: (float(v) if v not in ("", None) else math.nan) for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


def _fmt(v: Any) -> Any:
    # repr keeps every bit of a float (str would too on Python 3, but repr says so)
    if isinstance(v, float):
        return repr(v)
    return v


class MetricsCSV:
    """Append rows to ``run_dir/metrics.csv`` (missing columns stay empty).

    Args:
        run_dir: the run folder.
        resume_step: keep the rows with ``step`` up to this one (the checkpoint resumed from)
            and drop the later ones; None starts a new log (an old file is removed). Defaults
            to None.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS
        self.header: list[str] = []
        rows = read_metrics(self.path) if resume_step is not None else []
        rows = [r for r in rows if resume_step is not None and r["step"] <= resume_step]
        if rows:
            self.header = list(rows[0])
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.header, restval="")
            w.writeheader()
            for r in rows:
                w.writerow({k: _fmt(r.get(k, "")) for k in self.header})

    def append(self, row: dict[str, Any]) -> None:
        """Write one row; a column not seen before joins the header (the file is rewritten)."""
        keys = list(row)
        if not self.header:
            terms = [k for k in keys if k not in FIRST and k not in LAST]
            self.header = [k for k in FIRST if k in row] + terms + [k for k in LAST if k in row]
        elif any(k not in self.header for k in keys):
            old = read_metrics(self.path)
            self.header = self.header + [k for k in keys if k not in self.header]
            self._rewrite(old)
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.header, restval="")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row[k]) for k in keys})
