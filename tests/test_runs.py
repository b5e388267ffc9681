"""mmlib.runs: the one owner of the run-folder format (checkpoints, metrics, samples, results)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmlib.runs import (
    SAMPLE_KEYS,
    MetricsCSV,
    RunFolder,
    Samples,
    checkpoint_at,
    checkpoint_folder,
    find_latest,
    find_runs,
    is_complete,
    is_done,
    is_run_folder,
    json_safe,
    latest_checkpoint,
    load_run,
    load_samples,
    mark_done,
    read_config,
    read_metrics,
    read_results,
    sample_errors,
    samples_from_views,
    step_name,
    step_of,
    write_config,
    write_json,
    write_results,
    write_samples,
)


def _ckpt(root: Path, step: int, train_state: bool = True) -> Path:
    folder = root / step_name(step)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    (folder / "meta.json").write_text("{}")
    if train_state:
        (folder / "train_state.pt").write_bytes(b"x")
    return folder


def test_step_names_round_trip() -> None:
    assert step_name(42) == "step_0000042"
    assert step_of("samples/step_0000042.npz") == 42
    with pytest.raises(ValueError, match="not a step_XXXXXXX name"):
        step_of("model.safetensors")


def test_latest_skips_incomplete_and_prefers_newer_than_pointer(tmp_path: Path) -> None:
    ck = tmp_path / "run" / "checkpoints"
    _ckpt(ck, 10)
    newer = _ckpt(ck, 20)
    (ck / "latest").write_text("step_0000010\n")  # killed between commit and pointer update
    half = ck / step_name(30)
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"x")  # a write killed half-way
    assert find_latest(ck) == newer
    assert latest_checkpoint(tmp_path / "run") == newer
    assert checkpoint_folder(tmp_path / "run") == newer
    assert not is_complete(half)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint for step 30"):
        checkpoint_at(tmp_path / "run", 30)


def test_checkpoint_folder_accepts_imported_weights_and_names_the_fix(tmp_path: Path) -> None:
    imported = _ckpt(tmp_path, 1, train_state=False)
    assert checkpoint_folder(imported) == imported
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="run mmlib pretrain first"):
        checkpoint_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder"):
        checkpoint_folder(tmp_path / "nothing")


# ----------------------------------------------------------------------------- results.json
def test_undefined_numbers_become_null(tmp_path) -> None:
    data = {
        "sd": float("nan"),
        "auc": np.float32("nan"),
        "n": np.int64(3),
        "ok": np.bool_(True),
        "vals": np.array([1.5, np.inf]),
        "nested": {"m": np.float64(0.25)},
    }
    path = write_results(tmp_path / "results.json", data)
    back = json.loads(path.read_text())  # strict JSON: no NaN tokens
    assert back == {
        "sd": None,
        "auc": None,
        "n": 3,
        "ok": True,
        "vals": [1.5, None],
        "nested": {"m": 0.25},
    }
    assert "NaN" not in path.read_text()
    assert json_safe(0.5) == 0.5 and not math.isnan(json_safe(0.5))
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary file, renamed


def test_evaluate_reports_keeps_the_moved_names() -> None:
    from mmlib.evaluate import reports

    assert reports.write_results is write_results and reports.json_safe is json_safe


# ----------------------------------------------------------------------------- metrics.csv
def test_metrics_csv_round_trips_every_bit_and_resumes(tmp_path: Path) -> None:
    log = MetricsCSV(tmp_path)
    values = [1 / 3, 0.1 + 0.2, 2.0**-40]
    for i, v in enumerate(values, start=1):
        log.append({"step": i, "samples_per_s": 9.5, "loss": v, "lr": 1e-3})
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "step,lr,loss,samples_per_s"
    rows = read_metrics(tmp_path)  # a run folder or the file itself
    assert [r["loss"] for r in rows] == values and rows == read_metrics(tmp_path / "metrics.csv")
    log.append({"step": 4, "loss": 0.5, "lr": 1e-3, "cl": 0.25})  # a new column rewrites the header
    rows = read_metrics(tmp_path)
    assert math.isnan(rows[0]["cl"]) and rows[-1]["cl"] == 0.25 and len(rows) == 4
    # a resumed run keeps the rows up to its checkpoint and drops what the killed process wrote
    MetricsCSV(tmp_path, resume_step=2).append({"step": 3, "loss": 7.0, "lr": 1e-3})
    kept = [(r["step"], r["loss"]) for r in read_metrics(tmp_path)]
    assert kept == [(1, values[0]), (2, values[1]), (3, 7.0)]
    MetricsCSV(tmp_path)  # a new run starts a new log
    assert read_metrics(tmp_path) == []


# ----------------------------------------------------------------------------- samples
def _views(rng: np.random.Generator, n: int = 2, size: int = 8) -> dict[str, np.ndarray]:
    target = rng.random((n, 1, size, size, size)).astype(np.float32)
    mask = (rng.random((n, 1, size, size, size)) < 0.5).astype(np.float32)
    out = {"target": target, "mask": mask}
    for k in ("view_a", "view_b", "recon_a", "recon_b"):
        out[k] = rng.random(target.shape).astype(np.float32)
    return out


def test_samples_write_load_and_errors(tmp_path: Path) -> None:
    views = _views(np.random.default_rng(0))
    arrays = {k: v[:, 0].astype(np.float16) for k, v in views.items()}
    path = write_samples(
        tmp_path,
        6,
        {
            **arrays,
            "study": np.asarray(["a", "b"]),
            "modality": np.asarray(["t1", "t2"]),
            "step": np.asarray(6),
            "epoch": np.asarray(1),
        },
    )
    assert path == tmp_path / "samples" / "step_0000006.npz" and not list(path.parent.glob(".*"))
    s = load_samples(path)
    assert s.step == 6 and s.study == ["a", "b"] and list(s.arrays) == list(SAMPLE_KEYS)
    err = sample_errors(path)
    assert list(err) == ["view_a", "recon_a", "view_b", "recon_b"]
    assert err == sample_errors(s)  # a file or what was read from it: one number
    t, m = arrays["target"].astype(np.float32), arrays["mask"].astype(bool)
    want = float(((arrays["recon_a"].astype(np.float32) - t) ** 2)[m].mean())
    assert err["recon_a"] == want  # over the masked voxels only
    mim = Samples(
        {
            "target": s.arrays["target"],
            "mask": np.zeros_like(s.arrays["mask"]),
            "recon_a": s.arrays["target"] + 0.5,
        },
        s.study,
        s.modality,
    )
    assert sample_errors(mim) == {"recon_a": pytest.approx(0.25)}  # empty mask: every voxel


def test_samples_from_views_drops_the_channel() -> None:
    s = samples_from_views(_views(np.random.default_rng(1)), ["a", "b"], ["t1", "t1"], step=3)
    assert s.arrays["target"].shape == (2, 8, 8, 8) and s.step == 3 and len(s) == 2
    assert s.index("b") == 1 and s.entry(0)["mask"].shape == (8, 8, 8)
    with pytest.raises(KeyError, match="no entry for study='c'"):
        s.index("c")


# ----------------------------------------------------------------------------- the folder
def _run(root: Path) -> Path:
    run = root / "pretrain" / "r1"
    write_config(run, {"b": 1, "a": {"z": 2, "y": 3}})
    ck = run / "checkpoints"
    _ckpt(ck, 3)
    _ckpt(ck, 6)
    _ckpt(ck, 9, train_state=False)  # a write killed before the training state
    (ck / "latest").write_text("step_0000009\n")
    views = _views(np.random.default_rng(2))
    for step in (0, 3, 6):
        write_samples(
            run,
            step,
            {
                **{k: v[:, 0] for k, v in views.items()},
                "study": np.asarray(["a", "b"]),
                "modality": np.asarray(["t1", "t1"]),
            },
        )
    MetricsCSV(run).append({"step": 1, "loss": 0.5})
    return run


def test_run_folder_reads_only_complete_checkpoints(tmp_path: Path) -> None:
    run = RunFolder(_run(tmp_path))
    assert run.name == "pretrain/r1" and run.config == {"a": {"y": 3, "z": 2}, "b": 1}
    assert (run.path / "config.json").read_text().startswith('{\n  "a"')  # sorted, indent 2
    assert run.checkpoint_steps() == [3, 6] and run.sample_steps() == [0, 3, 6]
    assert run.steps() == [0, 3, 6]
    assert run.checkpoint().name == "step_0000006"  # not the incomplete one latest names
    with pytest.raises(FileNotFoundError, match="no complete checkpoint for step 9"):
        run.checkpoint(9)
    assert run.samples().step == 6 and run.samples(0).step == 0
    assert list(run.metrics().columns) == ["step", "loss"]
    assert not run.done and run.results == {}
    write_json(run.path / "results.json", {"steps": 6})
    mark_done(run.path)
    assert run.done and is_done(run.path) and read_results(run.path) == {"steps": 6}
    info = load_run(run.path)
    assert info["done"] and info["config"] == read_config(run.path) and len(info["metrics"]) == 1
    assert [p.name for p in info["samples"]] == [f"step_{s:07d}.npz" for s in (0, 3, 6)]
    assert "steps=[0, 3, 6]" in repr(run)


def test_find_runs_and_what_is_not_a_run(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (tmp_path / "pretrain" / "bare" / "checkpoints").mkdir(parents=True)
    assert [r.path for r in find_runs(tmp_path)] == [run]  # two levels deep, with samples
    every = find_runs(tmp_path / "pretrain", need_samples=False)
    assert {r.path.name for r in every} == {"r1", "bare"}
    assert find_runs(tmp_path / "nothing") == []
    assert is_run_folder(run) and not is_run_folder(tmp_path)
    with pytest.raises(NotADirectoryError, match="not a run folder"):
        RunFolder(tmp_path)
    assert read_config(tmp_path) is None and read_results(tmp_path) is None


def test_runs_imports_no_other_room() -> None:
    code = (
        "import json, sys, mmlib.runs; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mmlib.'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    mods = json.loads(out.stdout)
    allowed = ("mmlib.runs", "mmlib.modalities", "mmlib.configs")
    others = [m for m in mods if not m.startswith(allowed)]
    assert others == []
