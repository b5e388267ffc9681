"""The downstream chapters' figures and tables built in the package (notebooks 07, 10, 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from downstream_fixtures import tiny_store

from mmlib.data.store import Store
from mmlib.evaluate.figures import (
    qualitative_figure,
    regions_figure,
    runs_by_init,
    study_with_labels,
    template_fill_figure,
)
from mmlib.evaluate.grid import finetune_grid
from mmlib.evaluate.robustness import drop_one_table, subset_summary
from mmlib.tasks import resolve_task, task_rows

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("fig")
    store = tiny_store(root / "store", n_seg=5, n_cls=0)
    over = {
        "data.store": str(store),
        "run.root": str(root / "runs"),
        "train.steps": 2,
        "eval.hd95": False,
    }
    return store, finetune_grid("smoke", ["scratch"], [1.0], [0, 1], over, progress=False)


def test_regions_and_qualitative_figures(scored: tuple[Path, list[Path]]) -> None:
    root, runs = scored
    store = Store(root)
    spec = resolve_task("brats_ped", store.manifest, store)
    studies = list(task_rows(store.manifest, spec)["study"])
    study = study_with_labels(store, studies, {1, 2, 3, 4})
    assert np.isin(np.asarray(store.label(study)), [1, 2, 3, 4]).any()
    assert study_with_labels(store, studies, {99}) == studies[0]  # none has it: the first
    with pytest.raises(ValueError, match="no studies"):
        study_with_labels(store, [], {1})
    fig = regions_figure(store, spec, study)
    assert len(fig.axes) == 2 + len(spec.regions.names)
    assert [ax.get_title().split(":")[0] for ax in fig.axes[2:]] == list(spec.regions.names)
    assert fig._repr_png_()[:4] == b"\x89PNG"  # shown in a notebook without pyplot
    assert set(runs_by_init(runs, 1)) == {"scratch"} and runs_by_init(runs, 7) == {}
    fig = qualitative_figure(runs, 0)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "prediction: scratch"
    with pytest.raises(ValueError, match="no run with seed 5"):
        qualitative_figure(runs, 5)
    with pytest.raises(ValueError, match="has no templates"):
        template_fill_figure(runs[0], store)


def test_drop_one_table_and_summary() -> None:
    mods = ["t1", "t2"]
    rows = []
    for init, fill, full, no_t1, no_t2 in [
        ("brainmvp", "template", 0.8, 0.5, 0.7),
        ("brainmvp", "zero", 0.8, 0.3, 0.6),
        ("scratch", "zero", 0.7, 0.2, 0.4),
    ]:
        for subset, dice in (("t1+t2", full), ("t2", no_t1), ("t1", no_t2)):
            rows.append(
                {"init": init, "fill": fill, "subset": subset, "dice_mean": dice, "n_test": 3}
            )
    table = pd.DataFrame(rows)
    drops = drop_one_table(table, mods)
    assert len(drops) == 6
    row = drops[
        (drops["init"] == "brainmvp") & (drops["fill"] == "zero") & (drops["missing"] == "t1")
    ].iloc[0]
    assert row["dice_full"] == 0.8 and row["dice_without"] == 0.3
    assert row["drop"] == pytest.approx(0.5)
    summary = subset_summary(table, mods)
    assert summary["n_subsets"] == 3 and summary["n_test"] == 3
    assert summary["dice_full"] == {
        "brainmvp/template": 0.8,
        "brainmvp/zero": 0.8,
        "scratch/zero": 0.7,
    }
    assert summary["template_minus_zero"] == pytest.approx((2.0 - 1.7) / 3)
    assert subset_summary(table, mods, init="scratch")["template_minus_zero"] is None


def test_pretrain_run_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_viz_data import write_run

    from mmlib.evaluate.grid import pretrain_run_for

    monkeypatch.setenv("MMLIB_WORK", str(tmp_path / "work"))
    assert pretrain_run_for("smoke", train_if_missing=False) is None
    run = write_run(tmp_path / "work" / "smoke" / "runs" / "pretrain" / "a")
    assert pretrain_run_for("smoke", train_if_missing=False).path == run
    other = write_run(tmp_path / "elsewhere")
    assert pretrain_run_for("smoke", other).path == other
