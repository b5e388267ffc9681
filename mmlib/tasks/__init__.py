"""mmlib.tasks: the downstream tasks, their label regions, and the book's experiment plan.

A room of its own, read by the fine-tuning engine, evaluation and the notebooks; it imports
only the vocabulary (:mod:`mmlib.modalities`) and the scales.

- :mod:`mmlib.tasks.catalogue`: :class:`TaskSpec`, :data:`TASKS` (the tasks of the embedded
  cohort), finding a task's studies in a manifest, splits and nested label subsets.
- :mod:`mmlib.tasks.regions`: BraTS TC/WT/ET under both label conventions, tissue classes
  (:class:`RegionSpec`).
- :mod:`mmlib.tasks.leakage`: the test splits of the tasks in a store, and the check that keeps
  them out of pre-training.
- :mod:`mmlib.tasks.plan`: the grid of fine-tuning runs the book's notebooks 07-10 and 12 run.
"""

from __future__ import annotations

from mmlib.tasks.catalogue import (
    TASKS,
    TaskSpec,
    class_index,
    get_task,
    label_subset,
    resolve_task,
    split_studies,
    task_rows,
    task_splits,
)
from mmlib.tasks.leakage import check_pretrain_studies, task_test_studies
from mmlib.tasks.plan import ABLATIONS, PLAN, plan
from mmlib.tasks.regions import CONVENTIONS, RegionSpec, brats_regions, detect_convention

__all__ = [
    "ABLATIONS",
    "CONVENTIONS",
    "PLAN",
    "TASKS",
    "RegionSpec",
    "TaskSpec",
    "brats_regions",
    "check_pretrain_studies",
    "class_index",
    "detect_convention",
    "get_task",
    "label_subset",
    "plan",
    "resolve_task",
    "split_studies",
    "task_rows",
    "task_splits",
    "task_test_studies",
]
