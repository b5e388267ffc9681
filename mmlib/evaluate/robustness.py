"""Robustness to missing modalities: score a fine-tuned network on every subset of its inputs.

For each non-empty subset of the task's modalities (15 for four), the other channels are
marked absent and filled, with the learned template of the modality (the paper's choice, only
for initialisations that have templates) or with zeros, and the test set is scored again. The
table is cached in the run folder (``robustness.csv``) and reused; a fill not yet in it is
scored and added.

:func:`replacement_robustness` measures what template-replacement fine-tuning
(``train.template_replacement``, :mod:`mmlib.proxy.replacement`) buys on every subset: one
initialisation fine-tuned at each seed without and with replacement, every subset scored with
the run's fill, and :func:`replacement_pairs` pairs the two by seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mmlib.proxy.missing import modality_subsets
from mmlib.runs import write_text_atomic


def subset_robustness(
    run_dir: str | Path,
    fills: Sequence[str] = ("template", "zero"),
    min_size: int = 1,
    max_test: int | None = None,
    hd95: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Test scores of a finished fine-tuning run for every modality subset and fill.

    Args:
        run_dir: a trained run of :func:`mmlib.engine.finetune.finetune`.
        fills: fills to compare; ``template`` is skipped for a run without templates
            (scratch). Defaults to ("template", "zero").
        min_size: smallest subset. Defaults to 1.
        max_test: score at most this many test studies (None: all). Defaults to None.
        hd95: also HD95 (slower). Defaults to False.
        progress: show a progress bar. Defaults to True.

    Returns:
        One row per (subset, fill): ``subset`` ("flair+t1c"), ``n_modalities``, ``fill``,
        ``init``, the mean test metrics (``dice_mean``, ``dice_<region>``; or ``accuracy``,
        ``auc``, ...), ``n_test``.
    """
    import json

    from mmlib.engine.finetune import finetune_split, open_store
    from mmlib.evaluate.inference import window_size
    from mmlib.evaluate.scoring import (
        classification_inputs,
        evaluate_classification,
        evaluate_segmentation,
        load_network,
    )

    run_dir = Path(run_dir)
    cache = run_dir / "robustness.csv"
    key = f"min={min_size};max_test={max_test};hd95={hd95}"
    cached = None
    if (
        cache.is_file()
        and (run_dir / "robustness.key").is_file()
        and (run_dir / "robustness.key").read_text() == key
    ):
        cached = pd.read_csv(cache)
        if set(fills) <= set(cached["fill"]):  # every fill asked for was scored before
            return cached[cached["fill"].isin(list(fills))].reset_index(drop=True)
    net, spec, templates, cfg = load_network(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    store = open_store(cfg)
    full = {**cfg, "data": {**cfg["data"], "max_test": None}}  # every test study, then max_test
    test = finetune_split(full, store).test
    test = test[:max_test] if max_test else test
    use = [f for f in fills if f != "template" or templates is not None]
    if cached is not None:  # score only the fills the cache lacks
        use = [f for f in use if f not in set(cached["fill"])]
    cells = [(s, f) for s in modality_subsets(spec.modalities, min_size) for f in use]
    roi = window_size(cfg)
    cls_data = (
        classification_inputs(cfg, store, test, spec) if spec.kind == "classification" else None
    )
    rows = []
    for subset, fill in tqdm(cells, desc=f"subsets {res['init']}", disable=not progress):
        keep = [m in subset for m in spec.modalities]
        if spec.kind == "segmentation":
            scores, _ = evaluate_segmentation(
                net,
                store,
                test,
                spec,
                roi,
                fill,
                templates,
                keep=keep,
                hd95=hd95,
                sw_batch_size=int(cfg["eval"]["sw_batch_size"]),
                overlap=float(cfg["eval"]["overlap"]),
                lesions=False,
                amp=cfg["eval"].get("amp", "off"),
            )
            metrics = {c: float(scores[c].mean()) for c in scores.columns if c != "study"}
        else:
            assert cls_data is not None
            _, metrics = evaluate_classification(net, cls_data, spec, fill, templates, keep=keep)
        rows.append(
            {
                "subset": "+".join(subset),
                "n_modalities": len(subset),
                "fill": fill,
                "init": res["init"],
                "seed": res["seed"],
                "template_replacement": int(res.get("template_replacement", 0)),
                **metrics,
                "n_test": len(test),
            }
        )
    table = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["fill"])
    if cached is not None:
        table = pd.concat([cached, table], ignore_index=True)
    write_text_atomic(cache, table.to_csv(index=False))
    write_text_atomic(run_dir / "robustness.key", key)
    return table[table["fill"].isin(list(fills))].reset_index(drop=True)


def _dice_by_subset(group: pd.DataFrame) -> dict[str, float]:
    return {str(k): float(v) for k, v in zip(group["subset"], group["dice_mean"])}


def drop_one_table(table: pd.DataFrame, modalities: Sequence[str]) -> pd.DataFrame:
    """Dice with every modality against Dice with one of them missing, per initialisation and fill.

    Args:
        table: :func:`subset_robustness` rows (one run or several, column ``init`` optional).
        modalities: the task's modalities, in input order.

    Returns:
        One row per (init, fill, missing modality): ``dice_full``, ``dice_without`` and
        ``drop`` (full minus without; positive when losing the modality hurts).
    """
    full = "+".join(modalities)
    keys = [k for k in ("init", "fill") if k in table.columns]
    rows = []
    for key, group in table.groupby(keys):
        dice = _dice_by_subset(group)
        labels = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for m in modalities:
            rest = "+".join(x for x in modalities if x != m)
            rows.append(
                {
                    **labels,
                    "missing": m,
                    "dice_full": dice[full],
                    "dice_without": dice[rest],
                    "drop": dice[full] - dice[rest],
                }
            )
    return pd.DataFrame(rows)


