"""Figures of the downstream chapters that are built from a store, a task and run folders.

The chapters call these; they hold no logic of their own (notebook 07: the task's regions and
qualitative segmentations by initialisation; notebook 10: what a template fill puts in place of
each modality).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from mmlib.data.labelled import Volumes
from mmlib.evaluate.reports import plot_segmentation
from mmlib.evaluate.scoring import load_network
from mmlib.proxy.missing import fill_missing
from mmlib.runs import read_results
from mmlib.tasks import TaskSpec, brats_regions, task_rows, task_splits
from mmlib.viz.plots import BookFigure


def study_with_labels(store: Any, studies: Iterable[str], values: Iterable[int]) -> str:
    """The first of ``studies`` whose label map holds any of ``values`` (else the first study).

    Args:
        store: a :class:`mmlib.data.store.Store`.
        studies: candidate study ids, in order.
        values: label values looked for (e.g. ``{3, 4}``: enhancing tumour in either convention).

    Raises:
        ValueError: When ``studies`` is empty.
    """
    studies = list(studies)
    if not studies:
        raise ValueError("study_with_labels: no studies to choose from")
    wanted = {int(v) for v in values}
    for study in studies:
        if wanted & set(np.unique(np.asarray(store.label(study))).tolist()):
            return study
    return studies[0]


def regions_figure(store: Any, spec: TaskSpec, study: str, image: str = "flair") -> Figure:
    """One axial slice of a study: an image, its label map and each region the task scores.

    The slice is the one with the most voxels of the second region (the tumour core for BraTS
    regions), the region whose rules differ between label conventions.

    Args:
        store: the store.
        spec: a resolved segmentation task with BraTS-like regions.
        study: the study id.
        image: the modality drawn in the first panel. Defaults to "flair".

    Raises:
        ValueError: When the task is not a segmentation task.
    """
    if spec.regions is None:
        raise ValueError(f"regions_figure: task {spec.name} is not a segmentation task")
    label = np.asarray(store.label(study))
    regions = np.asarray(brats_regions(label, spec.regions.convention))
    z = int(np.argmax(regions[min(1, len(regions) - 1)].sum((0, 1))))
    fig = BookFigure(figsize=(2.6 * (2 + len(regions)), 2.8))
    axes = fig.subplots(1, 2 + len(regions))
    axes[0].imshow(np.asarray(store.image(study, image))[:, :, z].T, cmap="gray", origin="lower")
    axes[0].set_title(image.upper() if image == "flair" else image)
    axes[1].imshow(label[:, :, z].T, origin="lower", cmap="viridis", vmin=0, vmax=4)
    axes[1].set_title("labels")
    for ax, name, region in zip(axes[2:], spec.regions.names, regions):
        ax.imshow(region[:, :, z].T, origin="lower", cmap="gray")
        ax.set_title(f"{name}: {int(region.sum())} voxels")
    for ax in axes:
        ax.axis("off")
    return fig


def runs_by_init(runs: Sequence[str | Path], seed: int) -> dict[str, Path]:
    """The run folders of one seed, keyed by initialisation (``results.json``'s ``init``)."""
    out: dict[str, Path] = {}
    for run in runs:
        res = read_results(run) or {}
        if res.get("seed") == seed:
            out[str(res["init"])] = Path(run)
    return out


def qualitative_figure(runs: Sequence[str | Path], seed: int) -> Figure:
    """Input, ground truth and prediction of one saved test study, a row per initialisation.

    Args:
        runs: scored fine-tuning run folders (with ``predictions/``).
        seed: the fine-tuning seed whose runs are shown (paired: same study, same crops).

    Raises:
        ValueError: When no run has that seed.
    """
    chosen = runs_by_init(runs, seed)
    if not chosen:
        raise ValueError(f"qualitative_figure: no run with seed {seed} among {len(runs)} runs")
    fig = BookFigure(figsize=(9, 3 * len(chosen)))
    axes = fig.subplots(len(chosen), 3, squeeze=False)
    for row, (init, run) in zip(axes, chosen.items()):
        plot_segmentation(run, axes=row)
        row[2].set_title(f"prediction: {init}", fontsize=9)
    return fig


def template_fill_figure(run_dir: str | Path, store: Any, study: str | None = None) -> Figure:
    """Each input modality of a test study beside the template fill that would replace it.

    Args:
        run_dir: a fine-tuning run whose initialisation has templates.
        store: the store the run was trained on.
        study: a test study of the run's task. Defaults to None (the first test study).

    Raises:
        ValueError: When the run has no templates (a scratch initialisation).
    """
    _net, spec, templates, _cfg = load_network(run_dir)
    if templates is None:
        raise ValueError(
            f"{run_dir}: its initialisation has no templates (scratch); pass a "
            "run pre-trained with templates, e.g. init=brainmvp"
        )
    if study is None:
        study = task_splits(spec, task_rows(store.manifest, spec))["test"][0]
    sample = Volumes(store, [study], spec.modalities)[0]
    absent = torch.zeros(1, len(spec.modalities), dtype=torch.bool)
    filled = fill_missing(
        sample["image"][None],
        absent,
        spec.modalities,
        "template",
        templates,
        sample["template_origin"][None],
        sample["spacing"],
    )
    z = sample["image"].shape[-1] // 2
    n = len(spec.modalities)
    fig = BookFigure(figsize=(3 * n, 5.6))
    axes = fig.subplots(2, n, squeeze=False)
    for j, m in enumerate(spec.modalities):
        axes[0, j].imshow(sample["image"][j, :, :, z].T, cmap="gray", origin="lower")
        axes[0, j].set_title(f"{m}: the scan")
        axes[1, j].imshow(filled[0, j, :, :, z].T, cmap="gray", origin="lower")
        axes[1, j].set_title(f"{m}: template fill")
    for ax in axes.flat:
        ax.axis("off")
    return fig
