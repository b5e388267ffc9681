"""Evidence shipped with mmlib: paired fine-tuning results measured once, outside the book.

Some answers need more seeds than ``make book`` can afford on a 2-core CPU (the BraTS-PED-like
headline needs ~20 seeds at demo; the book runs three). Such a study is run once with mmlib's
own commands and shipped, small, in ``mmlib/evidence/``: ``NAME.csv`` (one row per run: task,
init, label fraction, seed, test studies, the metric), ``NAME_studies.csv`` (one row per run and
test study: the per-study metric, for the bootstrap over seeds and studies) and ``NAME.json``
(its provenance: the commands that regenerate it, the mmlib commit, the machine and threads,
and the digest of each pre-trained checkpoint the runs started from). Notebook 12 reads it with
:func:`load_evidence` and :func:`evidence_comparison`, states its verdict beside the book's own,
and says whether the book's pre-training is the same checkpoint (same weights digest).

Regenerate (demo, after ``make book`` made the store and the pre-training)::

    mmlib finetune --config demo --task brats_ped --init scratch brainmvp --fractions 0.2 \\
        --seeds 20 21 ... 38
    mmlib evaluate evidence .mmlib/demo/runs/finetune/brats_ped --name headline_heldout \\
        --task brats_ped --fraction 0.2 --seeds 20 21 ... 38
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from mmlib.evaluate.reports import per_study_scores
from mmlib.evaluate.stats import CONFIDENCE, PairedComparison, paired_comparison
from mmlib.runs import collect_runs, read_identity, write_text_atomic

EVIDENCE_DIR = Path(__file__).resolve().parents[1] / "evidence"
"""Where the shipped evidence lives (``mmlib/evidence/``, installed with the package)."""

RUN_COLUMNS = ("task", "init", "label_fraction", "seed", "n_test")
_PRETRAIN_FOLDER = re.compile(r"^(?P<objective>[a-z0-9_]+)-[a-z0-9]+-[0-9a-f]{8}$")


class Evidence(NamedTuple):
    """Shipped evidence as read: per-run rows, per-study rows and provenance."""

    runs: pd.DataFrame
    studies: pd.DataFrame
    provenance: dict[str, Any]


class EvidenceError(ValueError):
    """Shipped evidence that is missing or malformed (the message names the file)."""


def init_name(init: str) -> str:
    """The initialisation a run names: ``brainmvp-unet-e3c2ecd9`` (a pre-training run folder
    given as ``--init``) is ``brainmvp``; ``scratch`` and objective names are unchanged."""
    m = _PRETRAIN_FOLDER.match(Path(str(init)).name)
    return m.group("objective") if m else str(init)


def checkpoint_digest(run: str | Path) -> str | None:
    """The weights digest of the pre-training checkpoint a fine-tuning run started from (its
    ``identity.json``), or None for scratch or a run without one."""
    ident = read_identity(run)
    ckpt = ident.get("checkpoint") if ident else None
    return str(ckpt["weights"]) if isinstance(ckpt, dict) and ckpt.get("weights") else None


def source_digest(run: str | Path) -> str | None:
    """:func:`checkpoint_digest`, except for a run that started from a shipped checkpoint whose
    backbone is stored in float32 (:mod:`mmlib.models.shipped`): the digest of the checkpoint it
    was packed from, whose backbone it is bit for bit. Evidence measured on that source
    checkpoint then speaks for the run's weights (the templates, rounded to float16, only fill
    missing modalities)."""
    ident = read_identity(run)
    ckpt = (ident.get("checkpoint") if ident else None) or {}
    digest = str(ckpt["weights"]) if ckpt.get("weights") else None
    path = ckpt.get("path")
    meta_path = Path(path) / "meta.json" if path else None
    if digest is None or meta_path is None or not meta_path.is_file():
        return digest
    shipped = json.loads(meta_path.read_text()).get("shipped") or {}
    exact = (shipped.get("dtype") or {}).get("backbone") == "float32"
    return str(shipped["source_weights"]) if exact and shipped.get("source_weights") else digest


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def export_evidence(
    roots: str | Path | Sequence[str | Path],
    name: str,
    *,
    task: str,
    label_fraction: float,
    seeds: Sequence[int],
    metric: str = "dice_mean",
    commands: Sequence[str] = (),
    threads: int | None = None,
    out_dir: str | Path = EVIDENCE_DIR,
) -> Path:
    """Write the finished runs of ``task`` at ``label_fraction`` and ``seeds`` under ``roots``
    as shipped evidence ``out_dir/NAME.{csv,json}`` and ``NAME_studies.csv``.

    Args:
        roots: run folders or folders holding them (see :func:`mmlib.runs.collect_runs`).
        name: the evidence's name (file stem).
        task: the task.
        label_fraction: the label fraction.
        seeds: the seeds to ship (each must have a run of every initialisation found).
        metric: the per-run and per-study metric. Defaults to "dice_mean".
        commands: the commands that made the runs (recorded for regeneration).
        threads: the CPU threads the runs used (recorded). Defaults to None (this process's).
        out_dir: the folder. Defaults to :data:`EVIDENCE_DIR`.

    Returns:
        The CSV's path.

    Raises:
        EvidenceError: When no run matches, a seed lacks an initialisation's run, or a run has
            no per-study scores.
    """
    runs = collect_runs(roots)
    if len(runs):
        runs = runs[
            (runs["task"] == task)
            & np.isclose(runs["label_fraction"].astype(float), float(label_fraction))
            & (runs["template_replacement"] == 0)
        ].copy()
    if not len(runs):
        raise EvidenceError(
            f"{roots}: no finished {task} run at label fraction {label_fraction}; "
            "run mmlib finetune first"
        )
    runs["init"] = runs["init"].map(init_name)
    inits = sorted(runs["init"].unique())  # every initialisation of the cell, at any seed
    runs = runs[runs["seed"].isin([int(s) for s in seeds])]
    for init in inits:
        missing = sorted({int(s) for s in seeds} - set(runs[runs["init"] == init]["seed"]))
        if missing:
            raise EvidenceError(f"{roots}: {init} has no finished run at seeds {missing}")
    per_run: list[dict[str, Any]] = []
    per_study: list[dict[str, Any]] = []
    checkpoints: dict[str, set[str]] = {}
    for _, r in runs.sort_values(["init", "seed"]).iterrows():
        scores = per_study_scores(r["run"], metric)
        if scores is None:
            raise EvidenceError(f"{r['run']}: no per-study {metric} in test_scores.csv")
        per_run.append({**{k: r[k] for k in RUN_COLUMNS}, metric: float(r[metric])})
        per_study += [
            {"init": r["init"], "seed": int(r["seed"]), "study": s, metric: float(v)}
            for s, v in scores.items()
        ]
        digest = checkpoint_digest(r["run"])
        if digest is not None:
            checkpoints.setdefault(r["init"], set()).add(digest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    provenance = {
        "name": name,
        "task": task,
        "label_fraction": float(label_fraction),
        "metric": metric,
        "seeds": sorted(int(s) for s in seeds),
        "inits": inits,
        "checkpoint_weights": {k: sorted(v) for k, v in checkpoints.items()},
        "commands": list(commands),
        "mmlib_commit": _git_commit(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": int(threads if threads is not None else torch.get_num_threads()),
    }
    # each file whole or not at all; the provenance last, as the marker of a finished export
    write_text_atomic(out / f"{name}.csv", pd.DataFrame(per_run).to_csv(index=False))
    write_text_atomic(out / f"{name}_studies.csv", pd.DataFrame(per_study).to_csv(index=False))
    write_text_atomic(out / f"{name}.json", json.dumps(provenance, indent=1) + "\n")
    return out / f"{name}.csv"


def load_evidence(name: str, evidence_dir: str | Path = EVIDENCE_DIR) -> Evidence:
    """The shipped evidence ``name``: per-run rows, per-study rows and provenance.

    Raises:
        EvidenceError: When a file is missing or lacks its columns.
    """
    folder = Path(evidence_dir)
    paths = {k: folder / f"{name}{k}" for k in (".csv", "_studies.csv", ".json")}
    for path in paths.values():
        if not path.is_file():
            raise EvidenceError(f"{path}: no such evidence file (see mmlib.evaluate.evidence)")
    provenance = json.loads(paths[".json"].read_text())
    metric = provenance.get("metric", "dice_mean")
    runs, studies = pd.read_csv(paths[".csv"]), pd.read_csv(paths["_studies.csv"])
    for path, frame, cols in (
        (paths[".csv"], runs, (*RUN_COLUMNS, metric)),
        (paths["_studies.csv"], studies, ("init", "seed", "study", metric)),
    ):
        lacking = [c for c in cols if c not in frame.columns]
        if lacking:
            raise EvidenceError(f"{path}: lacks the column(s) {', '.join(lacking)}")
    return Evidence(runs, studies, provenance)


def evidence_comparison(
    evidence: str | Evidence,
    init: str = "brainmvp",
    baseline: str = "scratch",
    evidence_dir: str | Path = EVIDENCE_DIR,
    confidence: float = CONFIDENCE,
) -> tuple[dict[str, Any], PairedComparison, np.ndarray]:
    """The paired comparison of shipped evidence, as notebook 12 states it.

    Args:
        evidence: its name (read from ``evidence_dir``) or what :func:`load_evidence` returned.
        init: the initialisation. Defaults to "brainmvp".
        baseline: the baseline. Defaults to "scratch".
        evidence_dir: where a named evidence is read. Defaults to :data:`EVIDENCE_DIR`.
        confidence: the interval's level. Defaults to 0.95.

    Returns:
        ``(summary, comparison, per_study)``: ``summary`` has the keys of
        :func:`mmlib.evaluate.reports.headline` plus ``source`` and ``checkpoint_weights``;
        ``per_study`` is the seed × study matrix of differences (for
        :func:`mmlib.evaluate.stats.power_analysis`).
    """
    if isinstance(evidence, str):
        evidence = load_evidence(evidence, evidence_dir)
    runs, studies, prov = evidence
    name = prov["name"]
    metric = prov.get("metric", "dice_mean")
    by = {str(k): g.set_index("seed")[metric].to_dict() for k, g in runs.groupby("init")}
    if init not in by or baseline not in by:
        raise EvidenceError(f"{name}: needs runs of {init} and {baseline}, has {sorted(by)}")
    cmp = paired_comparison(by[init], by[baseline], confidence)
    wide = studies.pivot_table(index=["init", "seed"], columns="study", values=metric)
    diff = pd.DataFrame(wide.loc[init] - wide.loc[baseline]).loc[list(cmp.seeds)]
    diff = diff.dropna(axis="columns")  # studies every seed scored
    summary = {
        "task": prov["task"],
        "init": init,
        "baseline": baseline,
        "label_fraction": float(prov["label_fraction"]),
        "seeds": list(cmp.seeds),
        "mean_diff": cmp.mean_diff,
        "ci95": [cmp.ci95[0], cmp.ci95[1]],
        "source": f"mmlib/evidence/{name}.csv",
        "checkpoint_weights": prov.get("checkpoint_weights", {}).get(init, []),
    }
    return summary, cmp, diff.to_numpy(float)