def subset_summary(
    table: pd.DataFrame, modalities: Sequence[str], init: str = "brainmvp"
) -> dict[str, Any]:
    """The key numbers of a subsets table for a chapter's ``results.json``.

    Returns:
        ``dice_full`` and ``dice_mean_over_subsets`` per ``init/fill``, and
        ``template_minus_zero`` (mean over subsets, for ``init``; None unless both fills ran).
    """
    full = "+".join(modalities)
    groups = list(table.groupby(["init", "fill"]))
    mine = table[table["init"] == init]
    both = set(mine["fill"]) >= {"template", "zero"}
    return {
        "n_subsets": int(table["subset"].nunique()),
        "n_test": int(table["n_test"].iloc[0]),
        "dice_full": {f"{i}/{f}": _dice_by_subset(g)[full] for (i, f), g in groups},
        "dice_mean_over_subsets": {
            f"{i}/{f}": float(g["dice_mean"].mean()) for (i, f), g in groups
        },
        "template_minus_zero": float(
            mine[mine["fill"] == "template"]["dice_mean"].mean()
            - mine[mine["fill"] == "zero"]["dice_mean"].mean()
        )
        if both
        else None,
    }


def replacement_robustness(
    config: str | Path | Mapping[str, Any],
    init: str,
    fraction: float,
    seeds: Sequence[int],
    replacement: int = 3,
    overrides: Mapping[str, Any] | None = None,
    max_test: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Subset scores of one initialisation fine-tuned without and with template replacement.

    Each (seed, replacement) cell is trained and scored by
    :func:`mmlib.evaluate.grid.finetune_grid` (reused when finished: the runs without
    replacement are the book's main runs), then every modality subset is scored with the run's
    own fill (template for a pre-trained init, zeros for scratch) by :func:`subset_robustness`.
    The two runs of a seed differ only in ``train.template_replacement`` (same labelled
    studies, crops, decoder initialisation).

    Args:
        config: fine-tuning scale preset, file or dict.
        init: the initialisation (``brainmvp``, ``scratch``, a checkpoint folder...).
        fraction: the label fraction.
        seeds: fine-tuning seeds.
        replacement: ``train.template_replacement`` of the runs with replacement (the most
            modalities replaced per copy). Defaults to 3 (the authors' ``num_mix``).
        overrides: more overrides shared by every run (e.g. ``{"task": "brats_ped"}``).
            Defaults to None.
        max_test: score at most this many test studies. Defaults to None (all).
        progress: show progress bars. Defaults to True.

    Returns:
        :func:`subset_robustness` rows of every run (columns ``seed`` and
        ``template_replacement`` tell them apart), with ``run`` (the folder).

    Raises:
        ValueError: When ``replacement`` is not positive.
    """
    import json

    from mmlib.evaluate.grid import finetune_grid, grid_workers, map_cells

    if replacement <= 0:
        raise ValueError(
            f"replacement should be a positive number of modalities, got {replacement}"
        )
    calls, reps = [], []
    for rep in (0, int(replacement)):
        over = {**dict(overrides or {}), "train.template_replacement": rep}
        for run in finetune_grid(config, [init], [fraction], list(seeds), over, progress=progress):
            fill = json.loads((run / "results.json").read_text())["fill"]
            # subset_robustness's positional arguments: fills, min_size, max_test, hd95, progress
            calls.append((run, (fill,), 1, max_test, False, False))
            reps.append(rep)
    # the subset tables in the grid's workers too (each run's table is cached in its folder)
    workers = grid_workers(config) if isinstance(config, str) else 1
    tables = map_cells(subset_robustness, calls, workers, "subset tables", progress)
    return pd.concat(
        [t.assign(template_replacement=r, run=str(c[0])) for t, r, c in zip(tables, reps, calls)],
        ignore_index=True,
    )


def replacement_pairs(table: pd.DataFrame, metric: str = "dice_mean") -> pd.DataFrame:
    """Per subset: the metric without and with template replacement, paired by seed.

    Args:
        table: :func:`replacement_robustness` rows (one init, one fill).
        metric: the column compared. Defaults to "dice_mean".

    Returns:
        One row per subset (in the table's order): ``subset``, ``n_modalities``, ``without``
        and ``with`` (means over seeds), ``gain`` (mean over seeds of with minus without),
        ``gain_s<seed>`` per seed, ``wins`` (seeds where replacement is better) and
        ``n_seeds``.

    Raises:
        ValueError: When a seed lacks one of the two runs of a subset.
    """
    rows = []
    for subset, group in table.groupby("subset", sort=False):
        off = group[group["template_replacement"] == 0].set_index("seed")[metric]
        on = group[group["template_replacement"] > 0].set_index("seed")[metric]
        if set(off.index) != set(on.index):
            raise ValueError(
                f"subset {subset}: seeds without replacement {sorted(off.index)} and with "
                f"{sorted(on.index)} differ; every seed needs both runs"
            )
        gain = (on - off.reindex(on.index)).sort_index()
        rows.append(
            {
                "subset": subset,
                "n_modalities": int(group["n_modalities"].iloc[0]),
                "without": float(off.mean()),
                "with": float(on.mean()),
                "gain": float(gain.mean()),
                **{f"gain_s{k}": float(v) for k, v in zip(gain.index.tolist(), gain.tolist())},
                "wins": int((gain > 0).sum()),
                "n_seeds": len(gain),
            }
        )
    return pd.DataFrame(rows)
