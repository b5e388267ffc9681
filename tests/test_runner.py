"""The notebook runner: failures name the notebook and cell, bad names and scales are clear errors,
sweeps continue past failed points and gather a table, nothing is written into the source tree."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmlib.notebooks import NOTEBOOK_DIR, resolve, run_notebook, sweep

BROKEN = """# %% tags=["parameters"]
scale = "demo"
out_dir = "x"
divisor = 0

# %% [markdown]
# # A broken notebook

# %%
import json, pathlib
pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
value = 1 / divisor
pathlib.Path(out_dir, "results.json").write_text(json.dumps({"value": value, "divisor": divisor}))
"""


@pytest.fixture()
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "nb" / "90_broken.py"
    path.parent.mkdir()
    path.write_text(BROKEN)
    return path


def test_failing_cell_fails_the_run_and_names_the_cell(broken: Path, tmp_path: Path) -> None:
    result = run_notebook(broken, tmp_path / "out", "smoke")
    assert not result.ok
    head = result.error.splitlines()[0]
    assert "90_broken" in head and "cell 3" in head and "ZeroDivisionError" in head
    assert "1 / divisor" in result.error  # the traceback is shown
    assert result.executed.exists()  # the partial notebook is kept for inspection


def test_cli_exit_status_and_message(broken: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmlib",
            "notebooks",
            "run",
            str(broken),
            "--scale",
            "smoke",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "notebook 90_broken failed in cell 3" in proc.stderr


def test_sweep_continues_past_a_failed_point(broken: Path, tmp_path: Path) -> None:
    table, results = sweep(str(broken), {"divisor": [2, 0, 4]}, "smoke", tmp_path / "sweep")
    assert [r.ok for r in results] == [True, False, True]
    rows = list(csv.DictReader(table.open()))
    assert [r["divisor"] for r in rows] == ["2", "0", "4"]
    assert rows[0]["value"] == "0.5" and rows[2]["value"] == "0.25" and rows[1]["value"] == ""
    assert "ZeroDivisionError" in rows[1]["error"]
    assert (tmp_path / "sweep" / "divisor=4" / "outputs" / "results.json").exists()


def test_unknown_notebook_and_scale_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid notebooks: 00_overview"):
        resolve(["99_nothing"])
    proc = subprocess.run(
        [sys.executable, "-m", "mmlib", "notebooks", "run", "00", "--scale", "huge"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "choose one of smoke, demo, paper" in proc.stderr


def test_names_resolve_by_number_and_title() -> None:
    assert resolve(["00"])[0].stem == "00_overview"
    assert resolve(["overview"])[0].stem == "00_overview"


def test_runner_leaves_no_ipynb_in_the_source_tree(tmp_path: Path) -> None:
    before = set(NOTEBOOK_DIR.glob("*.ipynb"))
    result = run_notebook(resolve(["00"])[0], tmp_path, "smoke")
    assert result.ok, result.error
    assert set(NOTEBOOK_DIR.glob("*.ipynb")) == before
    assert json.loads((tmp_path / "00_overview" / "results.json").read_text())["scale"] == "smoke"
