"""mmlib's checkpoint format: safetensors + JSON folders, safe .pt loading, exports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mmlib.cli import main as mmlib_main
from mmlib.models import (
    BACKBONE_PRESETS,
    UnsafeCheckpointError,
    build_backbone,
    export_encoder,
    export_templates_nifti,
    load_checkpoint,
    load_encoder,
    load_pretrained,
    released_layout,
    released_template_affine,
    safe_torch_load,
    save_checkpoint,
    save_pretrained,
)
from mmlib.models.released import BRATS_SRI24_AFFINE, head_centred_affine, reference_state_dict

torch.set_num_threads(1)


class _RunsCode:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_roundtrip_and_atomic_replace(tmp_path: Path) -> None:
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.long)}
    target = tmp_path / "ckpt"
    save_checkpoint(target, state, {"step": 7, "affine": np.eye(4)})
    save_checkpoint(target, {"a": torch.zeros(1)}, {"step": 8})
    got, meta = load_checkpoint(target)
    assert meta["step"] == 8 and "mmlib_version" in meta
    assert list(got) == ["a"] and torch.equal(got["a"], torch.zeros(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in target.iterdir()) == ["meta.json", "model.safetensors"]


def test_failed_save_leaves_the_old_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    save_checkpoint(target, {"a": torch.ones(1)}, {"step": 1})
    with pytest.raises(ValueError, match="not a tensor"):
        save_checkpoint(target, {"a": [1, 2]}, {"step": 2})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        save_checkpoint(target, {"a": torch.ones(1)}, {"step": object()})
    assert load_checkpoint(target)[1]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_shared_storage_is_saved(tmp_path: Path) -> None:
    base = torch.arange(4.0)
    save_checkpoint(tmp_path / "c", {"x": base, "view": base[:2]}, {})
    got, _ = load_checkpoint(tmp_path / "c")
    assert got["view"].tolist() == [0.0, 1.0]


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an mmlib checkpoint"):
        load_checkpoint(tmp_path)


def test_safe_torch_load_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "hook": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "system" in message
    assert not marker.exists()


def test_safe_torch_load_reads_tensors(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.arange(3)}, "epoch": 5}, path)
    obj = safe_torch_load(path)
    assert obj["epoch"] == 5 and obj["state_dict"]["w"].tolist() == [0, 1, 2]
    with pytest.raises(FileNotFoundError):
        safe_torch_load(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ["unet", "uniformer", "swinunetr"])
def test_pretrained_roundtrip(tmp_path: Path, name: str) -> None:
    torch.manual_seed(1)
    net = build_backbone(name, **BACKBONE_PRESETS["smoke"][name]).eval()
    templates = torch.rand(8, 10, 12, 14)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    save_pretrained(
        tmp_path / "p", net, templates, ["flair", "t1"], affine, step=12, config={"lr": 3e-4}
    )
    state, meta = load_checkpoint(tmp_path / "p")
    assert set(meta) >= {
        "model",
        "modalities",
        "template_affine",
        "step",
        "config",
        "mmlib_version",
    }
    assert "templates.volumes" in state and all(
        k.startswith(("backbone.", "templates.")) for k in state
    )
    back, tmpl, aff, meta = load_pretrained(tmp_path / "p")
    assert meta["step"] == 12 and meta["model"]["name"] == name
    assert torch.equal(tmpl, templates) and np.array_equal(aff, affine)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x)[0], net(x)[0])


def test_encoder_export(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = build_backbone("uniformer", **BACKBONE_PRESETS["smoke"]["uniformer"]).eval()
    export_encoder(net, tmp_path / "enc", {"source": "test"})
    state, meta = load_checkpoint(tmp_path / "enc")
    assert all(k.startswith("encoder.") for k in state) and not any("decoder" in k for k in state)
    assert meta["feature_channels"] == net.feature_channels and meta["feature_permutation"] == [
        0,
        1,
        3,
        4,
        2,
    ]
    back, _ = load_encoder(tmp_path / "enc")
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for a, b in zip(back.eval().encode(x), net.encode(x)):
            assert torch.equal(a, b)


def test_released_template_affine_points_at_the_same_world_positions() -> None:
    ras = released_template_affine()
    assert nib.aff2axcodes(ras) == ("R", "A", "S")
    assert nib.aff2axcodes(BRATS_SRI24_AFFINE) == ("L", "P", "S")
    # RAS voxel (i, j, k) is BraTS voxel (239 - i, 239 - j, k): same world point.
    for ijk in [(0, 0, 0), (10, 200, 77), (239, 239, 154)]:
        lps = (239 - ijk[0], 239 - ijk[1], ijk[2])
        np.testing.assert_allclose(ras @ [*ijk, 1], BRATS_SRI24_AFFINE @ [*lps, 1])


def test_templates_nifti_carry_the_true_affine(tmp_path: Path) -> None:
    vols = torch.rand(2, 6, 5, 4)
    affine = released_template_affine()
    paths = export_templates_nifti(vols, affine, tmp_path, ["t1", "t2"])
    assert [p.name for p in paths] == ["template_t1.nii.gz", "template_t2.nii.gz"]
    img = nib.load(str(paths[1]))
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(np.asarray(img.dataobj), vols[1].numpy())
    with pytest.raises(ValueError, match="modality names"):
        export_templates_nifti(vols, affine, tmp_path, ["t1"])


def test_weights_import_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = dict(BACKBONE_PRESETS["smoke"]["uniformer"], in_channels=1, out_channels=1)
    layout = [
        (k, (8, 16, 16, 16) if k == "rep_template" else s)
        for k, s in released_layout("uniformer", size)
    ]
    state = reference_state_dict(layout, seed=5)
    src = tmp_path / "released.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, src)
    out, nii = tmp_path / "mm", tmp_path / "nii"
    argv = [
        "weights",
        "import",
        str(src),
        "--arch",
        "uniformer",
        "--out",
        str(out),
        "--templates-nifti",
        str(nii),
    ]
    code = mmlib_main(argv)
    assert code == 0
    assert "16 dropped" in capsys.readouterr().out
    net, templates, affine, meta = load_pretrained(out)
    assert torch.equal(templates, state["rep_template"])
    np.testing.assert_allclose(affine, head_centred_affine((16, 16, 16)))
    np.testing.assert_allclose(meta["template_world_affine"], released_template_affine())
    np.testing.assert_allclose(
        nib.load(str(nii / "template_t1.nii.gz")).affine, released_template_affine()
    )
    assert meta["modalities"][0] == "flair" and len(meta["import_report"]["dropped"]) == 16
    assert torch.equal(
        net.state_dict()["encoder.norm.weight"], state["encoder.uniformer.norm.weight"]
    )
    assert len(list(nii.glob("template_*.nii.gz"))) == 8
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, bad)
    assert (
        mmlib_main(["weights", "import", str(bad), "--arch", "unet", "--out", str(tmp_path / "x")])
        == 1
    )
    assert "check --arch" in capsys.readouterr().err
    json.dumps(meta)


def test_weights_map_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert mmlib_main(["weights", "map", "--arch", "unet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(released_layout("unet"))
    assert lines[1].split()[0] == "conv1a.weight" and lines[1].split()[-1] == "encoder.stem.weight"
    assert mmlib_main(["weights", "map", "--arch", "uniformer"]) == 0
    assert sum("(dropped:" in line for line in capsys.readouterr().out.splitlines()) == 16


def test_head_centred_affine_matches_the_proxy_templates() -> None:
    from mmlib.proxy.templates import Templates

    rep = torch.zeros(8, 6, 5, 4)
    np.testing.assert_allclose(
        head_centred_affine(rep.shape), Templates.from_released(rep).affine, atol=1e-6
    )
    centre = head_centred_affine((240, 240, 155)) @ [119.5, 119.5, 77, 1]
    np.testing.assert_allclose(centre[:3], 0.0)
