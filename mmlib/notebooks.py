"""Execute the book's notebooks with papermill (the library behind ``mmlib notebooks``).

The jupytext percent-format ``notebooks/NN_name.py`` files are the source of truth. The runner
converts each one in memory (no ``.ipynb`` is written into the source tree), injects the
parameters (``scale``, ``out_dir`` and any ``-p KEY VALUE``), executes it with papermill and writes
the executed notebook to ``OUT/NN_name.ipynb`` and the notebook's own outputs (``results.json``,
figures) to ``OUT/NN_name/``. The book renders exactly these executed notebooks; the runner is
its only executor. The command line (``mmlib notebooks run``, ``sweep``, ``list``) is
:mod:`mmlib.cli.notebooks`.

Examples::

    mmlib notebooks run --scale smoke --out runs/smoke-book
    mmlib notebooks run 03 05_template_distillation -p epochs 2
    mmlib notebooks sweep 03 -p mask_rate 0.6,0.8 -p block_size 4,8 --scale smoke
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmlib.configs.scales import check_scale
from mmlib.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


@dataclass
class NotebookResult:
    """What one executed notebook produced."""

    name: str
    executed: Path
    out_dir: Path
    seconds: float
    ok: bool
    error: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def list_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks of the book, in reading order (``NN_name.py``, sorted)."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.py") if p.is_file())


def resolve(names: list[str], directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """Map user names (``03``, ``03_cross_modal_reconstruction``, ``cross_modal_reconstruction``,
    or a path) to notebook files.

    Raises:
        ValueError: When a name matches no notebook (or several); the message lists the valid ones.
    """
    available = list_notebooks(directory)
    if not names:
        return available
    chosen: list[Path] = []
    for name in names:
        path = Path(name)
        if path.suffix == ".py" and path.exists():
            chosen.append(path.resolve())
            continue
        stem = path.stem if path.suffix == ".py" else name
        hits = [p for p in available if stem in (p.stem, p.stem[:2], p.stem[3:])]
        if len(hits) != 1:
            valid = ", ".join(p.stem for p in available) or "(none)"
            what = "matches several notebooks" if hits else "is not a notebook"
            raise ValueError(f"{name!r} {what}; valid notebooks: {valid}")
        chosen.append(hits[0])
    return chosen


def parse_value(text: str) -> Any:
    """Parse a command-line parameter value the way papermill's ``-p`` does (YAML scalars)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _load(path: Path) -> Any:
    import jupytext

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise NotebookError(f"{path}: no cell is tagged 'parameters'; tag the first code cell")
    return nb


