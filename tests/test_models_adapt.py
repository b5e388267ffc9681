"""Channel adaptation of backbones for downstream tasks (1 -> C input channels)."""

from __future__ import annotations

import pytest
import torch

from mmlib.models import BACKBONE_PRESETS, adapt_in_channels, build_backbone

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["unet", "uniformer", "swinunetr"])
def test_inflate_keeps_the_response_to_a_repeated_channel(name: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, **BACKBONE_PRESETS["smoke"][name]).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        before = net.encode(x)
        adapt_in_channels(net, 4, mode="inflate")
        after = net.encode(x.repeat(1, 4, 1, 1, 1))
    assert net.in_channels == 4 and net.size["in_channels"] == 4
    assert net.first_conv().weight.shape[1] == 4
    start = 1 if net.feature_strides[0] == 1 else 0  # UniFormer's first output is the input
    if start:
        assert net.feature_channels[0] == 4 and after[0].shape[1] == 4
    for a, b in zip(after[start:], before[start:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    rebuilt = build_backbone(net.name, **net.size)
    rebuilt.load_state_dict(net.state_dict())


def test_reinit_draws_a_fresh_layer() -> None:
    net = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    old = net.first_conv().weight.detach().clone()
    adapt_in_channels(net, 3, mode="reinit", generator=torch.Generator().manual_seed(0))
    w = net.first_conv().weight.detach()
    assert w.shape == (old.shape[0], 3, *old.shape[2:])
    assert not torch.allclose(w[:, :1], old / 3)
    bound = 1 / (3 * 27) ** 0.5
    assert float(w.abs().max()) <= bound and float(w.std()) > bound / 4
    again = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    adapt_in_channels(again, 3, mode="reinit", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.first_conv().weight, w)
    recon, _ = net(torch.zeros(1, 3, 16, 16, 16))
    assert recon.shape == (1, 1, 16, 16, 16)


def test_ill_arguments() -> None:
    net = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    with pytest.raises(ValueError, match="mode should be one of"):
        adapt_in_channels(net, 2, mode="copy")
    with pytest.raises(ValueError, match=">= 1"):
        adapt_in_channels(net, 0)
