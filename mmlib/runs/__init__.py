"""Run folders: the one owner of their format (see ARCHITECTURE.md, "Run folders").

The engine writes run folders through this room; evaluation, the viewers and the notebooks read
them through it. It imports no other mmlib room except the vocabulary and the configs.

- :mod:`~mmlib.runs.checkpoints`: ``checkpoints/step_XXXXXXX/`` and the latest *complete* one;
- :mod:`~mmlib.runs.metrics`: ``metrics.csv``;
- :mod:`~mmlib.runs.samples`: ``samples/step_XXXXXXX.npz`` and the reconstruction error;
- :mod:`~mmlib.runs.results`: ``results.json``, ``DONE`` and the table of fine-tuning runs;
- :mod:`~mmlib.runs.folder`: the folder as a whole (:class:`RunFolder`, :func:`find_runs`).
"""

from __future__ import annotations

from mmlib.runs.checkpoints import (
    LATEST,
    STEP_RE,
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
from mmlib.runs.folder import (
    CHECKPOINTS,
    CONFIG,
    IDENTITY,
    RunFolder,
    find_runs,
    is_done,
    is_run_folder,
    load_run,
    mark_done,
    read_config,
    read_identity,
    read_results,
    write_config,
)
from mmlib.runs.metrics import METRICS, MetricsCSV, read_metrics
from mmlib.runs.results import (
    DONE,
    KEYS,
    RESULTS,
    collect_runs,
    json_safe,
    read_json,
    write_json,
    write_results,
)
from mmlib.runs.samples import (
    SAMPLE_KEYS,
    SAMPLES,
    Samples,
    list_samples,
    load_samples,
    sample_errors,
    samples_file,
    samples_from_views,
    save_samples,
    write_samples,
)

__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "DONE",
    "IDENTITY",
    "KEYS",
    "LATEST",
    "METRICS",
    "RESULTS",
    "SAMPLES",
    "SAMPLE_KEYS",
    "STEP_RE",
    "TRAIN_STATE",
    "MetricsCSV",
    "RunFolder",
    "Samples",
    "checkpoint_at",
    "checkpoint_folder",
    "collect_runs",
    "find_latest",
    "find_runs",
    "fsync_dir",
    "is_complete",
    "is_done",
    "is_run_folder",
    "json_safe",
    "latest_checkpoint",
    "list_checkpoints",
    "list_samples",
    "load_run",
    "load_samples",
    "mark_done",
    "read_config",
    "read_identity",
    "read_json",
    "read_metrics",
    "read_results",
    "sample_errors",
    "samples_file",
    "samples_from_views",
    "save_samples",
    "step_name",
    "step_of",
    "write_config",
    "write_json",
    "write_results",
    "write_samples",
    "write_text_atomic",
]
