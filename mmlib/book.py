"""Build the Jupyter Book (1.x) from the notebooks the runner executed.

The book never executes anything (``execute_notebooks: off``): :func:`build_book` stages the
book's sources (``_config.yml``, ``_toc.yml``, ``book/``) beside the executed notebooks and runs
``jupyter-book build`` with warnings as errors. The HTML lands in ``OUT/_build/html``.
The command line (``mmlib book``) is :mod:`mmlib.cli.book`.

Example::

    mmlib book --executed runs/notebooks-demo --out .
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mmlib.paths import REPO_ROOT


class BookError(RuntimeError):
    """The book could not be built; the message says why."""


def toc_files(toc: Path = REPO_ROOT / "_toc.yml") -> list[str]:
    """Every ``file:`` entry of a Jupyter Book table of contents, in order."""
    data = yaml.safe_load(toc.read_text())
    found: list[str] = [data["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in data.items() if k != "root"})
    return found


def _hide_parameters(src: Path, dst: Path) -> None:
    """Copy an executed notebook, hiding its parameter cells in the book (the chapter reports
    its scale itself), so that each page opens with its title."""
    nb = json.loads(src.read_text())
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    dst.write_text(json.dumps(nb, indent=1))


MATHJAX = "mathjax@3.2.2"


def _vendor_mathjax(stage_dir: Path) -> None:
    """Serve MathJax from the book itself, so that formulas render offline and on any host.

    The npm package is fetched once (``npm pack``; cached in mmlib's work folder). Without npm
    the book keeps Sphinx's default (MathJax from a CDN), which renders once online.
    """
    from mmlib.paths import work_root

    cache = work_root() / "vendor" / MATHJAX.replace("@", "-")
    if not (cache / "tex-mml-chtml.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            print("book: npm not found; MathJax will load from its CDN", file=sys.stderr)
            return
        import tarfile
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [npm, "pack", MATHJAX, "-q"], cwd=tmp, capture_output=True, text=True
            )
            tgz = next(Path(tmp).glob("mathjax-*.tgz"), None)
            if proc.returncode != 0 or tgz is None:
                print(
                    f"book: npm pack {MATHJAX} failed; MathJax will load from its CDN",
                    file=sys.stderr,
                )
                return
            with tarfile.open(tgz) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith("package/es5/")]
                tar.extractall(tmp, members=members, filter="data")
            partial = cache.with_name(cache.name + ".tmp")
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(Path(tmp) / "package" / "es5", partial)
            partial.replace(cache)
    # An extra path, not _static: Jupyter Book adds every .js under _static to every page.
    shutil.copytree(cache, stage_dir / "_vendor" / "mathjax")
    config = yaml.safe_load((stage_dir / "_config.yml").read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["mathjax_path"] = "../mathjax/tex-mml-chtml.js"  # relative to _static
    sphinx_config["html_extra_path"] = ["_vendor"]
    (stage_dir / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def stage(executed: Path, stage_dir: Path, source: Path = REPO_ROOT) -> Path:
    """Copy the book's sources and the executed notebooks into ``stage_dir``.

    Raises:
        BookError: When a notebook listed in ``_toc.yml`` was not executed.
    """
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(source / name, stage_dir / name)
    shutil.copytree(source / "book", stage_dir / "book")
    (stage_dir / "notebooks").mkdir()
    missing = []
    for entry in toc_files(source / "_toc.yml"):
        if not entry.startswith("notebooks/"):
            continue
        nb = executed / f"{Path(entry).name}.ipynb"
        if not nb.exists():
            missing.append(Path(entry).name)
            continue
        _hide_parameters(nb, stage_dir / "notebooks" / nb.name)
        outputs = executed / Path(entry).name
        if outputs.is_dir():  # figures the notebook saved, for pages that link them
            shutil.copytree(outputs, stage_dir / "notebooks" / Path(entry).name, dirs_exist_ok=True)
    if missing:
        raise BookError(
            f"{executed}: no executed notebook for {', '.join(missing)}; run "
            f"`mmlib notebooks run --out {executed}` first"
        )
    _vendor_mathjax(stage_dir)
    figures = stage_dir / "book" / "figures"
    figures.mkdir(exist_ok=True)
    from mmlib.overview import method_diagram

    method_diagram().savefig(figures / "method.png", dpi=120)
    return stage_dir


def build_book(executed: Path, out: Path = REPO_ROOT, strict: bool = True) -> Path:
    """Stage and build the HTML book.

    Args:
        executed: the folder written by ``mmlib notebooks run``.
        out: the build goes to ``out/_build/html``. Defaults to the repository root.
        strict: treat Sphinx warnings as errors. Defaults to True.

    Returns:
        The path of ``index.html``.

    Raises:
        BookError: When staging or the Sphinx build fails (its log is in the message).
    """
    stage_dir = stage(Path(executed), Path(out) / "_build" / "src")
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(stage_dir), "--path-output", str(out), "--keep-going"]
    if strict:
        cmd.append("-W")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BookError(
            f"jupyter-book build failed ({proc.returncode}):\n"
            f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
        )
    index = Path(out) / "_build" / "html" / "index.html"
    if not index.exists():
        raise BookError(f"jupyter-book reported success but {index} is missing")
    return index


if __name__ == "__main__":  # the command moved: say where, rather than exit 0 having built nothing
    sys.exit("python -m mmlib.book is now `mmlib book` (same flags); see `mmlib book --help`")