def _describe_failure(nb_path: Path, exc: Exception) -> str:
    """One headline naming notebook and cell, then the traceback papermill captured."""
    cell = getattr(exc, "cell_index", None)
    count = getattr(exc, "exec_count", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = f"cell {cell}" if cell is not None else "a cell"
    if count is not None:
        where += f" (In [{count}])"
    source = getattr(exc, "source", "")
    head = f"notebook {nb_path.stem} failed in {where}: {ename}: {evalue}"
    tb = "\n".join(getattr(exc, "traceback", []) or [])
    try:  # strip ANSI colour codes from the kernel's traceback
        import re

        tb = re.sub(r"\x1b\[[0-9;]*m", "", tb)
    except Exception:  # pragma: no cover
        pass
    body = f"\n--- cell source ---\n{source}\n--- traceback ---\n{tb}" if source or tb else ""
    return head + body


def run_notebook(
    path: Path,
    out: Path,
    scale: str,
    parameters: dict[str, Any] | None = None,
    out_dir: Path | None = None,
    progress: bool = False,
    timeout: int | None = None,
) -> NotebookResult:
    """Execute one notebook with papermill.

    Args:
        path: the ``.py`` notebook.
        out: folder of executed notebooks; the executed copy is ``out/<stem>.ipynb``.
        scale: one of :data:`mmlib.configs.scales.SCALES`.
        parameters: extra papermill parameters. Defaults to None.
        out_dir: the notebook's own output folder. Defaults to ``out/<stem>``.
        progress: show papermill's per-cell progress bar. Defaults to False.
        timeout: per-cell timeout in seconds. Defaults to None (no limit).

    Returns:
        The result; ``ok`` is False when a cell failed (``error`` names notebook and cell).
    """
    import papermill

    check_scale(scale)
    out.mkdir(parents=True, exist_ok=True)
    out_dir = (out_dir or out / path.stem).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out / f"{path.stem}.ipynb"
    params = {"scale": scale, "out_dir": str(out_dir), **(parameters or {})}
    start = time.perf_counter()
    try:
        nb = _load(path)
        papermill.execute_notebook(
            nb,
            str(executed),
            parameters=params,
            kernel_name="python3",
            progress_bar=progress,
            cwd=str(path.parent),
            execution_timeout=timeout,
        )
        ok, error = True, ""
    except Exception as exc:  # papermill raises PapermillExecutionError for a failing cell
        ok, error = False, _describe_failure(path, exc)
    seconds = time.perf_counter() - start
    results: dict[str, Any] = {}
    results_file = out_dir / "results.json"
    if ok and results_file.exists():
        results = json.loads(results_file.read_text())
    return NotebookResult(path.stem, executed, out_dir, seconds, ok, error, results)


def run_all(
    names: list[str],
    scale: str,
    out: Path,
    parameters: dict[str, Any] | None = None,
    keep_going: bool = False,
    timeout: int | None = None,
) -> list[NotebookResult]:
    """Execute notebooks in order (all of them when ``names`` is empty).

    Stops at the first failure unless ``keep_going``; writes ``out/run.json`` (name, seconds,
    ok, error per notebook).
    """
    check_scale(scale)
    paths = resolve(names)
    from tqdm.auto import tqdm

    results: list[NotebookResult] = []
    bar = tqdm(paths, desc=f"notebooks ({scale})", unit="nb")
    for path in bar:
        bar.set_postfix_str(path.stem)
        result = run_notebook(path, out, scale, parameters, timeout=timeout)
        results.append(result)
        tqdm.write(f"{'ok  ' if result.ok else 'FAIL'} {path.stem}  {result.seconds:6.1f} s")
        if not result.ok and not keep_going:
            break
    summary = [
        {
            "name": r.name,
            "seconds": round(r.seconds, 2),
            "ok": r.ok,
            "error": r.error.split("\n")[0],
        }
        for r in results
    ]
    (out / "run.json").write_text(json.dumps({"scale": scale, "notebooks": summary}, indent=2))
    return results


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, row)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        row[prefix] = value


def point_name(point: dict[str, Any]) -> str:
    """Folder name of one sweep point, e.g. ``block_size=4,mask_rate=0.8``."""
    return ",".join(f"{k}={v}" for k, v in point.items()).replace("/", "_")


def sweep(
    name: str,
    grid: dict[str, list[Any]],
    scale: str,
    out: Path,
    timeout: int | None = None,
) -> tuple[Path, list[NotebookResult]]:
    """Run one notebook over the product of parameter values; gather results into a CSV.

    Every point gets its own folder ``out/<point>/`` (executed notebook and outputs). A failed
    point is reported and the sweep goes on. The table ``out/sweep.csv`` has one row per point:
    the parameters, ``ok``, ``seconds``, ``error`` and every scalar of the point's
    ``results.json`` (nested keys joined with dots).

    Returns:
        The CSV path and the per-point results.
    """
    check_scale(scale)
    (path,) = resolve([name])
    keys = list(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    results: list[NotebookResult] = []
    for point in tqdm(points, desc=f"sweep {path.stem}", unit="point"):
        folder = out / point_name(point)
        result = run_notebook(
            path, folder, scale, point, out_dir=folder / "outputs", timeout=timeout
        )
        results.append(result)
        row: dict[str, Any] = {**point, "ok": result.ok, "seconds": round(result.seconds, 2)}
        row["error"] = result.error.split("\n")[0]
        _flatten("", result.results, row)
        rows.append(row)
        if not result.ok:
            tqdm.write(f"FAIL {point_name(point)}: {row['error']}")
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    out.mkdir(parents=True, exist_ok=True)
    table = out / "sweep.csv"
    tmp = table.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(table)
    return table, results
