"""Finding an X display for napari: the session's own, or a private Xvfb started on demand.

napari draws with OpenGL through Qt's ``xcb`` platform; Qt's ``offscreen`` platform has no
OpenGL and a hidden viewer's canvas screenshots come back black, so figures made by napari need
a real (possibly virtual) display and a *shown* viewer. Nothing here imports Qt.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys

_XVFB: subprocess.Popen[bytes] | None = None


def has_display() -> bool:
    """Whether a display is set for this process (``DISPLAY``/``WAYLAND_DISPLAY``; always on
    macOS/Windows)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def xvfb_available() -> bool:
    """Whether the ``Xvfb`` binary is on the PATH."""
    return shutil.which("Xvfb") is not None


def start_xvfb(size: tuple[int, int] = (1600, 1200)) -> str:
    """Start a private Xvfb server, point ``DISPLAY`` at it and stop it when Python exits
    (or, on Linux, when this process is killed).

    Args:
        size: screen width and height in pixels. Defaults to (1600, 1200).

    Returns:
        The display name, e.g. ``":99"``.

    Raises:
        RuntimeError: When ``Xvfb`` is not installed or does not start.
    """
    global _XVFB
    binary = shutil.which("Xvfb")
    if binary is None:
        raise RuntimeError(
            "Xvfb is not installed; install it (apt-get install -y xvfb xauth) or run with "
            "a display"
        )
    read, write = os.pipe()
    proc = subprocess.Popen(
        [
            binary,
            "-displayfd",
            str(write),
            "-screen",
            "0",
            f"{size[0]}x{size[1]}x24",
            "-nolisten",
            "tcp",
        ],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        raise RuntimeError("Xvfb did not start (it reported no display number)")
    _XVFB = proc
    atexit.register(stop_xvfb)
    os.environ["DISPLAY"] = f":{number}"
    return os.environ["DISPLAY"]


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when its parent dies (a killed kernel runs no
    atexit)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_xvfb() -> None:
    """Stop the Xvfb server started by :func:`start_xvfb`, if any."""
    global _XVFB
    if _XVFB is not None and _XVFB.poll() is None:
        _XVFB.terminate()
        try:
            _XVFB.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _XVFB.kill()
    _XVFB = None


def ensure_display(start: bool = True) -> bool:
    """Make sure napari can open a window: use the current display or start Xvfb.

    Also selects Qt's ``xcb`` platform on Linux when ``QT_QPA_PLATFORM`` is unset or
    ``offscreen`` (which has no OpenGL).

    Args:
        start: start a private Xvfb when there is no display. Defaults to True.

    Returns:
        True when a display is available, False when there is none and none could be started.
    """
    if not has_display():
        if not (start and xvfb_available()):
            return False
        try:
            start_xvfb()
        except RuntimeError:
            return False
    if (
        sys.platform.startswith("linux")
        and os.environ.get("QT_QPA_PLATFORM", "offscreen") == "offscreen"
    ):
        if os.environ.get("DISPLAY"):
            os.environ["QT_QPA_PLATFORM"] = "xcb"
    return True


def no_display_reason() -> str:
    """One line saying why no display can be had here (for skips and fallbacks)."""
    if has_display():
        return ""
    if not xvfb_available():
        return (
            "no display: DISPLAY is unset and Xvfb is not installed (apt-get install -y xvfb xauth)"
        )
    return "no display: DISPLAY is unset and Xvfb did not start"
