"""Classification metrics (scikit-learn): accuracy, balanced accuracy, AUC, macro F1.

AUC and balanced accuracy need at least two classes in the ground truth; with a single class
present they are reported as NaN (never a made-up 0.5). For more than two classes AUC is
one-vs-rest, macro.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from mmlib.evaluate.stats import accuracy_auc_intervals


def classification_scores(y_true: Sequence[int], prob: np.ndarray) -> dict[str, float]:
    """Scores of class probabilities against true classes.

    Args:
        y_true: true class index per sample, ``(N,)``.
        prob: class probabilities ``(N, K)`` (rows summing to 1).

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``auc``, ``f1`` (macro) and ``n``.

    Raises:
        ValueError: When shapes disagree or there are no samples.
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(prob, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(f"prob {p.shape} should be (N, K) with N = len(y_true) = {y.shape[0]} > 0")
    k = p.shape[1]
    pred = p.argmax(1)
    labels = list(range(k))
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred))
        if len(set(y)) > 1
        else float("nan"),
        "f1": float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "n": int(y.shape[0]),
    }
    if len(set(y.tolist())) < 2:
        out["auc"] = float("nan")
    elif k == 2:
        out["auc"] = float(roc_auc_score(y, p[:, 1]))
    else:
        out["auc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels))
    return out


def scores_with_intervals(
    frame: Any, classes: Sequence[str], n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Scores and intervals (:func:`mmlib.evaluate.stats.accuracy_auc_intervals`: Wilson for
    accuracy, DeLong for a binary AUC) of a classification run's ``test_scores.csv``.

    Args:
        frame: the run's per-study table (``target`` and ``p_<class>`` columns).
        classes: the task's classes in index order.
        n_boot: bootstrap replicates of a K > 2 AUC. Defaults to 2000.
        seed: that bootstrap's seed. Defaults to 0.

    Returns:
        :func:`classification_scores` plus ``accuracy_ci`` and ``auc_ci`` (lo, hi).
    """
    y = frame["target"].to_numpy(int)
    prob = frame[[f"p_{c}" for c in classes]].to_numpy(float)
    out: dict[str, Any] = classification_scores(y, prob)
    ci = accuracy_auc_intervals(y, prob, n_boot=n_boot, seed=seed)
    out["accuracy_ci"], out["auc_ci"] = ci["accuracy"], ci["auc"]
    return out
