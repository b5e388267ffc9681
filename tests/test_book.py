"""The book builds from the smoke-executed notebooks and every page renders in headless Chromium.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright's driver with
``executable_path``: no browser is downloaded. Screenshots of every page are saved in the test's
temporary folder (the path is printed) for people to look at.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
from conftest import need_system

from mmlib.book import build_book, toc_files
from mmlib.notebooks import list_notebooks

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_toc_lists_every_notebook() -> None:
    listed = {Path(f).name for f in toc_files() if f.startswith("notebooks/")}
    present = {p.stem for p in list_notebooks()}
    assert present - listed == set(), f"add to _toc.yml: {sorted(present - listed)}"
    assert listed - present == set(), (
        f"_toc.yml lists missing notebooks: {sorted(listed - present)}"
    )


@pytest.fixture(scope="module")
def built_book(smoke_book, tmp_path_factory: pytest.TempPathFactory) -> Path:
    executed, results = smoke_book
    failed = [r.error.splitlines()[0] for r in results.values() if not r.ok]
    assert not failed, f"notebooks failed, the book cannot be built: {failed}"
    out = tmp_path_factory.mktemp("book")
    index = build_book(executed, out)
    return index.parent


@pytest.mark.slow
def test_book_pages_render_in_chromium(built_book: Path, tmp_path: Path) -> None:
    chromium = need_system(
        "chromium", "headless browser for the book test", "apt-get install chromium"
    )
    from playwright.sync_api import sync_playwright

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_book))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    pages = [f"{f}.html" for f in toc_files()]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"book screenshots in {shots}")
    problems: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for rel in pages:
                response = page.goto(f"{base}/{rel}", wait_until="load")
                if response is None or response.status != 200:
                    problems.append(f"{rel}: HTTP {response.status if response else 'no response'}")
                    continue
                page.wait_for_timeout(150)
                page.screenshot(path=str(shots / (rel.replace("/", "_") + ".png")), full_page=True)
                images = page.evaluate(
                    "Array.from(document.images)"
                    ".map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
                )
                problems += [
                    f"{rel}: image {src} did not load"
                    for src, done, width in images
                    if not done or width == 0
                ]
                errors = page.evaluate(
                    "Array.from(document.querySelectorAll("
                    "'.output.error, .output.traceback, .cell_output .traceback')).length"
                )
                text = (
                    page.inner_text("main")
                    if page.query_selector("main")
                    else page.inner_text("body")
                )
                if errors or "Traceback (most recent call last)" in text:
                    problems.append(f"{rel}: a cell output shows an error or traceback")
                nav = page.evaluate(
                    "Array.from(document.querySelectorAll('nav.bd-docs-nav a'))"
                    ".map(a => a.getAttribute('href'))"
                )
                # the current page links to itself as "#", so it counts as listed
                missing = [
                    p.stem
                    for p in list_notebooks()
                    if p.stem not in rel and not any(p.stem in (h or "") for h in nav)
                ]
                if missing:
                    problems.append(f"{rel}: navigation lacks {missing}")
            # The start page links to something visible.
            # index.html is Jupyter Book's redirect to the introduction: follow it.
            page.goto(f"{base}/index.html", wait_until="load")
            page.wait_for_url("**/book/intro.html", timeout=15_000)
            page.wait_for_load_state("load")
            assert "mmlib" in page.title()
            browser.close()
    finally:
        server.shutdown()
    assert not problems, "\n".join(problems)
    assert len(list(shots.glob("*.png"))) == len(pages)


@pytest.mark.slow
def test_executed_notebooks_have_no_error_outputs(smoke_book) -> None:
    executed, results = smoke_book
    for name, result in results.items():
        if not result.ok:
            continue
        nb = json.loads(result.executed.read_text())
        tracebacks = [
            o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"
        ]
        assert not tracebacks, f"{name} has error outputs"
