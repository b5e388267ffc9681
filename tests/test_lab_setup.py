"""tools/jupyterlab_setup.py: which files open as notebooks, and the extension it installs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mmlib.notebooks import list_notebooks
from mmlib.paths import REPO_ROOT


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "jupyterlab_setup", REPO_ROOT / "tools" / "jupyterlab_setup.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup = _setup_module()


def test_chapters_and_only_chapters_open_as_notebooks() -> None:
    chapters = list_notebooks()
    assert len(chapters) >= 10
    assert all(setup.is_notebook_name(p.name) for p in chapters)
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    others = [p for p in tracked if not p.startswith("notebooks/")]
    assert len(others) > 50  # mmlib/, tests/, tools/, benchmarks/
    claimed = [p for p in others if setup.is_notebook_name(Path(p).name)]
    assert claimed == [], f"these would open as notebooks in JupyterLab: {claimed}"
    for name in ("03_cross_modal_reconstruction.py", "12_results.py"):
        assert setup.is_notebook_name(name)
    for name in ("paths.py", "03_x.ipynb", "3_x.py", "003_x.py", "03_x.py.bak", "03-x.py"):
        assert not setup.is_notebook_name(name), name


def test_extension_declares_a_name_only_file_type() -> None:
    files = setup.extension_files()
    package = json.loads(files["package.json"])
    entry = package["jupyterlab"]["_build"]["load"]
    assert (
        package["name"] == setup.EXTENSION
        and package["jupyterlab"]["_build"]["extension"] == "./extension"
    )
    js = files[entry]
    file_type = json.loads(js.split("var FILE_TYPE = ", 1)[1].split(";\n", 1)[0])
    # matched by name only: an extension list would claim every .py file (mmlib/ too)
    assert file_type["extensions"] == [] and file_type["pattern"] == setup.NOTEBOOK_PATTERN
    assert file_type["name"] == setup.FILE_TYPE and file_type["contentType"] == "notebook"
    assert json.loads(js.split("var VIEWERS = ", 1)[1].split(";\n", 1)[0])[0] == "Jupytext Notebook"


def test_install_is_idempotent_and_found_by_jupyterlab(tmp_path: Path) -> None:
    from jupyterlab_server.config import get_federated_extensions

    written = setup.install(tmp_path)
    root = tmp_path / "share" / "jupyter" / "labextensions" / setup.EXTENSION
    assert {p.relative_to(root).as_posix() for p in written} == set(setup.extension_files())
    assert setup.install(tmp_path) == []
    stale = root / "static" / "remoteEntry.0000000000000000.js"
    stale.write_text("old")
    assert setup.install(tmp_path) == [] and not stale.exists()
    found = get_federated_extensions([str(tmp_path / "share" / "jupyter" / "labextensions")])
    ext = found[setup.EXTENSION]
    assert (Path(ext["ext_path"]) / ext["jupyterlab"]["_build"]["load"]).is_file()


def test_this_environment_has_the_extension() -> None:
    root = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / setup.EXTENSION
    for rel, text in setup.extension_files().items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            pytest.fail(
                f"{path} is missing or out of date: run `make venv` "
                f"(or {sys.executable} tools/jupyterlab_setup.py)"
            )
