"""Robustness to missing modalities: score a fine-tuned network on every subset of its inputs.

For each non-empty subset of the task's modalities (15 for four), the other channels are
marked absent and filled, with the learned template of the modality (the paper's choice, only
for initialisations that have templates) or with zeros, and the test set is scored again. The
table is cached in the run folder (``robustness.csv``) and reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mmlib.proxy.missing import modality_subsets


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
    key = f"fills={','.join(fills)};min={min_size};max_test={max_test};hd95={hd95}"
    if (
        cache.is_file()
        and (run_dir / "robustness.key").is_file()
        and (run_dir / "robustness.key").read_text() == key
    ):
        return pd.read_csv(cache)
    net, spec, templates, cfg = load_network(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    store = open_store(cfg)
    full = {**cfg, "data": {**cfg["data"], "max_test": None}}  # every test study, then max_test
    test = finetune_split(full, store).test
    test = test[:max_test] if max_test else test
    use = [f for f in fills if f != "template" or templates is not None]
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
                **metrics,
                "n_test": len(test),
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(cache, index=False)
    (run_dir / "robustness.key").write_text(key)
    return table


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
