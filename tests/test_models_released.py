"""Released BrainMVP weights: the key layout, the load report, and the numerical proof.

The numbers come from ``shared/reference/brainmvp_reference.json`` (see its README): each network
is filled with the documented deterministic weights through mmlib's key mapping, run on the
documented input, and its encoder outputs and reconstruction are compared with the reference
(rtol 1e-3 on the sampled values, 1e-5 on mean and std).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmlib.models import build_backbone, load_released, released_key_map, released_layout
from mmlib.models.registry import BACKBONE_PRESETS
from mmlib.models.released import dropped_reason, reference_state_dict
from mmlib.paths import REPO_ROOT

torch.set_num_threads(1)
# A copy of ../shared/reference/brainmvp_reference.json ships in tests/data so CI needs no
# sibling folder.
REFERENCE = REPO_ROOT / "tests" / "data" / "brainmvp_reference.json"
ARCHS = ["unet", "uniformer"]


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.is_file():
        pytest.fail(
            f"{REFERENCE} is missing: the shared reference folder must sit beside the checkout"
        )
    return json.loads(REFERENCE.read_text())


def _layout(ref: dict, arch: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(s)) for k, s in ref[arch]["state_dict"]]


@pytest.mark.parametrize("arch", ARCHS)
def test_layout_is_the_released_one_in_order(reference: dict, arch: str) -> None:
    assert released_layout(arch) == _layout(reference, arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_released_key_is_mapped_or_dropped_with_a_reason(reference: dict, arch: str) -> None:
    table = released_key_map(arch)
    model = build_backbone(arch, **BACKBONE_PRESETS["paper"][arch])
    own = model.state_dict()
    for key, shape in _layout(reference, arch):
        if key in table:
            assert dropped_reason(arch, key) is None
            if key != "rep_template":
                assert tuple(own[table[key]].shape) == shape, key
        else:
            assert dropped_reason(arch, key), key
    assert set(table.values()) - {"templates.volumes"} == set(own)


def _compare(name: str, tensor: torch.Tensor, summary: dict) -> None:
    assert list(tensor.shape) == summary["shape"], name
    flat = tensor.detach().contiguous().reshape(-1).double()
    got = flat[torch.tensor(summary["samples_at"])].numpy()
    np.testing.assert_allclose(
        got, summary["samples"], rtol=1e-3, atol=0, err_msg=f"{name} samples"
    )
    np.testing.assert_allclose(
        flat.mean().item(), summary["mean"], rtol=1e-5, err_msg=f"{name} mean"
    )
    np.testing.assert_allclose(flat.std().item(), summary["std"], rtol=1e-5, err_msg=f"{name} std")


@pytest.mark.parametrize("arch", ARCHS)
def test_numbers_match_the_reference(reference: dict, arch: str) -> None:
    ref = reference[arch]
    state = reference_state_dict(ref["state_dict"])
    checkpoint = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1500}
    model, templates, report = load_released(checkpoint, arch)
    assert report.stripped_prefix == "module."
    assert set(report.used) | set(report.dropped) == set(state)
    assert templates is not None and torch.equal(templates, state["rep_template"])
    assert not model.training
    x = torch.randn((1, 1, 96, 96, 96), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.encode(x)
        recon = model.decode(features)
    assert len(features) == len(ref["encoder_outputs"])
    for i, (f, summary) in enumerate(zip(features, ref["encoder_outputs"])):
        _compare(f"{arch} encoder output {i}", f, summary)
    _compare(f"{arch} reconstruction", recon, ref["reconstruction"])


def _small_released(arch: str, in_channels: int = 1) -> tuple[dict, dict]:
    size = dict(BACKBONE_PRESETS["smoke"][arch], in_channels=in_channels, out_channels=in_channels)
    if arch == "unet":
        size["encoder_blocks"] = [1, 2, 2, 4]
    layout = [
        (k, (8, 24, 24, 16) if k == "rep_template" else s) for k, s in released_layout(arch, size)
    ]
    return reference_state_dict(layout, seed=3), size


@pytest.mark.parametrize("arch", ARCHS)
def test_load_from_file_infers_the_size_and_reports_every_key(tmp_path: Path, arch: str) -> None:
    state, size = _small_released(arch, in_channels=4)
    path = tmp_path / "released.pt"
    torch.save({"state_dict": state, "optimizer": {"lr": 3e-4}}, path)
    model, templates, report = load_released(path, arch)
    assert model.in_channels == 4 and report.size["in_channels"] == 4
    assert report.stripped_prefix == ""
    assert templates.shape == (8, 24, 24, 16)
    assert len(report.used) + len(report.dropped) == len(state)
    assert report.summary().splitlines()[0].startswith(f"{arch} from {path}")
    table = released_key_map(arch, report.size)
    own = model.state_dict()
    for key, target in report.used.items():
        if target != "templates.volumes":
            assert table[key] == target and torch.equal(own[target], state[key])


@pytest.mark.parametrize("arch", ARCHS)
def test_mismatches_are_errors(arch: str) -> None:
    state, _ = _small_released(arch)
    with pytest.raises(ValueError, match="neither used nor known"):
        load_released({**state, "head.fc.weight": torch.zeros(2)}, arch)
    victim = next(k for k in state if k.endswith("bias") and "norm" not in k)
    with pytest.raises(ValueError, match="missing from the checkpoint"):
        load_released({k: v for k, v in state.items() if k != victim}, arch)
    with pytest.raises(ValueError, match="has shape"):
        load_released({**state, victim: torch.zeros(state[victim].numel() + 1)}, arch)
    other = "uniformer" if arch == "unet" else "unet"
    with pytest.raises(ValueError, match="check --arch"):
        load_released(state, other)
    with pytest.raises(ValueError, match="unknown released architecture"):
        load_released(state, "swinunetr")


@pytest.mark.parametrize(
    "arch,shape", [("unet", (1, 1, 40, 48, 56)), ("uniformer", (1, 1, 32, 48, 64))]
)
def test_other_accepted_input_sizes(arch: str, shape: tuple[int, ...]) -> None:
    model = build_backbone(arch, **BACKBONE_PRESETS["paper"][arch]).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        recon, feats = model(x)
    assert recon.shape == x.shape and torch.isfinite(recon).all()
    in_order = model.features_in_input_order(feats)
    for f, c, s in zip(in_order, model.feature_channels, model.feature_strides):
        assert f.shape == (1, c, *(n // s for n in shape[2:]))
