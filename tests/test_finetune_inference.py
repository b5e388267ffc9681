"""Sliding-window inference on volumes of any size, and the segmentation losses."""

from __future__ import annotations

import pytest
import torch

from mmlib.engine.losses import segmentation_loss
from mmlib.evaluate.inference import predict_volume
from mmlib.models import BACKBONE_PRESETS, SegmentationNet, build_backbone
from mmlib.tasks import RegionSpec, TaskSpec

torch.set_num_threads(1)


def test_predict_volume_odd_sizes_matches_direct_forward() -> None:
    torch.manual_seed(0)
    net = SegmentationNet(
        build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"]), 1, 2, "unet", seed=0
    ).eval()
    x = torch.rand(
        1, 1, 21, 30, 17
    )  # not multiples of the stride 8, smaller than the window on one axis
    out = predict_volume(net, x, (16, 16, 16), overlap=0.25)
    assert out.shape == (1, 2, 21, 30, 17) and torch.isfinite(out).all()
    # a single window covering the padded volume gives the direct forward pass of the padded input
    y = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        direct = net(y)
    assert torch.allclose(predict_volume(net, y, (16, 16, 16)), direct, atol=1e-5)


@pytest.mark.parametrize(
    "kind,names",
    [("brats", ("TC", "WT", "ET")), ("binary", ("lesion",)), ("classes", ("CSF", "GM", "WM"))],
)
def test_losses_decrease_towards_the_target(kind: str, names: tuple[str, ...]) -> None:
    regions = RegionSpec(names, kind, "brats2023")
    spec = TaskSpec("t", "segmentation", ("t1",), regions)
    label = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    label[..., 2:6, 2:6, 2:6] = 2
    label[..., 3:5, 3:5, 3:5] = 3
    if kind == "binary":
        label = (label > 0).long()
    good = torch.full((1, regions.out_channels, 8, 8, 8), -8.0)
    t = regions.targets(label)
    if regions.sigmoid:
        good = torch.where(t > 0, 8.0, -8.0)
    else:
        good = (
            torch.nn.functional.one_hot(label[:, 0], regions.out_channels)
            .permute(0, 4, 1, 2, 3)
            .float()
            * 16
            - 8
        )
    bad = -good
    lg, lb = segmentation_loss(spec, good, label), segmentation_loss(spec, bad, label)
    assert lg < 0.05 < lb
    # deep supervision: a list, coarser outputs scored on downsampled labels
    coarse = good[..., ::2, ::2, ::2]  # what nearest downsampling of the labels gives
    assert segmentation_loss(spec, [good, coarse], label) < 0.2


def test_predict_volume_full_window() -> None:
    net = SegmentationNet(
        build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"]), 1, 1, "unet", seed=0
    ).eval()
    x = torch.rand(1, 1, 19, 24, 13)
    out = predict_volume(net, x, "full")
    padded = torch.nn.functional.pad(x, (0, 3, 0, 0, 0, 5))  # to multiples of 8: 24, 24, 16
    with torch.no_grad():
        direct = net(padded)[:, :, :19, :24, :13]
    assert out.shape == (1, 1, 19, 24, 13) and torch.allclose(out, direct, atol=1e-5)


def test_predict_volume_bf16_autocast_returns_fp32_logits_close_to_fp32() -> None:
    """eval.amp=bf16: float32 logits of the same shape, the same labels almost everywhere."""
    torch.manual_seed(0)
    net = SegmentationNet(
        build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"]), 1, 2, "unet", seed=0
    ).eval()
    x = torch.rand(1, 1, 24, 20, 17)
    full = predict_volume(net, x, "full")
    half = predict_volume(net, x, "full", amp="bf16")
    assert half.dtype == torch.float32 and half.shape == full.shape == (1, 2, 24, 20, 17)
    assert not torch.equal(half, full)  # autocast did run in bf16
    assert ((half > 0) == (full > 0)).float().mean() > 0.99
    with pytest.raises(ValueError, match="train.amp"):
        predict_volume(net, x, "full", amp="fp8")
