"""Staging the book: missing executed notebooks are a clear error; parameter cells are hidden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmlib.book import BookError, _hide_parameters, stage, toc_files


def test_missing_executed_notebook_is_named(tmp_path: Path) -> None:
    with pytest.raises(BookError, match="no executed notebook for 00_overview"):
        stage(tmp_path / "empty", tmp_path / "stage")


def test_parameter_cells_are_hidden(tmp_path: Path) -> None:
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"tags": ["parameters"]},
                "source": "scale='demo'",
                "outputs": [],
            },
            {
                "cell_type": "code",
                "metadata": {"tags": ["injected-parameters"]},
                "source": "scale='smoke'",
                "outputs": [],
            },
            {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    src, dst = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    src.write_text(json.dumps(nb))
    _hide_parameters(src, dst)
    cells = json.loads(dst.read_text())["cells"]
    assert ["remove-cell" in c["metadata"].get("tags", []) for c in cells] == [True, True, False]


def test_toc_root_is_the_introduction() -> None:
    files = toc_files()
    assert files[0] == "book/intro" and "book/bibliography" in files
