"""Segmentation decoders (U-Net, UNETR-style) and the classifier head on mmlib backbones."""

from __future__ import annotations

import pytest
import torch

from mmlib.models import (
    BACKBONE_PRESETS,
    ClassifierNet,
    SegmentationNet,
    adapt_in_channels,
    build_backbone,
    default_decoder,
)

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "name,decoder", [("unet", "unet"), ("unet", "unetr"), ("uniformer", "unetr")]
)
def test_segmentation_shapes_and_grad(name: str, decoder: str) -> None:
    torch.manual_seed(0)
    bb = adapt_in_channels(
        build_backbone(name, **BACKBONE_PRESETS["smoke"][name]), 3, mode="inflate"
    )
    net = SegmentationNet(bb, 3, 4, decoder=decoder, deep_supervision=True, seed=0)
    x = torch.rand(1, 3, 32, 32, 32)
    outs = net(x)
    assert isinstance(outs, list) and outs[0].shape == (1, 4, 32, 32, 32)
    assert all(o.shape[1] == 4 for o in outs) and outs[1].shape[-1] > outs[-1].shape[-1]
    sum(o.mean() for o in outs).backward()
    assert bb.first_conv().weight.grad is not None and bb.first_conv().weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (1, 4, 32, 32, 32)  # one tensor at eval time


def test_uniformer_features_in_input_order() -> None:
    """A non-cubic input: the decoder must restore the input's axis order (UniFormer permutes)."""
    bb = adapt_in_channels(build_backbone("uniformer", **BACKBONE_PRESETS["smoke"]["uniformer"]), 2)
    net = SegmentationNet(bb, 2, 1, decoder="unetr", seed=0).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 2, 32, 64, 48)).shape == (1, 1, 32, 64, 48)


def test_decoder_seeded_independently_of_encoder() -> None:
    a = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    torch.manual_seed(99)
    b = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    na, nb = SegmentationNet(a, 1, 2, "unet", seed=5), SegmentationNet(b, 1, 2, "unet", seed=5)
    dec = [k for k in na.state_dict() if not k.startswith("backbone.")]
    assert dec and all(torch.equal(na.state_dict()[k], nb.state_dict()[k]) for k in dec)
    nc = SegmentationNet(a, 1, 2, "unet", seed=6)
    assert any(not torch.equal(na.state_dict()[k], nc.state_dict()[k]) for k in dec)
    ca, cb = ClassifierNet(a, 3, seed=1), ClassifierNet(b, 3, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(ca.head.parameters(), cb.head.parameters()))
    assert ca(torch.rand(2, 1, 32, 32, 32)).shape == (2, 3)


def test_bad_arguments() -> None:
    bb = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    with pytest.raises(ValueError, match="decoder should be"):
        SegmentationNet(bb, 1, 2, decoder="fpn")
    with pytest.raises(ValueError, match="n_classes"):
        ClassifierNet(bb, 1)
    assert default_decoder("unet") == "unet" and default_decoder("uniformer") == "unetr"


def test_head_bias_sets_every_output_head() -> None:
    bb = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    net = SegmentationNet(bb, 1, 3, "unet", deep_supervision=True, seed=0, head_bias=-3.0)
    heads = [net.head, *net.aux_heads]
    assert len(heads) > 1 and all(torch.all(h.conv.conv.bias == -3.0) for h in heads)
    plain = SegmentationNet(
        build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"]), 1, 3, "unet", seed=0
    )
    assert not torch.all(plain.head.conv.conv.bias == -3.0)
