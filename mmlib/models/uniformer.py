"""BrainMVP's 3D UniFormer (UniFormer-S at the default size) as an mmlib :class:`Backbone`.

UniFormer (Li et al., "UniFormer: Unifying Convolution and Self-attention for Visual
Recognition", 2022) in 3D, as BrainMVP uses it: four stages, each opened by a stride-2, kernel-2
``Conv3d`` patch embedding and a LayerNorm over channels. Stages 1-2 are convolutional blocks
(depthwise 3³ position convolution, BatchNorm, 1×1 → depthwise 5³ → 1×1 token mixing, BatchNorm,
1×1 MLP); stages 3-4 are self-attention blocks (depthwise 3³ position convolution, LayerNorm,
multi-head attention with a qkv bias, LayerNorm, MLP). The deepest stage ends with a BatchNorm.

Two quirks of the released network are kept because the released weights depend on them:

- the encoder permutes the input's spatial axes first, ``x.permute(0, 1, 4, 2, 3)``: an input
  ``(B, C, X, Y, Z)`` is processed as ``(B, C, Z, X, Y)``, and the first returned tensor *is*
  that permuted input (so :meth:`encode` returns 5 tensors, strides 1, 2, 4, 8, 16, all in
  ``(B, C, Z, X, Y)`` order; :meth:`Backbone.features_in_input_order` undoes it);
- the pre-training decoder permutes the deepest feature back, ``permute(0, 1, 3, 4, 2)``, then
  applies four kernel-2 stride-2 transposed convolutions without bias and without activations
  in between (the released decoder calls only the ``transp_conv`` of four MONAI
  ``UnetrUpBlock``), then a 1×1 output convolution (MONAI ``UnetOutBlock``).

Inputs must be multiples of 16 in every spatial size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmlib.models.base import Backbone, as_int_tuple


def _channels_last(x: Tensor) -> bool:
    """Whether ``x`` ``(B, C, D, H, W)`` is laid out channels_last_3d (and not also contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


class PatchEmbed(nn.Module):
    """Stride-2 kernel-2 ``Conv3d`` then LayerNorm over channels:
    ``(B, C, D, H, W) -> (B, E, D/2, ..)``."""

    proj: nn.Module  # a Conv3d until adapt_in_channels replaces it

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=2, stride=2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W) -> (B, E, D/2, H/2, W/2)``, in the memory format of ``x``."""
        x = self.proj(x)
        out = self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        return out if _channels_last(x) else out.contiguous()


class ConvMlp(nn.Module):
    """1×1 convolution, GELU, 1×1 convolution."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(dim, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W) -> (B, C, D, H, W)``."""
        return self.fc2(F.gelu(self.fc1(x)))


class Mlp(nn.Module):
    """Linear, GELU, Linear on tokens ``(B, N, C)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C) -> (B, N, C)``."""
        return self.fc2(F.gelu(self.fc1(x)))


class ConvBlock(nn.Module):
    """UniFormer's convolutional block (local token mixing by a depthwise 5³ convolution)."""

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm3d(dim)
        self.conv1 = nn.Conv3d(dim, dim, 1)
        self.conv2 = nn.Conv3d(dim, dim, 1)
        self.attn = nn.Conv3d(dim, dim, 5, padding=2, groups=dim)
        self.norm2 = nn.BatchNorm3d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W) -> (B, C, D, H, W)``."""
        x = x + self.pos_embed(x)
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x))))
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention with a qkv bias (``scaled_dot_product_attention``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C) -> (B, N, C)``."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class AttentionBlock(nn.Module):
    """UniFormer's self-attention block (global token mixing)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W) -> (B, C, D, H, W)``."""
        x = x + self.pos_embed(x)
        b, c, d, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # a view (no copy) when x is channels_last_3d
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        if _channels_last(x):
            return t.reshape(b, d, h, w, c).permute(0, 4, 1, 2, 3)
        return t.transpose(1, 2).reshape(b, c, d, h, w)


