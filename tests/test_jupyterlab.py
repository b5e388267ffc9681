"""JupyterLab (from the venv) opens notebooks/*.py directly as notebooks via jupytext."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmlib.paths import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_lab_serves_py_notebook_with_parameters_tag(tmp_path: Path) -> None:
    port, token = _free_port(), "mmlib-test-token"
    exe = Path(sys.executable).with_name("jupyter-lab")
    proc = subprocess.Popen(
        [
            str(exe),
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={REPO_ROOT}",
            "--ServerApp.open_browser=False",
            "--allow-root",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={**__import__("os").environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")},
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}
    try:
        deadline = time.time() + 90
        while True:
            try:
                req = urllib.request.Request(f"{base}/api/status", headers=headers)
                urllib.request.urlopen(req, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"jupyter lab did not start: {out[-2000:]}")
                time.sleep(0.5)
        req = urllib.request.Request(
            f"{base}/api/contents/notebooks/00_overview.py?type=notebook&content=1", headers=headers
        )
        model = json.loads(urllib.request.urlopen(req, timeout=30).read())
        assert model["type"] == "notebook"
        cells = model["content"]["cells"]
        assert len(cells) > 5
        assert "parameters" in cells[0]["metadata"].get("tags", [])
        assert any(
            c["cell_type"] == "markdown" and "## Overview" in "".join(c["source"]) for c in cells
        )
        # The lab front-end itself is served (not only the REST API).
        page = urllib.request.urlopen(
            urllib.request.Request(f"{base}/lab", headers=headers), timeout=30
        ).read()
        assert b"JupyterLab" in page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
