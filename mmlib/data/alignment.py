"""How well curation places a study in template space, measured against the simulator's truth.

The embedded cohort is drawn in ICBM 2009a (MNI) millimetres: each subject's pull-back
``W(x)`` (:func:`mmlib.data.phantom.subject.pull_back`: inverse head pose, smooth displacement,
atrophy, mass effect) sends a world point to the template point whose anatomy it shows. For a
study curated with ``register`` ``none``, ``rigid`` or ``affine`` (:mod:`mmlib.data.register`)
its estimated map to template mm is:

* ``none``: ``x - center_world + template_center()`` (head-centred by translation only: the
  template frame of an unregistered store, placed at the ICBM brain centre);
* ``rigid`` / ``affine``: the manifest row's ``transform``.

The alignment error of a point is ``|estimate(x) - W(x)|`` in mm, over points spread through
the brain (every 4th voxel of the ICBM brain, carried to the subject's world by its pose). The
smooth displacement (1.5 mm std) and atrophy are not affine, so even a perfect affine
registration keeps an error of that order.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mmlib.data import register as reg
from mmlib.data.curate import curate_study
from mmlib.data.layouts import Study, discover
from mmlib.data.phantom.anatomy import load_anatomy
from mmlib.data.phantom.cohort import CohortSpec, SourceSpec, study_id, true_subject
from mmlib.data.phantom.subject import Subject, pull_back

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Every n-th voxel (per axis) of the 1 mm ICBM brain used as measurement points.
POINT_STEP = 4


def brain_points(step: int = POINT_STEP) -> np.ndarray:
    """MNI mm (N, 3) of every ``step``-th voxel of the ICBM 2009a brain."""
    data, affine = reg._icbm_1mm()
    idx = np.argwhere(data[::step, ::step, ::step] > 0) * step
    return idx @ affine[:3, :3].T + affine[:3, 3]


def truth_points(subject: Subject, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """World points of a subject's brain and the template mm each of them truly shows.

    Returns:
        ``(x (N, 3) world mm, w (N, 3) template mm)``.
    """
    u = brain_points()
    x = (u @ subject.pose[:3, :3].T + subject.pose[:3, 3]).astype(np.float32)
    _, w = pull_back(subject, load_anatomy(factor), x)
    return x.astype(np.float64), w.astype(np.float64)


def estimated_map(row: dict) -> np.ndarray:
    """A curated row's map from native world mm to template (MNI) mm (4, 4)."""
    if row.get("register", "none") == "none":
        out = np.eye(4)
        out[:3, 3] = reg.template_center() - np.asarray(row["center_world"], np.float64)
        return out
    return np.asarray(row["transform"], np.float64)


