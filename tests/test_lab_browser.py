"""JupyterLab as a person meets it, in headless Chromium: a click on a chapter opens a notebook.

JupyterLab (the venv's) serves the repository on loopback with a token, as ``make lab`` does;
Playwright drives Debian's Chromium (as the book test, no browser download) through the file
browser: a click on ``notebooks/03_cross_modal_reconstruction.py`` must open a notebook panel
(rendered markdown, code cells), the parameters cell is edited to the smoke scale, the cells run
up to the ipywidgets explorer, whose controls must render and redraw the figure when a slider
moves; the kernel must be the venv's Python; a module of ``mmlib/`` must still open as text; and
saving an untouched chapter must leave ``git diff`` empty. Autosave is off (test-local settings)
and the notebook's outputs go to the test's folder, so nothing in the repository is changed.
Screenshots are saved in the test's temporary folder (the path is printed).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need_system
from test_book import CHROMIUM_ARGS

from mmlib.paths import REPO_ROOT

CHAPTER = "03_cross_modal_reconstruction.py"
SAVED = "00_overview.py"  # opened and saved untouched: git diff must stay empty
MODULE = ("mmlib", "paths.py")  # an ordinary module: must open in the text editor
TOKEN = "mmlib-lab-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_settings(folder: Path) -> None:
    """Test-local user settings: no autosave (the test edits a chapter it must not save),
    no news."""
    for plugin, text in {
        "docmanager-extension/plugin": '{"autosave": false}',
        "apputils-extension/notification": '{"fetchNews": "false", "checkForUpdates": false}',
    }.items():
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    """JupyterLab on the repository at a free loopback port; yields the base URL."""
    exe = Path(sys.executable).with_name("jupyter-lab")
    _write_settings(tmp_path / "settings")
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    env.pop("MPLBACKEND", None)  # conftest's Agg; a user's kernel has matplotlib's inline default
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [
            str(exe),
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={_free_port()}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={REPO_ROOT}",
            "--allow-root",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=env,
    )
    try:
        deadline = time.time() + 120
        while True:
            text = (tmp_path / "lab.log").read_text()
            urls = [w for w in text.split() if w.startswith("http://127.0.0.1:") and "/lab" in w]
            if urls:
                base = urls[0].split("/lab")[0]
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                    break
                except OSError:
                    pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"jupyter lab did not start:\n{text[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _open_in_file_browser(page, *names: str) -> None:  # type: ignore[no-untyped-def]
    """Double-click through the file browser from the root: folders, then the file."""
    page.locator(".jp-FileBrowser .jp-BreadCrumbs-home").click()
    for name in names:
        # the exact name: "notebooks" must not match mmlib/notebooks.py while the listing changes
        text = page.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(name)}$"))
        page.locator(".jp-DirListing-item", has=text).dblclick()


@pytest.mark.slow
def test_click_opens_chapter_as_notebook_and_widgets_run(lab: str, tmp_path: Path) -> None:
    chromium = need_system(
        "chromium", "headless browser for the JupyterLab test", "apt-get install chromium"
    )
    from playwright.sync_api import expect, sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"JupyterLab screenshots in {shots}")
    saved = REPO_ROOT / "notebooks" / SAVED
    twin = saved.with_suffix(".ipynb")
    twin_before = twin.stat().st_mtime if twin.exists() else None
    text_before = saved.read_bytes()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{lab}/lab?token={TOKEN}")
            page.locator(".jp-DirListing-item").first.wait_for()

            # A click on the chapter: a notebook panel with rendered markdown and code cells.
            _open_in_file_browser(page, "notebooks", CHAPTER)
            panel = page.locator(".jp-NotebookPanel:visible")
            panel.wait_for()
            expect(panel.locator(".jp-MarkdownCell .jp-RenderedMarkdown h1")).to_contain_text(
                "Cross-modal"
            )
            cells = panel.locator(".jp-Notebook .jp-Cell")
            # the notebook renders its cells progressively: wait for the fifth, do not count early
            panel.locator(".jp-CodeCell").nth(4).wait_for(state="attached")
            assert panel.locator(".jp-CodeCell").count() >= 5
            assert page.locator(".jp-FileEditor:visible").count() == 0
            page.screenshot(path=str(shots / "notebook.png"))

            # The parameters cell at the smoke scale, outputs in the test's folder.
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
                timeout=120_000
            )
            editor = cells.nth(0).locator(".cm-content")
            editor.click()
            page.keyboard.press("Control+a")
            params = editor.inner_text()
            assert 'scale = "demo"' in params
            out_dir = tmp_path / "out03"
            page.keyboard.insert_text(
                params.replace('scale = "demo"', 'scale = "smoke"').replace(
                    "runs/book/03_cross_modal_reconstruction", str(out_dir)
                )
            )
            expect(cells.nth(0)).to_contain_text('scale = "smoke"')

            # Run the cells up to the explorer (as a person: Shift+Enter, cell after cell).
            sources = [cells.nth(i).inner_text() for i in range(cells.count())]
            at = next(i for i, s in enumerate(sources) if "explore.explorer(" in s)
            for _ in range(at + 1):
                page.keyboard.press("Shift+Enter")
            explorer = cells.nth(at)
            image = explorer.locator(".jupyter-widgets img")
            image.wait_for(timeout=600_000)  # first use builds the smoke store (about a minute)
            expect(explorer.locator(".widget-dropdown select")).to_have_count(2)
            slider = explorer.locator(".widget-slider", has_text="slice")
            expect(slider).to_have_count(1)
            assert not panel.locator(".jp-OutputArea-output[data-mime-type*='error']").count()
            assert (out_dir / "figures" / "modalities.png").is_file()
            explorer.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "widget.png"))
            before_src, before_png = (
                image.get_attribute("src"),
                image.screenshot(path=str(shots / "figure_before.png")),
            )
            readout = slider.locator(".widget-readout")
            start = readout.inner_text()

            # Move the slice slider with the mouse: the figure must be redrawn.
            handle = slider.locator(".noUi-handle")
            box = handle.bounding_box()
            assert box is not None
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x - 40, y, steps=8)
            page.mouse.up()
            expect(readout).not_to_have_text(start)
            page.wait_for_function(
                "([el, src]) => el.getAttribute('src') !== src",
                arg=[image.element_handle(), before_src],
            )
            page.wait_for_timeout(300)  # the new PNG decodes
            after_png = image.screenshot(path=str(shots / "figure_after.png"))
            assert after_png != before_png, "moving the slice slider did not change the figure"
            page.screenshot(path=str(shots / "widget_moved.png"))

            # The kernel is the venv's Python (a new cell below the explorer).
            page.keyboard.press("Escape")
            explorer.locator(".jp-InputArea").click()
            page.keyboard.press("Escape")
            page.keyboard.press("b")
            page.keyboard.press("Enter")
            page.keyboard.insert_text("import sys, mmlib; print(sys.prefix); print(mmlib.__file__)")
            page.keyboard.press("Shift+Enter")
            probe = cells.nth(at + 1).locator(".jp-OutputArea-output")
            expect(probe).to_contain_text("mmlib", timeout=60_000)
            prefix, module = probe.inner_text().split()[:2]
            assert Path(prefix).resolve() == Path(sys.prefix).resolve(), (
                f"kernel runs {prefix}, not {sys.prefix}"
            )
            assert Path(sys.prefix) != Path(sys.base_prefix), (
                "the tests are not running in a virtual environment"
            )
            assert Path(module).resolve().parent == (REPO_ROOT / "mmlib").resolve()

            # An ordinary module of the package opens as text, in the editor.
            _open_in_file_browser(page, *MODULE)
            text_editor = page.locator(".jp-FileEditor:visible")
            text_editor.wait_for()
            expect(text_editor).to_contain_text("REPO_ROOT")
            assert page.locator(".jp-NotebookPanel:visible").count() == 0
            page.screenshot(path=str(shots / "module_in_editor.png"))

            # Saving an untouched chapter writes the .py unchanged and the git-ignored .ipynb twin.
            _open_in_file_browser(page, "notebooks", SAVED)
            saved_panel = page.locator(".jp-NotebookPanel:visible")
            saved_panel.wait_for()
            saved_panel.locator(".jp-Cell").first.click()
            page.keyboard.press("Escape")
            page.keyboard.press("Control+s")
            deadline = time.time() + 60
            while (
                not (twin.exists() and twin.stat().st_mtime != twin_before)
                and time.time() < deadline
            ):
                time.sleep(0.2)
        except Exception:
            page.screenshot(path=str(shots / "at_failure.png"))
            raise
        finally:
            browser.close()
    try:
        assert twin.exists() and twin.stat().st_mtime != twin_before, (
            f"saving did not write {twin.name}"
        )
        assert saved.read_bytes() == text_before, f"saving the untouched {SAVED} changed it"
        diff = subprocess.run(
            ["git", "status", "--porcelain", "--", "notebooks"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert diff == "", f"git sees changes after the save: {diff}"
    finally:
        if twin_before is None and twin.exists():
            twin.unlink()  # the twin did not exist before this test
