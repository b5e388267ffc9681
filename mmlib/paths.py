"""Where mmlib keeps shared artefacts (cohorts, stores, pre-training runs) between notebooks.

The book and the tests share one work folder per scale so that a finished cohort, store or run
is reused instead of recomputed. It is ``$MMLIB_WORK`` when set, else ``.mmlib/`` at the
repository root (git-ignored), else ``~/.cache/mmlib`` for an installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmlib.configs.scales import check_scale

REPO_ROOT = Path(__file__).resolve().parent.parent


def work_root() -> Path:
    """The root of mmlib's shared work folder (see module docstring)."""
    env = os.environ.get("MMLIB_WORK")
    if env:
        return Path(env).expanduser().resolve()
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".mmlib"
    return Path.home() / ".cache" / "mmlib"


def work_dir(scale: str) -> Path:
    """The shared work folder of one scale, e.g. ``.mmlib/demo``."""
    return work_root() / check_scale(scale)
