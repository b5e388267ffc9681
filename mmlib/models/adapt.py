"""Adapt a (pre-trained) backbone to a downstream task's number of input channels.

Pre-training is single-channel; a downstream task feeds its modalities as channels. The first
layer is either *inflated* (its kernel summed over the old input channels, repeated over the new
ones and divided by their number, so that a constant input gives the same response) or
*re-initialised* (a fresh layer of the same kind).

Examples::

    >>> import torch
    >>> from mmlib.models import build_backbone
    >>> net = adapt_in_channels(build_backbone("unet", base_channels=8), 4, mode="inflate")
    >>> net.in_channels, tuple(net.first_conv().weight.shape)
    (4, (8, 4, 3, 3, 3))
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from mmlib.models.base import Backbone

ADAPT_MODES: tuple[str, ...] = ("inflate", "reinit")


def adapt_in_channels(
    backbone: Backbone,
    channels: int,
    mode: str = "inflate",
    generator: torch.Generator | None = None,
) -> Backbone:
    """Give ``backbone`` ``channels`` input channels, in place, and return it.

    Args:
        backbone: any mmlib backbone.
        channels: the new number of input channels (>= 1).
        mode: ``"inflate"`` (repeat the 1-channel kernel over the channels and divide by their
            number; bias kept) or ``"reinit"`` (a freshly initialised layer). Defaults to
            ``"inflate"``.
        generator: random generator for ``"reinit"``; defaults to torch's global one.

    Returns:
        ``backbone``, whose ``in_channels`` and ``size["in_channels"]`` are updated.

    Raises:
        ValueError: When ``mode`` is unknown or ``channels`` < 1.
    """
    if mode not in ADAPT_MODES:
        raise ValueError(
            f"adapt_in_channels: mode should be one of {', '.join(ADAPT_MODES)}, got {mode!r}."
        )
    if channels < 1:
        raise ValueError(f"adapt_in_channels: channels should be >= 1, got {channels}.")
    old = backbone.first_conv()
    if not isinstance(old, nn.Conv3d):
        raise ValueError(
            f"adapt_in_channels: {backbone.name}'s first layer is a {type(old).__name__}, "
            "not a Conv3d"
        )
    new = nn.Conv3d(
        channels,
        old.out_channels,
        kernel_size=cast(tuple[int, int, int], old.kernel_size),
        stride=cast(tuple[int, int, int], old.stride),
        padding=cast(str | tuple[int, int, int], old.padding),
        dilation=cast(tuple[int, int, int], old.dilation),
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        if mode == "inflate":
            kernel = old.weight.sum(dim=1, keepdim=True)
            new.weight.copy_(kernel.repeat(1, channels, 1, 1, 1) / channels)
            if old.bias is not None and new.bias is not None:
                new.bias.copy_(old.bias)
        else:
            bound = 1.0 / (channels * int(torch.tensor(old.kernel_size).prod())) ** 0.5
            new.weight.uniform_(-bound, bound, generator=generator)
            if new.bias is not None:
                new.bias.uniform_(-bound, bound, generator=generator)
    backbone.set_first_conv(new)
    backbone.in_channels = channels
    backbone.size["in_channels"] = channels
    if backbone.feature_strides and backbone.feature_strides[0] == 1:
        backbone.feature_channels[0] = channels
    return backbone


__all__ = ["ADAPT_MODES", "adapt_in_channels"]
