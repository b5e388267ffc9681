"""Shipped pre-training checkpoints: packing, the hash check, resolving ``pretrained: shipped``,
and the checkpoints that ship with mmlib."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mmlib.models.shipped as S
from mmlib.cli import main as cli_main
from mmlib.engine.config import load_config
from mmlib.engine.initialise import checkpoint_identity, resolve_init
from mmlib.models import build_backbone
from mmlib.models.checkpoints import load_pretrained, save_pretrained
from mmlib.proxy.brainmvp import OBJECTIVES


def _source(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    backbone = build_backbone("unet", in_channels=1, base_channels=8, encoder_blocks=[1, 1, 1, 1])
    templates = torch.rand(2, 6, 7, 5)
    return save_pretrained(
        tmp_path / "src",
        backbone,
        templates,
        ["flair", "t1"],
        np.eye(4),
        step=7,
        config={"schedule": {"epochs": 3}},
    )


def test_pack_keeps_the_backbone_rounds_what_it_is_told_and_records_its_provenance(
    tmp_path: Path,
) -> None:
    src = _source(tmp_path)
    b0, t0, _, _ = load_pretrained(src)
    exact = S.pack_checkpoint(src, tmp_path / "exact", dtype="float32", command=["make it"])
    half = S.pack_checkpoint(src, tmp_path / "half", dtype="float16", templates=None)
    b1, t1, _, meta = load_pretrained(exact)
    for (k, v0), v1 in zip(b0.state_dict().items(), b1.state_dict().values()):
        assert torch.equal(v0, v1), k  # float32: the same weights bit for bit
    assert t1 is not None and t1.dtype == torch.float32 and torch.allclose(t1, t0, atol=1e-3)
    ship = meta["shipped"]
    assert ship["command"] == ["make it"] and ship["dtype"] == {
        "backbone": "float32",
        "templates": "float16",
    }
    # the source digest is the one a fine-tuning run of the source records
    assert ship["source_weights"] == checkpoint_identity(src)["weights"]
    b2, t2, _, meta2 = load_pretrained(half)
    assert t2 is None and meta2["shipped"]["dtype"]["templates"] is None
    w0, w2 = next(iter(b0.state_dict().values())), next(iter(b2.state_dict().values()))
    assert w2.dtype == torch.float32 and not torch.equal(w0, w2)  # rounded, loaded as float32
    assert torch.allclose(w0, w2, atol=1e-2)
    assert meta["step"] == 7 and meta["config"]["schedule"]["epochs"] == 3
    with pytest.raises(ValueError, match="dtype 'int8'"):
        S.pack_checkpoint(src, tmp_path / "bad", dtype="int8")


def test_a_changed_shipped_file_is_an_error_that_says_how_to_restore_it(tmp_path: Path) -> None:
    folder = S.pack_checkpoint(
        _source(tmp_path), tmp_path / "demo" / "brainmvp", command=["regenerate"]
    )
    S.verify_shipped(folder)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"SHA-256 .* is not the recorded .*regenerate"):
        S.shipped_checkpoint("demo", "brainmvp", root=tmp_path)


def test_pretrained_shipped_resolves_an_objective_to_its_shipped_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = S.pack_checkpoint(_source(tmp_path), tmp_path / "smoke" / "mim")
    monkeypatch.setattr(S, "SHIPPED_ROOT", tmp_path)
    cfg = load_config("smoke", {"init": "mim", "pretrained": "shipped"}, kind="finetune")
    assert resolve_init(cfg, progress=False) == ("mim", folder)
    cfg = load_config("smoke", {"init": "cmr_only", "pretrained": "shipped"}, kind="finetune")
    with pytest.raises(FileNotFoundError, match=r"shipped: smoke/mim\); set pretrained=train"):
        resolve_init(cfg, progress=False)
    cfg = load_config(
        "smoke",
        {"init": "mim", "pretrained": "shipped", "pretrain_overrides": {"schedule.epochs": 2}},
        kind="finetune",
    )
    with pytest.raises(ValueError, match="set pretrained=train"):
        resolve_init(cfg, progress=False)
    cfg = load_config("smoke", {"init": "mim", "pretrained": "download"}, kind="finetune")
    with pytest.raises(ValueError, match="train or shipped"):
        resolve_init(cfg, progress=False)


def test_the_checkpoints_shipped_with_mmlib_match_their_hashes_and_load(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = S.shipped_checkpoints()
    # every objective the demo preset fine-tunes from is shipped (the book pre-trains none)
    assert {r["objective"] for r in rows if r["scale"] == "demo"} >= {
        "brainmvp",
        "mim",
        "cmr_only",
        "md_only",
        "brainmvp_nocl",
    } and {r["objective"] for r in rows} <= set(OBJECTIVES)
    assert load_config("demo", kind="finetune")["pretrained"] == "shipped"
    for row in rows:
        backbone, templates, _, meta = load_pretrained(row["folder"])
        demo = load_config("demo", {"objective": row["objective"]}, kind="pretrain")
        assert meta["model"] == {"name": demo["model"]["name"], "size": meta["model"]["size"]}
        assert meta["config"]["schedule"] == demo["schedule"]  # the preset's own recipe
        assert meta["shipped"]["command"] and (templates is None) == (
            row["objective"] != "brainmvp"
        )
    assert cli_main(["weights", "shipped"]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == len(rows)
    # the held-out evidence names the shipped BrainMVP checkpoint's source weights
    ev = json.loads(
        (Path(S.__file__).parents[1] / "evidence" / "headline_heldout.json").read_text()
    )
    brainmvp = next(r for r in rows if r["scale"] == "demo" and r["objective"] == "brainmvp")
    assert brainmvp["source_weights"] in json.dumps(ev)


def test_a_run_from_a_float32_shipped_checkpoint_names_the_digest_it_was_packed_from(
    tmp_path: Path,
) -> None:
    from mmlib.evaluate.evidence import checkpoint_digest, source_digest

    src = _source(tmp_path)
    origin = checkpoint_identity(src)["weights"]
    for dtype in ("float32", "float16"):
        folder = S.pack_checkpoint(src, tmp_path / dtype, dtype=dtype)
        run = tmp_path / f"run-{dtype}"
        run.mkdir()
        ident = {"checkpoint": checkpoint_identity(folder), "init": "brainmvp"}
        (run / "identity.json").write_text(json.dumps(ident))
        own = checkpoint_digest(run)
        assert own == ident["checkpoint"]["weights"] != origin
        # float32: the source's backbone bit for bit, so evidence on the source speaks for it
        assert source_digest(run) == (origin if dtype == "float32" else own)
