"""A linear baseline for the T1 classification tasks: logistic regression on regional tissue
fractions.

How detectable is a task's group difference without any network? Each curated T1 volume
(RAS, head-cropped, intensities scaled to [0, 1] by the store) is cut into a coarse grid of
boxes (3 × 3 × 3 by default); in each box the fractions of voxels in three intensity bands
(dark: CSF-like, middle: GM-like, bright: WM-like on T1) are the features. A standardised
logistic regression is fitted on the task's training studies and scored on its test studies,
the same split the networks use (:func:`mmlib.tasks.task_splits`). The features are crude
"regional volumes"; they see ventricle enlargement and cortical thinning, and they also see
site effects (contrast, grid), as real volumetric baselines do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mmlib.evaluate.classification import classification_scores
from mmlib.evaluate.stats import accuracy_auc_intervals
from mmlib.tasks import class_index, resolve_task, task_rows, task_splits

#: Intensity band edges on the store's [0, 1] scale: CSF-like, GM-like, WM-like on T1.
BANDS: tuple[float, ...] = (0.05, 0.35, 0.65, 1.0001)


def regional_fractions(
    volume: np.ndarray, boxes: tuple[int, int, int] = (3, 3, 3), bands: tuple[float, ...] = BANDS
) -> np.ndarray:
    """Fractions of each box's voxels in each intensity band.

    Args:
        volume: one curated volume ``(X, Y, Z)`` in [0, 1].
        boxes: boxes per axis. Defaults to (3, 3, 3).
        bands: band edges (``len(bands) - 1`` bands). Defaults to :data:`BANDS`.

    Returns:
        ``(prod(boxes) * (len(bands) - 1),)`` float64 features.

    Raises:
        ValueError: When the volume is not 3-D or smaller than the box grid.
    """
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3 or any(n < b for n, b in zip(v.shape, boxes)):
        raise ValueError(f"volume of shape {v.shape} cannot be cut into {boxes} boxes")
    edges = [np.linspace(0, n, b + 1).round().astype(int) for n, b in zip(v.shape, boxes)]
    out = []
    for i in range(boxes[0]):
        for j in range(boxes[1]):
            for k in range(boxes[2]):
                box = v[
                    edges[0][i] : edges[0][i + 1],
                    edges[1][j] : edges[1][j + 1],
                    edges[2][k] : edges[2][k + 1],
                ]
                counts, _ = np.histogram(box, bins=bands)
                out.append(counts / max(box.size, 1))
    return np.concatenate(out).astype(np.float64)


def volume_baseline(
    store: Any,
    task: str,
    modality: str = "t1",
    c: float = 1.0,
    n_boot: int = 2000,
    boxes: tuple[int, int, int] = (3, 3, 3),
) -> dict[str, Any]:
    """Logistic regression on regional tissue fractions of a task's studies.

    Args:
        store: a :class:`mmlib.data.store.Store`.
        task: the task name (or alias).
        modality: the volume the features are read from. Defaults to "t1".
        c: inverse L2 regularisation of the logistic regression. Defaults to 1.0.
        n_boot: bootstrap resamples of the test intervals. Defaults to 2000.
        boxes: boxes per axis of :func:`regional_fractions` ((1, 1, 1): whole-head tissue
            fractions, three features). Defaults to (3, 3, 3).

    Returns:
        ``task``, ``n_train``, ``n_test``, the scores of
        :func:`mmlib.evaluate.classification.classification_scores`, ``accuracy_ci``,
        ``auc_ci`` and ``predictions`` (a DataFrame: ``study``, ``target``, ``p_<class>``).

    Raises:
        ValueError: When the task has no training study of some class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    spec = resolve_task(task, store.manifest, store)
    rows = task_rows(store.manifest, spec).set_index("study", drop=False)
    splits = task_splits(spec, rows.reset_index(drop=True))

    def design(studies: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([regional_fractions(store.image(s, modality), boxes) for s in studies])
        y = np.array([class_index(spec, rows.loc[s]) for s in studies])  # type: ignore[arg-type]
        return x, y

    x_train, y_train = design(splits["train"] + splits["val"])
    x_test, y_test = design(splits["test"])
    if len(set(y_train.tolist())) < 2:
        raise ValueError(f"task {spec.name!r}: the training studies hold one class only")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    model.fit(x_train, y_train)
    prob = model.predict_proba(x_test)
    out: dict[str, Any] = {"task": spec.name, "boxes": list(boxes)}
    out.update({"n_train": len(y_train), "n_test": len(y_test)})
    out.update(classification_scores(y_test.tolist(), prob))
    ci = accuracy_auc_intervals(y_test, prob, n_boot=n_boot)
    out["accuracy_ci"], out["auc_ci"] = ci["accuracy"], ci["auc"]
    out["predictions"] = pd.DataFrame(
        {
            "study": splits["test"],
            "target": y_test,
            **{f"p_{name}": prob[:, j] for j, name in enumerate(spec.classes)},
        }
    )
    return out
