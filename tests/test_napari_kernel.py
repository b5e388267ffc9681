"""napari from a notebook: the cells a user runs, in a real Jupyter kernel (the venv's python3).

The kernel is started with jupyter_client, as JupyterLab starts it; it runs ``%gui qt``, opens a
labelled study of the smoke store with the ``mmlib.viz.napari`` helpers and saves a screenshot of
the viewer, which must not be blank, must be at the slices through the label and must show the
label's colours. Needs an X display (pytest-xvfb's, or a private Xvfb that
:func:`mmlib.viz.display.ensure_display` starts inside the kernel): skipped where Xvfb is missing,
failed instead when ``MMLIB_CI`` is set.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmlib.viz.display import has_display, no_display_reason, xvfb_available

CAN_DISPLAY = has_display() or xvfb_available()
if not CAN_DISPLAY and os.environ.get("MMLIB_CI"):
    raise RuntimeError(f"GUI tests cannot run in CI: {no_display_reason()}")
pytestmark = [
    pytest.mark.gui,
    pytest.mark.slow,
    pytest.mark.skipif(not CAN_DISPLAY, reason=no_display_reason() or "no display"),
]

BLANK = 5.0  # RGB std below which a screenshot counts as blank (as in test_viz_napari)
PAUSE = 1.0  # seconds between cells once the Qt loop runs, as a person leaves them: a request sent
# while ipykernel (re-)enters its Qt loop can go unnoticed and the cell hangs (ipykernel issue 559;
# here 1 run in 5 back to back, 0 in 12 with the pause)


def _run(client: Any, code: str, timeout: float = 120.0, pause: float = 0.0) -> str:
    """Execute one cell, then wait ``pause`` s; its stdout (and results) as text.

    Fails on an error."""
    import queue

    msg_id = client.execute(code)
    text: list[str] = []
    while True:
        try:
            msg = client.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            pytest.fail(
                f"cell still running after {timeout:.0f} s:\n{code}\noutput so far: {''.join(text)}"
            )
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            text.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            pytest.fail(f"cell failed:\n{code}\n" + "\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            time.sleep(pause)
            return "".join(text)


def _study_missed_by_the_middle_slice(store: Path) -> str:
    """A labelled study whose middle axial slice shows no label (else the first labelled one)."""
    from mmlib.data.store import Store

    s = Store(store)
    labelled = [st for st in s.studies() if s.row(st).get("label")]
    assert labelled, f"{store} has no labelled study"
    for st in labelled:
        label = np.asarray(s.label(st))
        if not label[:, :, label.shape[2] // 2].any():
            return st
    return labelled[0]


def test_napari_opens_a_study_from_a_notebook_kernel(tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    from mmlib.data import ensure_store

    store = ensure_store("smoke")
    study = _study_missed_by_the_middle_slice(store)
    shot = tmp_path / "napari_from_kernel.png"
    print(f"napari screenshot in {shot}")
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}  # as a user's kernel
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env)
    try:
        prefix = _run(client, "import sys; print(sys.prefix)").strip()
        assert Path(prefix).resolve() == Path(sys.prefix).resolve(), f"the kernel runs {prefix}"
        _run(client, "%gui qt", pause=PAUSE)
        _run(
            client,
            "from mmlib.viz import napari as mv\n"
            "viewer = mv.new_viewer(size=(1000, 700))\n"
            f"layers = mv.open_study({f'{store}::{study}'!r}, viewer)",
            pause=PAUSE,
        )
        out = _run(
            client,
            f"image = mv.screenshot(viewer, {str(shot)!r})\n"
            "seg = viewer.layers[-1]\n"
            "k = int(round(seg.world_to_data(viewer.dims.point)[2]))\n"
            "print(image.shape, mv.pixel_std(image), type(seg).__name__, seg.visible,"
            " int((seg.data[:, :, k] != 0).sum()), k)",
            pause=PAUSE,
        )
        _run(client, "viewer.close()")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    _shape, rest = out.rsplit(")", 1)[0] + ")", out.rsplit(")", 1)[1].split()
    std, kind, visible, on_slice = float(rest[0]), rest[1], rest[2], int(rest[3])
    assert kind == "Labels" and visible == "True"
    assert on_slice > 0, (
        f"{study}: the viewer opened at axial slice {rest[4]}, which shows no label"
    )
    assert std > BLANK, f"blank napari screenshot (RGB std {std:.2f}): {shot}"
    import matplotlib.image

    rgb = (matplotlib.image.imread(str(shot))[..., :3] * 255).astype(np.int16)
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)  # the images are grey; the label is in colour
    assert int((chroma > 60).sum()) > 50, f"no label colours in the screenshot: {shot}"