class UniFormerEncoder(nn.Module):
    """Encoder of :class:`UniFormerBackbone`: permuted input, then one feature per stage."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        depths: Sequence[int],
        head_dim: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        ins = [in_channels, *widths[:-1]]
        self.patch_embeds = nn.ModuleList(PatchEmbed(i, w) for i, w in zip(ins, widths))
        stages = []
        for k, (w, n) in enumerate(zip(widths, depths)):
            blocks: list[nn.Module]
            if k < 2:
                blocks = [ConvBlock(w, mlp_ratio) for _ in range(n)]
            else:
                blocks = [AttentionBlock(w, w // head_dim, mlp_ratio) for _ in range(n)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.BatchNorm3d(widths[-1])

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C, X, Y, Z)`` -> ``[x as (B, C, Z, X, Y), (B, w1, Z/2, X/2, Y/2), ...,
        (B, w4, /16)]``."""
        x = x.permute(0, 1, 4, 2, 3)
        features = [x]
        h = x
        last = len(self.stages) - 1
        for k, (embed, stage) in enumerate(zip(self.patch_embeds, self.stages)):
            h = stage(embed(h))
            if k == last:
                h = self.norm(h)
            features.append(h)
        return features


class UniFormerDecoder(nn.Module):
    """BrainMVP's pre-training decoder: 4 transposed convolutions (linear), then a 1×1 head."""

    def __init__(self, out_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        w = list(widths)
        pairs = [(w[3], w[2]), (w[2], w[1]), (w[1], w[0]), (w[0], w[0])]
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(a, b, kernel_size=2, stride=2, bias=False) for a, b in pairs
        )
        self.head = nn.Conv3d(w[0], out_channels, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``features[-1]`` ``(B, w4, Z/16, X/16, Y/16)`` -> ``(B, out, X, Y, Z)``."""
        h = features[-1].permute(0, 1, 3, 4, 2)
        for up in self.ups:
            h = up(h)
        return self.head(h)


class UniFormerBackbone(Backbone):
    """3D UniFormer with BrainMVP's pre-training decoder (UniFormer-S at the defaults).

    Args:
        in_channels: input channels. Defaults to 1.
        out_channels: reconstruction channels. Defaults to 1.
        widths: channels of the four stages. Defaults to (64, 128, 320, 512).
        depths: blocks per stage (stages 1-2 convolutional, 3-4 self-attention).
            Defaults to (3, 4, 8, 3).
        head_dim: channels per attention head; must divide ``widths[2]`` and ``widths[3]``.
            Defaults to 64.
        mlp_ratio: MLP hidden width over block width. Defaults to 4.0.

    Raises:
        ValueError: When ``head_dim`` does not divide the attention stages' widths.
    """

    name = "uniformer"
    encoder: UniFormerEncoder
    decoder: UniFormerDecoder
    input_multiple = 16
    feature_permutation = (0, 1, 3, 4, 2)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (3, 4, 8, 3),
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        w = as_int_tuple(widths, 4, "uniformer: widths")
        d = as_int_tuple(depths, 4, "uniformer: depths")
        if w[2] % head_dim or w[3] % head_dim:
            raise ValueError(
                f"uniformer: head_dim={head_dim} should divide the attention widths "
                f"{w[2]} and {w[3]}."
            )
        self.size = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "widths": list(w),
            "depths": list(d),
            "head_dim": head_dim,
            "mlp_ratio": float(mlp_ratio),
        }
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.feature_channels = [in_channels, *w]
        self.feature_strides = [1, 2, 4, 8, 16]
        self.encoder = UniFormerEncoder(in_channels, w, d, head_dim, mlp_ratio)
        self.decoder = UniFormerDecoder(out_channels, w)

    def first_conv(self) -> nn.Module:
        """The first patch-embedding convolution (reads the input channels)."""
        return cast(PatchEmbed, self.encoder.patch_embeds[0]).proj

    def set_first_conv(self, layer: nn.Module) -> None:
        """Replace the first patch-embedding convolution."""
        self.encoder.patch_embeds[0].proj = layer


__all__ = [
    "Attention",
    "AttentionBlock",
    "ConvBlock",
    "ConvMlp",
    "Mlp",
    "PatchEmbed",
    "UniFormerBackbone",
    "UniFormerDecoder",
    "UniFormerEncoder",
]
