"""Run folders: the one owner of their format (see ARCHITECTURE.md, "Run folders").

The engine writes run folders through this room; evaluation, the viewers and the notebooks read
them through it. It imports no other mmlib room except the vocabulary and the configs.
"""

from __future__ import annotations

from mmlib.runs.checkpoints import (
    LATEST,
    TRAIN_STATE,
    checkpoint_at,
    checkpoint_folder,
    find_latest,
    fsync_dir,
    is_complete,
    latest_checkpoint,
    list_checkpoints,
    step_name,
    step_of,
    write_text_atomic,
)

__all__ = [
    "LATEST",
    "TRAIN_STATE",
    "checkpoint_at",
    "checkpoint_folder",
    "find_latest",
    "fsync_dir",
    "is_complete",
    "latest_checkpoint",
    "list_checkpoints",
    "step_name",
    "step_of",
    "write_text_atomic",
]
