"""Checks on what notebooks/00_overview.py writes."""

from __future__ import annotations

import pathlib

from mmlib import MODALITIES


def check(results: dict, out_dir: pathlib.Path) -> None:
    assert results["scale"] == "smoke"
    assert results["n_modalities"] == len(MODALITIES) == 8
    assert results["torch"].startswith("2.13")
    assert results["torch_threads"] >= 1
    assert (out_dir / "method.png").stat().st_size > 10_000
