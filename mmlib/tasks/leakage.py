"""Keep downstream test studies out of pre-training.

A study that a downstream task tests on must not be seen in pre-training, or the fine-tuned
scores measure memory, not transfer. Pre-training takes the studies whose ``role`` is
``pretrain`` when the store records roles, but every study when it records none (what
``mmlib curate`` writes for a real dataset unless it is given ``--role``), and so, on a
role-less store with a task's studies, it would take that task's test split too.
:func:`check_pretrain_studies` refuses such a selection and says how to fix it;
:func:`task_test_studies` is the test split of every catalogue task found in a manifest, the
same split :func:`mmlib.engine.finetune.finetune_split` tests on (it does not depend on the
fine-tuning seed).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from mmlib.tasks.catalogue import TASKS, task_rows, task_splits


def task_test_studies(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """The test split of every catalogue task that has at least two studies in the manifest.

    Args:
        manifest: a store's manifest (``study``, ``task``, ``split``, ``attrs`` columns).

    Returns:
        ``{task name: sorted test study ids}`` (tasks absent from the manifest are left out).
    """
    out: dict[str, list[str]] = {}
    if "task" not in manifest.columns:
        return out
    for name, spec in TASKS.items():
        try:
            rows = task_rows(manifest, spec)
        except ValueError:  # the task has no study here
            continue
        if len(rows) >= 2:
            out[name] = task_splits(spec, rows)["test"]
    return out


def check_pretrain_studies(
    studies: Iterable[str], manifest: pd.DataFrame, where: str = "pre-training"
) -> None:
    """Refuse a pre-training selection that holds a downstream task's test study.

    Args:
        studies: the study ids pre-training would sample.
        manifest: the store's manifest.
        where: what is checked, quoted in the error. Defaults to "pre-training".

    Raises:
        ValueError: When a selected study is in a task's test split; the message names the
            task and the studies, and the fixes (roles, or ``data.studies``).
    """
    chosen = set(studies)
    leaks = {
        task: [s for s in test if s in chosen] for task, test in task_test_studies(manifest).items()
    }
    leaks = {task: found for task, found in leaks.items() if found}
    if not leaks:
        return
    n = sum(len(v) for v in leaks.values())
    detail = "; ".join(
        f"{task}: {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}" for task, v in leaks.items()
    )
    raise ValueError(
        f"{where} would sample {n} studies of downstream test splits ({detail}); a model "
        "pre-trained on them is not tested on unseen studies. Give the store roles: curate the "
        "pre-training sources with `mmlib curate ... --role pretrain` and the downstream ones "
        "with `--role downstream` (pre-training then samples only role 'pretrain'), or choose "
        "the pre-training studies with data.studies (a split name, a filter or a list)"
    )