def point_errors(row: dict, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Alignment error (mm) of each point: ``|estimated_map(row)(x) - w|`` (N,)."""
    t = estimated_map(row)
    return np.linalg.norm(x @ t[:3, :3].T + t[:3, 3] - w, axis=1)


def _study_rows(
    st: Study,
    src: SourceSpec,
    index: int,
    seed: int,
    factor: int,
    spacings: Sequence[float],
    modes: Sequence[str],
) -> list[dict[str, Any]]:
    """The :func:`alignment_errors` rows of one study (module level: run in worker processes)."""
    from mmlib.data.phantom import writers

    x, w = truth_points(true_subject(src, index, seed, factor), factor)
    rows = []
    for spacing in spacings:
        for mode in modes:
            t0 = time.perf_counter()
            cur = curate_study(st, spacing, register=mode)
            seconds = time.perf_counter() - t0
            err = point_errors(cur.row, x, w)
            rows.append(
                {
                    "study": st.study,
                    "source": src.name,
                    "skull_stripped": bool(writers.SKULL_STRIPPED[src.writer]),
                    "mode": mode,
                    "spacing": float(spacing),
                    "error_mm": float(err.mean()),
                    "error_p95_mm": float(np.percentile(err, 95)),
                    "seconds": seconds,
                }
            )
    return rows


def alignment_errors(
    cohort: str | Path,
    spec: CohortSpec,
    *,
    seed: int = 0,
    modes: Sequence[str] = reg.REGISTER_MODES,
    spacings: Sequence[float] = (2.0,),
    sources: Sequence[str] | None = None,
    per_source: int | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Curate studies of a simulated cohort under each registration mode and measure them.

    Args:
        cohort: the cohort root (written by :func:`mmlib.data.phantom.make_cohort`).
        spec: the spec it was written with (for the truth).
        seed: the seed it was written with. Defaults to 0.
        modes: registration modes. Defaults to all of :data:`REGISTER_MODES`.
        spacings: curation spacings (mm). Defaults to (2.0,).
        sources: source names to measure. Defaults to None (all).
        per_source: at most this many studies per source. Defaults to None (all).
        workers: processes, one study each at a time (registration runs on one thread, so
            two workers fill two cores; ``seconds`` is then measured with the other core
            busy). Defaults to 1.

    Returns:
        One row per study, mode and spacing, in study order: ``study, source, skull_stripped,
        mode, spacing, error_mm`` (mean over the brain points), ``error_p95_mm``, ``seconds``
        (curation of the study, registration included).
    """
    by_name = {s.name: s for s in spec.sources}
    ids = {study_id(s, i): (s, i) for s in spec.sources for i in range(1, s.n_subjects + 1)}
    counts: dict[str, int] = {}
    jobs = []
    for st in sorted(discover(cohort), key=lambda s: s.study):
        if st.study not in ids or (sources is not None and st.source not in sources):
            continue
        src, index = ids[st.study]
        if by_name.get(st.source) is not src:
            continue
        if per_source is not None and counts.get(src.name, 0) >= per_source:
            continue
        counts[src.name] = counts.get(src.name, 0) + 1
        jobs.append((st, src, index, seed, spec.factor, tuple(spacings), tuple(modes)))
    if workers <= 1 or len(jobs) <= 1:
        per_study = [_study_rows(*job) for job in jobs]
    else:
        # spawn, as curation does: a forked child would inherit the parent's thread pools
        with ProcessPoolExecutor(
            min(workers, len(jobs)), mp_context=mp.get_context("spawn")
        ) as pool:
            per_study = list(pool.map(_study_rows, *zip(*jobs)))
    rows = [row for study_rows in per_study for row in study_rows]
    return pd.DataFrame(rows)


def plot_alignment(
    study: Study, spacing: float, modes: Sequence[str] = reg.REGISTER_MODES
) -> Figure:
    """Before/after figure: a study curated under each mode, shown in MNI space (the ICBM
    2009a grid at ``spacing``) with the template brain's outline in red.

    Rows are modes, columns the axial, coronal and sagittal planes through the template's
    brain centre; ``none`` places the study by its head centre only (translation).

    Returns:
        The matplotlib figure.
    """
    from matplotlib.figure import Figure

    from mmlib.data.curate import resample

    icbm, grid = reg.icbm_template(spacing)
    brain = icbm > 0.1
    centre = np.linalg.inv(grid) @ np.append(reg.template_center(), 1.0)
    ci, cj, ck = (int(round(c)) for c in centre[:3])
    fig = Figure(figsize=(9, 3 * len(modes)))
    axes = fig.subplots(len(modes), 3, squeeze=False)
    for r, mode in enumerate(modes):
        cur = curate_study(study, spacing, register=mode)
        mod = reg.moving_modality(list(cur.images))
        aff = estimated_map(cur.row) @ np.asarray(cur.row["affine"], np.float64)
        vol = resample(cur.images[mod], aff, icbm.shape, grid, order=1)
        planes = (
            (vol[:, :, ck], brain[:, :, ck]),
            (vol[:, cj, :], brain[:, cj, :]),
            (vol[ci, :, :], brain[ci, :, :]),
        )
        for c, (img, mask) in enumerate(planes):
            ax = axes[r, c]
            ax.imshow(img.T, origin="lower", cmap="gray", vmin=0, vmax=1)
            ax.contour(mask.T.astype(float), levels=[0.5], colors="r", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{mode} ({mod})")
    for c, name in enumerate(("axial", "coronal", "sagittal")):
        axes[0, c].set_title(name)
    fig.suptitle(f"{study.study}: in ICBM 2009a space; red: the template's brain")
    fig.tight_layout()
    return fig
