"""mmlib.runs: the one reader of a run's checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmlib.runs import (
    checkpoint_at,
    checkpoint_folder,
    find_latest,
    is_complete,
    latest_checkpoint,
    step_name,
    step_of,
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
