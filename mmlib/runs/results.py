"""``results.json`` files (of runs and of notebooks) and the table of finished fine-tuning runs.

JSON has no NaN: a spread over one seed, or an AUC on a test set with one class, is undefined,
and :func:`json_safe` records it as ``null`` rather than writing invalid JSON. Writes go through a
temporary file and a rename, so a killed process never leaves a half-written results file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mmlib.runs.checkpoints import write_text_atomic

RESULTS = "results.json"
"""File name of a run's (or a notebook's) key numbers."""
DONE = "DONE"
"""Written last into a finished run folder (its time stamp)."""
KEYS: tuple[str, ...] = (
    "task",
    "kind",
    "init",
    "label_fraction",
    "seed",
    "fill",
    "n_labelled",
    "n_test",
    "steps",
    "template_replacement",
)
"""Columns of :func:`collect_runs` that describe a fine-tuning run (its cell of a grid)."""

REPLACEMENT_SUFFIX = "+replacement"
"""Added to the ``init`` of a run fine-tuned with template replacement, so that no table pairs
or averages it with the plain runs of the same initialisation."""


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars made Python numbers and undefined numbers made ``None``.

    Args:
        value: dicts, lists, tuples, numpy arrays and scalars, nested.

    Returns:
        The same structure in plain Python types (keys as strings; NaN and infinities as None).
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer | int):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if np.isfinite(value) else None
    return value


def read_json(path: str | Path) -> Any:
    """The content of a JSON file, or None when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: str | Path, value: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write ``value`` as JSON and a final newline, atomically, as given (no :func:`json_safe`).

    Args:
        path: the file.
        value: JSON-serialisable data.
        indent: indentation. Defaults to 2.
        sort_keys: sort the keys of objects. Defaults to False.
    """
    path = Path(path)
    write_text_atomic(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")
    return path


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write a ``results.json`` atomically (undefined numbers as ``null``, see :func:`json_safe`).

    Args:
        path: the file (a notebook's ``out_dir/results.json`` or a run's).
        results: the numbers; other objects are written as their ``str``.

    Returns:
        ``path``.
    """
    path = Path(path)
    write_text_atomic(path, json.dumps(json_safe(results), indent=1, default=str))
    return path


def collect_runs(roots: str | Path | Iterable[str | Path], latest_only: bool = True) -> Any:
    """One row per finished fine-tuning run folder found under ``roots`` (folders with ``DONE``).

    Args:
        roots: a folder (searched recursively for ``results.json``), or several, or run folders.
        latest_only: keep only the newest run (by ``DONE`` time) of each (task, init, label
            fraction, seed, fill, template replacement) cell, e.g. when a pre-training
            checkpoint changed and the cell was fine-tuned again into a new folder. Defaults to
            True.

    Returns:
        A pandas DataFrame with columns :data:`KEYS` (a run with template replacement has
        ``init`` ``<init>+replacement``), the test metrics (``dice_mean``,
        ``dice_TC``, ..., ``accuracy``, ``auc``, ...), ``seconds_train``,
        ``seconds_per_step``, ``run`` (the folder) and ``finished`` (``DONE``'s time). Empty
        when nothing is found.
    """
    import pandas as pd

    if isinstance(roots, str | Path):
        roots = [roots]
    rows = []
    for root in roots:
        root = Path(root)
        found = [root / RESULTS] if (root / RESULTS).is_file() else sorted(root.rglob(RESULTS))
        for path in found:
            if not (path.parent / DONE).is_file():
                continue
            res = json.loads(path.read_text())
            if "init" not in res or "test" not in res:
                continue
            row: dict[str, Any] = {k: res.get(k) for k in KEYS}
            row["template_replacement"] = int(res.get("template_replacement") or 0)
            if row["template_replacement"] > 0:  # another method than the plain init
                row["init"] = f"{row['init']}{REPLACEMENT_SUFFIX}"
            row.update({k: v for k, v in res["test"].items() if not isinstance(v, dict | list)})
            row["seconds_train"] = res.get("seconds", {}).get("train")
            row["seconds_per_step"] = res.get("seconds", {}).get("per_step")
            row["run"] = str(path.parent)
            row["finished"] = (path.parent / DONE).stat().st_mtime
            rows.append(row)
    df = pd.DataFrame(rows)
    if latest_only and len(df):
        cell = ["task", "init", "label_fraction", "seed", "fill", "template_replacement"]
        df = (
            df.sort_values("finished")
            .drop_duplicates(cell, keep="last")
            .sort_values(cell)
            .reset_index(drop=True)
        )
    return df
