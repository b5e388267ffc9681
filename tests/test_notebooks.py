"""Every notebook in notebooks/ runs at smoke scale through the runner and writes its results.

New notebooks are picked up without editing this file; the numbers each one writes are checked
by ``tests/nbchecks/check_<stem>.py`` (required for every notebook).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from mmlib.notebooks import list_notebooks

NOTEBOOKS = [p.stem for p in list_notebooks()]
CHECKS = Path(__file__).parent / "nbchecks"


def _numbers(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, float):
        yield path, value


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_writes_results(smoke_book, name: str) -> None:
    out, results = smoke_book
    result = results[name]
    assert result.ok, result.error
    executed = json.loads(result.executed.read_text())
    errors = [
        o
        for c in executed["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{name}: error output in the executed notebook"
    results_file = result.out_dir / "results.json"
    assert results_file.exists(), f"{name} wrote no results.json"
    data = json.loads(results_file.read_text())
    assert data, f"{name}: results.json is empty"
    bad = [p for p, v in _numbers(data) if not math.isfinite(v)]
    assert not bad, f"{name}: non-finite numbers at {bad}"
    check_file = CHECKS / f"check_{name}.py"
    cwd = Path.cwd()
    shown = check_file.relative_to(cwd) if check_file.is_relative_to(cwd) else check_file
    assert check_file.exists(), f"add {shown} with check(results, out_dir)"
    spec = importlib.util.spec_from_file_location(f"nbcheck_{name}", check_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.check(data, result.out_dir)


def test_every_notebook_has_parameters_and_sections() -> None:
    import jupytext

    for path in list_notebooks():
        nb = jupytext.read(path)
        first = nb.cells[0]
        assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", []), (
            f"{path}: first cell must be tagged parameters"
        )
        assert "scale" in first.source and "out_dir" in first.source, (
            f"{path}: parameters need scale and out_dir"
        )
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        order = [
            text.find(s)
            for s in ("\n# ", "## Overview", "## Prerequisites", "## Summary", "What's next")
        ]
        assert all(i >= 0 for i in order[1:]), (
            f"{path}: needs Overview, Prerequisites, Summary, What's next"
        )
        assert order[1:] == sorted(order[1:]), f"{path}: sections out of order"
