"""The book's result pages read as results: code collapsed, tables as tables, comparisons with
intervals (issue 18)."""

from __future__ import annotations

import re

import jupytext

from mmlib.notebooks import NOTEBOOK_DIR

RESULT_PAGES = ("12_results",)
"""Pages whose every code cell is collapsed (Jupyter Book 1.x tag ``hide-input``)."""
TABLE_PAGES = (
    "07_segmentation",
    "08_classification",
    "09_label_efficiency_and_ablation",
    "10_missing_modalities",
    "12_results",
)


def _cells(stem: str) -> list:
    return jupytext.read(NOTEBOOK_DIR / f"{stem}.py").cells


def test_result_pages_collapse_their_code() -> None:
    for stem in RESULT_PAGES:
        for cell in _cells(stem):
            tags = cell.metadata.get("tags", [])
            if cell.cell_type == "code" and "parameters" not in tags:
                assert "hide-input" in tags, (
                    f"{stem}: a code cell without hide-input:\n{cell.source[:200]}"
                )


def test_pages_render_tables_not_markdown_text() -> None:
    for stem in TABLE_PAGES:
        code = "\n".join(c.source for c in _cells(stem) if c.cell_type == "code")
        assert not re.search(r"print\(\s*to_markdown\(", code), (
            f"{stem} prints a markdown table as text; display(html_table(...)) renders a table"
        )
        assert "html_table(" in code, f"{stem}: no table rendered with html_table"
        assert not re.search(r"print\([^\n]*\.to_string\(\)\)", code), (
            f"{stem} prints a frame as text; display(html_table(...)) renders a table"
        )


def test_table_cells_collapse_their_code() -> None:
    """On every page with result tables, a cell that renders one has its code collapsed, so
    that the table and its figure are in view (the code is a click away)."""
    for stem in TABLE_PAGES:
        for cell in _cells(stem):
            if cell.cell_type == "code" and "html_table(" in cell.source:
                assert "hide-input" in cell.metadata.get("tags", []), (
                    f"{stem}: a cell renders a table without hide-input:\n{cell.source[:200]}"
                )


def test_comparisons_go_through_the_intervals() -> None:
    for stem in ("07_segmentation", "09_label_efficiency_and_ablation", "12_results"):
        code = "\n".join(c.source for c in _cells(stem) if c.cell_type == "code")
        assert "paired_table(" in code and "show_figure(" in code, stem
    code = "\n".join(c.source for c in _cells("12_results") if c.cell_type == "code")
    assert "headline(" in code and "verdict(" in code and "power_analysis(" in code
