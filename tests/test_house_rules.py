"""The house's import rules, read from the code's own imports (module level and in functions).

Data flows one way (ARCHITECTURE.md, "Rooms"): a room never imports a room downstream of it, the
run-folder room reads and writes files only, and nothing but the command line imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mmlib.paths import REPO_ROOT

ROOMS = (
    "modalities",
    "configs",
    "paths",
    "data",
    "tasks",
    "proxy",
    "models",
    "runs",
    "engine",
    "evaluate",
    "viz",
    "cli",
)
VOCABULARY = {"modalities", "configs", "paths"}
NEVER: dict[str, set[str]] = {
    "modalities": set(ROOMS) - {"modalities"},
    "configs": set(ROOMS) - {"configs"},
    "data": {"tasks", "proxy", "models", "runs", "engine", "evaluate", "viz", "cli"},
    "tasks": set(ROOMS) - VOCABULARY - {"tasks", "data"},  # tasks read the store's manifest
    "models": {"data", "tasks", "proxy", "engine", "evaluate", "viz", "cli"},
    "proxy": {"tasks", "engine", "evaluate", "viz", "cli"},
    "runs": set(ROOMS) - VOCABULARY - {"runs"},
    "engine": {"evaluate", "viz", "cli"},
    "evaluate": {"cli"},
    "viz": {"engine", "cli"},
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "mmlib" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ROOMS else None


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return found


def test_no_room_imports_a_room_downstream_of_it() -> None:
    broken = []
    for path in sorted((REPO_ROOT / "mmlib").rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        me = _room(module)
        if me is None:
            continue
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for line, target in _imports(path, package):
            other = _room(target)
            if other and other != me and other in NEVER.get(me, set()):
                broken.append(f"{rel}.py:{line} {me} -> {other} ({target})")
    assert not sorted(set(broken)), "imports against the flow:\n" + "\n".join(sorted(set(broken)))


def test_the_rules_catch_an_upstream_import(tmp_path: Path) -> None:
    bad = tmp_path / "mmlib" / "engine" / "x.py"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "def f():\n    from mmlib.evaluate.scoring import score_run\n    from ..viz import plots\n"
    )
    targets = [t for _, t in _imports(bad, "mmlib.engine")]
    assert "mmlib.evaluate.scoring" in targets and "mmlib.viz.plots" in targets
    assert {_room(t) for t in targets} >= {"evaluate", "viz"} and "evaluate" in NEVER["engine"]
