"""The command line has one home: ``mmlib/cli/``, one module per command, which calls the library.

No library module parses arguments, imports the CLI or runs the ``mmlib`` command line; the
library faces (``mmlib.data``) only re-export.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

import mmlib
from mmlib.cli import COMMANDS, main

PACKAGE = Path(mmlib.__file__).parent
CLI = PACKAGE / "cli"
CLI_FUNCTIONS = {"configure_parser", "run_cli"}


def _library_modules() -> list[Path]:
    """Every module of mmlib outside ``mmlib/cli/`` (``__main__.py`` included)."""
    return sorted(p for p in PACKAGE.rglob("*.py") if CLI not in p.parents)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported(tree: ast.Module) -> set[str]:
    """Modules a file imports (``from a.b import c`` yields ``a.b`` and ``a.b.c``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _is_cli(module: str) -> bool:
    return module == "mmlib.cli" or module.startswith("mmlib.cli.")


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_library_modules_parse_no_arguments() -> None:
    offenders = []
    for path in _library_modules():
        tree = _tree(path)
        if any(name.split(".")[0] == "argparse" for name in _imported(tree)):
            offenders.append(f"{_rel(path)}: imports argparse")
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        defined = {n.name for n in ast.walk(tree) if isinstance(n, functions)}
        offenders += [f"{_rel(path)}: defines {name}" for name in sorted(defined & CLI_FUNCTIONS)]
    assert not offenders, "argparse code belongs in mmlib/cli/:\n" + "\n".join(offenders)


def test_no_library_module_imports_the_cli() -> None:
    offenders = []
    for path in _library_modules():
        tree = _tree(path)
        # a dotted name in a string is an import too (importlib.import_module("mmlib.cli.x"))
        strings = {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and n.value.replace(".", "").isidentifier()
        }
        cli = sorted(m for m in _imported(tree) | strings if _is_cli(m))
        if path == PACKAGE / "__main__.py":
            assert cli == ["mmlib.cli", "mmlib.cli.main"], f"__main__ should only call main: {cli}"
        elif cli:
            offenders.append(f"{_rel(path)}: {', '.join(cli)}")
    assert not offenders, "the CLI calls the library, never the reverse:\n" + "\n".join(offenders)


def test_no_library_module_runs_the_command_line() -> None:
    offenders = []
    for path in _library_modules():
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.List | ast.Tuple):
                continue
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            if ("-m", "mmlib") in itertools.pairwise(values):
                offenders.append(f"{_rel(path)}:{node.lineno}: runs `-m mmlib`")
    assert not offenders, "call a library function, not the mmlib command:\n" + "\n".join(offenders)


def test_one_cli_module_per_command() -> None:
    targets = {module for module, _ in COMMANDS.values()}
    assert all(_is_cli(m) for m in targets), sorted(m for m in targets if not _is_cli(m))
    modules = {f"mmlib.cli.{p.stem}" for p in CLI.glob("*.py") if p.name != "__init__.py"}
    assert modules == targets, f"modules without a command: {sorted(modules - targets)}"


def test_data_face_only_reexports() -> None:
    tree = _tree(PACKAGE / "data" / "__init__.py")
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    defined = [n.name for n in tree.body if isinstance(n, kinds)]
    # __getattr__ is the lazy re-export (PEP 562) that keeps `import mmlib.data` free of torch
    assert defined == ["__getattr__"], f"mmlib/data/__init__.py should only re-export: {defined}"
    from mmlib.data import STORE_SPACING, STORE_WORKERS, ensure, ensure_store

    assert ensure_store is ensure.ensure_store and STORE_SPACING is ensure.STORE_SPACING
    assert STORE_WORKERS is ensure.STORE_WORKERS


def test_book_command_reports_missing_notebooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    executed = tmp_path / "executed"
    executed.mkdir()
    assert main(["book", "--executed", str(executed), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"book: {executed}: no executed notebook for ")
    assert "mmlib notebooks run" in err
    with pytest.raises(SystemExit) as exit_info:  # --executed is required: a usage error
        main(["book"])
    assert exit_info.value.code == 2


def test_python_dash_m_mmlib_book_says_where_the_command_went() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mmlib.book", "--executed", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "mmlib book" in proc.stderr
