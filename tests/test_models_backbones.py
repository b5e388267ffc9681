"""Backbones: the shared interface, presets, input checks (``mmlib.models``)."""

from __future__ import annotations

import pytest
import torch

from mmlib.configs.scales import SCALES
from mmlib.models import BACKBONE_PRESETS, BACKBONES, build_backbone

torch.set_num_threads(1)
NAMES = list(BACKBONES)


def test_presets_cover_every_scale_and_backbone() -> None:
    assert set(BACKBONE_PRESETS) == set(SCALES)
    for scale in SCALES:
        assert set(BACKBONE_PRESETS[scale]) == set(NAMES)


def test_paper_presets_are_the_released_architectures() -> None:
    uni = build_backbone("uniformer", **BACKBONE_PRESETS["paper"]["uniformer"])
    assert uni.size["widths"] == [64, 128, 320, 512] and uni.size["depths"] == [3, 4, 8, 3]
    unet = build_backbone("unet", **BACKBONE_PRESETS["paper"]["unet"])
    assert unet.feature_channels == [64, 128, 256, 256]
    assert unet.encoder.stem.out_channels == 32


@pytest.mark.parametrize("name", NAMES)
def test_interface_at_smoke_size(name: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, **BACKBONE_PRESETS["smoke"][name])
    x = torch.randn(2, 1, 32, 32, 32)
    recon, feats = net(x)
    assert recon.shape == (2, 1, 32, 32, 32)
    assert len(feats) == len(net.feature_channels) == len(net.feature_strides)
    ordered = net.features_in_input_order(feats)
    for f, c, s in zip(ordered, net.feature_channels, net.feature_strides):
        assert f.shape == (2, c, 32 // s, 32 // s, 32 // s)
    assert net.feature_strides == sorted(net.feature_strides)
    recon.square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert torch.equal(net.decode(feats), recon)


@pytest.mark.parametrize("name", NAMES)
def test_size_rebuilds_the_same_network(name: str) -> None:
    net = build_backbone(name, in_channels=2, out_channels=3, **BACKBONE_PRESETS["smoke"][name])
    again = build_backbone(net.name, **net.size)
    assert again.size == net.size
    a, b = net.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    recon, _ = again(torch.zeros(1, 2, 32, 32, 32))
    assert recon.shape == (1, 3, 32, 32, 32)


def test_uniformer_non_cubic_input_keeps_axis_order() -> None:
    net = build_backbone("uniformer", **BACKBONE_PRESETS["smoke"]["uniformer"]).eval()
    x = torch.randn(1, 1, 16, 32, 48)
    with torch.no_grad():
        recon, feats = net(x)
    assert recon.shape == x.shape
    assert feats[0].shape == (1, 1, 48, 16, 32)  # released quirk: (B, C, Z, X, Y)
    assert torch.equal(net.features_in_input_order(feats)[0], x)
    assert feats[-1].shape == (1, 128, 3, 1, 2)


@pytest.mark.parametrize(
    "name,shape",
    [
        ("unet", (1, 1, 20, 16, 16)),
        ("uniformer", (1, 1, 32, 32, 24)),
        ("swinunetr", (1, 1, 48, 32, 32)),
    ],
)
def test_rejects_sizes_the_architecture_cannot_take(name: str, shape: tuple[int, ...]) -> None:
    net = build_backbone(name, **BACKBONE_PRESETS["smoke"][name])
    with pytest.raises(ValueError, match="multiple of"):
        net.encode(torch.zeros(shape))


def test_ill_arguments() -> None:
    net = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    with pytest.raises(ValueError, match="channels"):
        net.encode(torch.zeros(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, C, X, Y, Z\)"):
        net.encode(torch.zeros(1, 16, 16, 16))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet")
    with pytest.raises(ValueError, match="num_groups"):
        build_backbone("unet", base_channels=12)
    with pytest.raises(ValueError, match="head_dim"):
        build_backbone("uniformer", widths=[16, 32, 48, 64], head_dim=32)
    with pytest.raises(ValueError, match="multiple of 12"):
        build_backbone("swinunetr", feature_size=16)
    with pytest.raises(ValueError, match="BACKBONE_PRESETS"):
        build_backbone("unet", widths=[1, 2, 3, 4])


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_3d_gives_the_same_numbers(name: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, **BACKBONE_PRESETS["smoke"][name]).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        ref_recon, ref_feats = net(x)
        net = net.to(memory_format=torch.channels_last_3d)
        recon, feats = net(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(recon, ref_recon, rtol=1e-4, atol=1e-5)
    for a, b in zip(feats, ref_feats):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if name == "uniformer":  # stays channels-last through the attention stages (no copies)
        assert feats[3].is_contiguous(memory_format=torch.channels_last_3d)
