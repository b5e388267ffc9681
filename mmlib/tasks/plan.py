"""The experiment grid of the book's downstream notebooks (07-10, 12), per scale.

The full grid (every initialisation × label fractions 10/20/40/100 % × seeds, on every task) is
for ``paper`` scale. At ``demo`` scale the book runs the subset that fits a 2-core CPU: the
BraTS-PED-like task at the main 20 % fraction for scratch, BrainMVP and single-modal masked
modelling (MIM) over three seeds; a label-efficiency curve for scratch and BrainMVP over the
same seeds at 4, 8, 12 and 20 % (1, 2, 3 and 5 labelled studies) with a budget in passes over
the labelled studies (``fraction_epochs``: ``train.epochs``, so that a fraction compares labels
and not steps; 60 passes are the main runs' 150 steps at 20 %, reused); the
proxy-task ablations at 20 % over the same three seeds; the other tasks (stroke, tissue, and the
BraTS-MET-, UPENN-GBM- and VS-Seg-like tasks; the four classification tasks) BrainMVP vs scratch
at one fraction with one seed and ``other_steps`` steps (demo: 60 of the preset's 150; a
demonstration that the code runs there, not a comparison).
That is 56 fine-tuning runs of 15-60 s each at 1 thread, run two at a time
(``grid_workers``: :func:`mmlib.evaluate.grid.finetune_grid`). Every pre-trained initialisation
at demo is the checkpoint shipped with mmlib (``pretrained: shipped`` in the demo fine-tuning
preset, :mod:`mmlib.models.shipped`), so the downstream chapters pre-train nothing.
The pre-training chapters 03-06 show each proxy task at work with a pre-training of their own
of ``chapter_epochs`` epochs (demo: 4 of the preset's 18; None: the preset's schedule).
``smoke`` runs a token grid in seconds (tests).
Notebooks read this table unless their parameters say otherwise, and every run folder is reused
when nothing it depends on changed, so notebook 09 reuses the runs of 07 and notebook 12
recomputes nothing.
Notebook 10 fine-tunes BrainMVP at the main fraction again with template replacement at
``replacement_seeds`` (paired with 07's runs of the same seeds; one seed at smoke): two more
runs at demo (~55 s each at 1 thread: two copies of every crop), and scores every modality
subset on ``robustness_max_test`` test studies (demo: 2; each subset is a whole-volume
forward pass per study).
"""

from __future__ import annotations

from typing import Any

from mmlib.configs.scales import check_scale

ABLATIONS: tuple[str, ...] = ("cmr_only", "md_only", "brainmvp_nocl")
"""Pre-training ablations: cross-modal reconstruction only, template distillation only,
no contrastive."""

PLAN: dict[str, dict[str, Any]] = {
    "smoke": {
        "seg_task": "brats_ped",
        "inits": ["scratch", "brainmvp"],
        "main_fraction": 0.5,
        "fractions": [0.5, 1.0],
        "fraction_epochs": 2.5,  # 4 steps at 0.5 (3 of 6 studies): the main runs are reused
        "seeds": [0, 1],
        "other_steps": None,
        "ablations": ["cmr_only"],
        "ablation_seeds": [0, 1],
        "fraction_inits": ["scratch", "brainmvp"],
        "other_seg_tasks": ["isles", "mrbrains", "brats_met", "upenn_gbm", "vs_seg"],
        "cls_tasks": ["hgg_lgg", "adni", "adhd200", "abide"],
        "other_fraction": 1.0,
        "other_seeds": [0],
        "robustness_max_test": 2,
        "replacement_seeds": [0],
        "grid_workers": 1,
        "chapter_epochs": None,
        "overrides": {},
    },
    "demo": {
        "seg_task": "brats_ped",
        "inits": ["scratch", "brainmvp", "mim"],
        "main_fraction": 0.2,
        # 1, 2, 3 and 5 of the 21 training studies: 30, 60, 90 and 150 steps (the last: the main
        # runs); a 9-study point (270 steps a run) cost ~3 minutes of the book
        "fractions": [0.04, 0.08, 0.12, 0.2],
        "fraction_epochs": 60,
        "seeds": [0, 1, 2],
        # the one-seed runs of the other nine tasks: 60 steps (the preset's 150 for the main task)
        "other_steps": 60,
        "ablations": list(ABLATIONS),
        "ablation_seeds": [0, 1, 2],
        "fraction_inits": ["scratch", "brainmvp"],
        "other_seg_tasks": ["isles", "mrbrains", "brats_met", "upenn_gbm", "vs_seg"],
        "cls_tasks": ["hgg_lgg", "adni", "adhd200", "abide"],
        "other_fraction": 1.0,
        "other_seeds": [0],
        "robustness_max_test": 2,
        "replacement_seeds": [0, 1],
        "grid_workers": 2,
        "chapter_epochs": 4,
        "overrides": {},
    },
    "paper": {
        "seg_task": "brats_ped",
        "inits": ["scratch", "brainmvp", "mim"],
        "main_fraction": 0.2,
        "fractions": [0.1, 0.2, 0.4, 1.0],
        "fraction_epochs": None,
        "seeds": [0, 1, 2],
        "other_steps": None,
        "ablations": list(ABLATIONS),
        "ablation_seeds": [0, 1, 2],
        "fraction_inits": ["scratch", "brainmvp", "mim"],
        "other_seg_tasks": ["isles", "mrbrains", "brats_met", "upenn_gbm", "vs_seg"],
        "cls_tasks": ["hgg_lgg", "adni", "adhd200", "abide"],
        "other_fraction": 1.0,
        "other_seeds": [0, 1, 2],
        "robustness_max_test": None,
        "replacement_seeds": [0, 1, 2],
        "grid_workers": 1,
        "chapter_epochs": None,
        "overrides": {},
    },
}


def plan(scale: str) -> dict[str, Any]:
    """A copy of the book's downstream grid at ``scale`` (see the module docstring)."""
    import copy

    return copy.deepcopy(PLAN[check_scale(scale)])


def other_overrides(grid: dict[str, Any], task: str) -> dict[str, Any]:
    """Fine-tuning overrides of one of the other tasks' runs in a :func:`plan` grid: the task,
    and ``train.steps`` when the grid sets ``other_steps`` (else the preset's steps)."""
    steps = grid.get("other_steps")
    return {"task": task, **({"train.steps": int(steps)} if steps else {})}
