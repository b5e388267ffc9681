"""A scored fine-tuning run carries the lesion-wise metrics and the empty-reference counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmlib.data.store import Store, init_store, write_study
from mmlib.engine.finetune import finetune
from mmlib.evaluate.lesions import lesion_scores
from mmlib.evaluate.reports import collect_runs, lesion_summary
from mmlib.evaluate.scoring import score_run, summarise_test_scores

MODS = ["flair", "t1", "t1c", "t2"]


def _store(root: Path, n: int = 5, shape: tuple[int, int, int] = (24, 24, 20)) -> Path:
    """BraTS-2023-labelled studies (task brats_ped), the last two test; the last has no ET."""
    init_store(root, 4.0)
    rng = np.random.default_rng(1)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    zz = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1)
    for i in range(n):
        r = np.sqrt(((zz - rng.integers(6, 14, 3)) ** 2).sum(-1))
        label = np.zeros(shape, np.uint8)
        label[r < 5] = 2
        label[r < 3] = 1 if i == n - 1 else 3
        label[r < 1.5] = 1
        images = {
            m: np.clip(0.3 + 0.05 * j + 0.02 * rng.standard_normal(shape) + 0.4 * (label > 0), 0, 1)
            for j, m in enumerate(MODS)
        }
        row = {
            "study": f"ped{i:02d}",
            "source": "tiny",
            "modalities": MODS,
            "shape": list(shape),
            "spacing": [4.0] * 3,
            "affine": affine.tolist(),
            "center_world": [0.0] * 3,
            "label": True,
            "attrs": {},
            "split": "test" if i >= n - 2 else "train",
            "task": "brats_ped",
        }
        write_study(root, row, images, label)
    return root


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, pd.DataFrame]:
    store = _store(tmp_path_factory.mktemp("store"))
    over = {
        "data.store": str(store),
        "run.root": str(tmp_path_factory.mktemp("runs")),
        "train.steps": 2,
        "eval.hd95": False,
    }
    run = finetune("smoke", over, progress=False)
    res = score_run(run)
    return run, res, pd.read_csv(run / "test_scores.csv")


def test_test_scores_carry_lesion_metrics(scored: tuple[Path, dict, pd.DataFrame]) -> None:
    run, _, scores = scored
    for region in ("TC", "WT", "ET"):
        for col in ("lesion_dice", "lesion_f1", "tp", "fp", "fn", "reference_empty"):
            assert f"{col}_{region}" in scores.columns
    # the kept prediction rescored by the metric gives the row's numbers
    (npz,) = (run / "predictions").glob("*.npz")
    kept = np.load(npz)
    label = kept["label"]
    row = scores.set_index("study").loc[npz.stem]
    for i, (region, values) in enumerate((("TC", (1, 3)), ("WT", (1, 2, 3)), ("ET", (3,)))):
        want = lesion_scores(kept["pred"][i], np.isin(label, values))
        assert row[f"tp_{region}"] == want["tp"] and row[f"fn_{region}"] == want["fn"]
        assert row[f"fp_{region}"] == want["fp"]
        if not np.isnan(want["lesion_dice"]):
            assert row[f"lesion_dice_{region}"] == pytest.approx(want["lesion_dice"])


def test_results_json_counts_empty_references(scored: tuple[Path, dict, pd.DataFrame]) -> None:
    run, res, scores = scored
    test = res["test"]
    store = Store(_store_of(run))
    empty_et = sum(int(not (store.label(s) == 3).any()) for s in scores["study"])
    assert empty_et == 1 and test["reference_empty_ET"] == 1 and test["reference_empty_WT"] == 0
    assert test["tp_WT"] == int(scores["tp_WT"].sum()) and isinstance(test["fn_ET"], int)
    assert test["lesion_f1_WT"] == pytest.approx(float(scores["lesion_f1_WT"].mean()))
    assert summarise_test_scores(scores) == dict(test.items())
    assert test["dice_mean"] == pytest.approx(float(scores["dice_mean"].mean()))
    table = lesion_summary(collect_runs([run]))
    assert len(table) == 1 and "ET 1" in table.iloc[0]["reference_empty"]


def _store_of(run: Path) -> str:
    import json

    return str(json.loads((run / "config.json").read_text())["data"]["store"])
