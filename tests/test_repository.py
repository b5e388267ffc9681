"""What a clone receives: no links into someone's machine (a committed `.venv` link replaced the
checkout's virtual environment on merge twice in one session)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_tracked_file_is_a_link_to_an_absolute_path() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    staged = subprocess.run(
        ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    links = [line.split("\t", 1)[1] for line in staged if line.startswith("120000")]
    absolute = [p for p in links if (ROOT / p).is_symlink() and (ROOT / p).readlink().is_absolute()]
    assert not absolute, f"tracked links to absolute paths (machine-specific): {absolute}"
    assert ".venv" not in {p.split("/")[0] for p in links}, "the virtual environment is tracked"
