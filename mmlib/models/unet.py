"""The residual GroupNorm 3D U-Net of BrainMVP, as an mmlib :class:`Backbone`.

The released network (``base_channels=32``): a 3³ stem convolution and one residual block at full
resolution, then three stride-2 3³ convolutions, each followed by residual blocks (2, 2 and 4 of
them). A residual block is pre-activation ``GroupNorm(8) -> ReLU -> Conv3d(3³)`` twice plus the
identity. The encoder returns the outputs of the three down-sampling convolutions and of the last
block (strides 2, 4, 8, 8; channels 2c, 4c, 8c, 8c). The pre-training decoder has no skips:
three times a 1×1 convolution halving the channels, nearest ×2 up-sampling and a residual block,
then a 1×1 output convolution. Inputs must be multiples of 8 in every spatial size.

Examples::

    >>> import torch
    >>> net = UNetBackbone(base_channels=8, encoder_blocks=(1, 1, 1, 1))
    >>> recon, feats = net(torch.zeros(1, 1, 16, 16, 16))
    >>> tuple(recon.shape), [tuple(f.shape[1:]) for f in feats][-1]
    ((1, 1, 16, 16, 16), (64, 2, 2, 2))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from mmlib.models.base import Backbone, as_int_tuple


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv2(relu(gn2(conv1(relu(gn1(x))))))``.

    Args:
        channels: input and output channels.
        num_groups: GroupNorm groups. Defaults to 8.
    """

    def __init__(self, channels: int, num_groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, X, Y, Z) -> (B, C, X, Y, Z)``."""
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        return x + h


class DownLevel(nn.Module):
    """A stride-2 3³ convolution doubling the channels, then residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int, blocks: int) -> None:
        super().__init__()
        self.down = nn.Conv3d(in_channels, out_channels, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(out_channels, num_groups) for _ in range(blocks)])


class UNetEncoder(nn.Module):
    """Encoder of :class:`UNetBackbone`; returns 4 features (strides 2, 4, 8, 8).

    The features are the outputs of the three down-sampling convolutions (before that level's
    residual blocks, as the released network returns them) and of the last residual block.
    """

    stem: nn.Module  # a Conv3d until adapt_in_channels replaces it

    def __init__(
        self, in_channels: int, base_channels: int, num_groups: int, blocks: Sequence[int]
    ) -> None:
        super().__init__()
        c = base_channels
        widths = [c, 2 * c, 4 * c, 8 * c]
        self.stem = nn.Conv3d(in_channels, c, 3, padding=1)
        self.stem_blocks = nn.Sequential(*[ResBlock(c, num_groups) for _ in range(blocks[0])])
        self.levels = nn.ModuleList(
            DownLevel(widths[i], widths[i + 1], num_groups, blocks[i + 1]) for i in range(3)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C_in, X, Y, Z)`` -> ``[(B, 2c, X/2, ..), (B, 4c, X/4, ..),
        (B, 8c, X/8, ..) x 2]``."""
        h = self.stem_blocks(self.stem(x))
        features = []
        for level in cast(Iterable[DownLevel], self.levels):
            h = level.down(h)
            features.append(h)
            h = level.blocks(h)
        features.append(h)
        return features


class UpLevel(nn.Module):
    """1×1 convolution, nearest ×2 up-sampling, residual blocks (no skip connection)."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int, blocks: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, out_channels, 1)
        self.blocks = nn.Sequential(*[ResBlock(out_channels, num_groups) for _ in range(blocks)])

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, X, Y, Z) -> (B, C_out, 2X, 2Y, 2Z)``."""
        return self.blocks(F.interpolate(self.proj(x), scale_factor=2, mode="nearest"))


class UNetDecoder(nn.Module):
    """No-skip pre-training decoder of :class:`UNetBackbone`: deepest feature -> full size."""

    def __init__(self, out_channels: int, base_channels: int, num_groups: int, blocks: int) -> None:
        super().__init__()
        c = base_channels
        self.ups = nn.ModuleList(
            UpLevel(w, w // 2, num_groups, blocks) for w in (8 * c, 4 * c, 2 * c)
        )
        self.head = nn.Conv3d(c, out_channels, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``features[-1]`` ``(B, 8c, X/8, Y/8, Z/8)`` -> ``(B, out, X, Y, Z)``."""
        h = features[-1]
        for up in self.ups:
            h = up(h)
        return self.head(h)


class UNetBackbone(Backbone):
    """Residual GroupNorm 3D U-Net (BrainMVP's U-Net at ``base_channels=32``).

    Args:
        in_channels: input channels. Defaults to 1.
        out_channels: reconstruction channels. Defaults to 1.
        base_channels: channels at full resolution (c); the stages have c, 2c, 4c, 8c.
            Defaults to 32 (the released network).
        num_groups: GroupNorm groups; must divide ``base_channels``. Defaults to 8.
        encoder_blocks: residual blocks at full resolution and after each of the three
            down-sampling convolutions. Defaults to (1, 2, 2, 4).
        decoder_blocks: residual blocks per decoder level. Defaults to 1.

    Raises:
        ValueError: When ``base_channels`` is not a multiple of ``num_groups``.
    """

    name = "unet"
    encoder: UNetEncoder
    decoder: UNetDecoder
    input_multiple = 8

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 32,
        num_groups: int = 8,
        encoder_blocks: Sequence[int] = (1, 2, 2, 4),
        decoder_blocks: int = 1,
    ) -> None:
        super().__init__()
        if base_channels % num_groups:
            raise ValueError(
                f"unet: base_channels should be a multiple of num_groups={num_groups}, "
                f"got {base_channels}."
            )
        blocks = as_int_tuple(encoder_blocks, 4, "unet: encoder_blocks")
        self.size = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "num_groups": num_groups,
            "encoder_blocks": list(blocks),
            "decoder_blocks": decoder_blocks,
        }
        self.in_channels = in_channels
        self.out_channels = out_channels
        c = base_channels
        self.feature_channels = [2 * c, 4 * c, 8 * c, 8 * c]
        self.feature_strides = [2, 4, 8, 8]
        self.encoder = UNetEncoder(in_channels, c, num_groups, blocks)
        self.decoder = UNetDecoder(out_channels, c, num_groups, decoder_blocks)

    def first_conv(self) -> nn.Module:
        """The stem convolution (reads the input channels)."""
        return self.encoder.stem

    def set_first_conv(self, layer: nn.Module) -> None:
        """Replace the stem convolution."""
        self.encoder.stem = layer


__all__ = ["DownLevel", "ResBlock", "UNetBackbone", "UNetDecoder", "UNetEncoder", "UpLevel"]
