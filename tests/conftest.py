"""Shared fixtures: hermetic nilearn data folder, system-dependency checks, the smoke book."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# nilearn must find the ICBM template inside its wheel, never in a user folder or online.
os.environ.setdefault("NILEARN_DATA", tempfile.mkdtemp(prefix="mmlib-nilearn-"))
os.environ.setdefault("MPLBACKEND", "Agg")

IN_CI = bool(os.environ.get("MMLIB_CI"))


def need_system(binary: str, why: str, install: str) -> str:
    """Path of a system binary; skip (locally) or fail (in CI) when it is missing."""
    path = shutil.which(binary)
    if path:
        return path
    message = f"{binary} not found ({why}); install it with: {install}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError  # unreachable


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory):
    """Every notebook executed once at smoke scale by the runner (shared by notebook and
    book tests)."""
    from mmlib.notebooks import run_all

    out = tmp_path_factory.mktemp("smoke-book")
    results = run_all([], "smoke", out, keep_going=True)
    return out, {r.name: r for r in results}
