"""MONAI's SwinUNETR encoder (Swin transformer) behind mmlib's backbone interface.

The encoder is MONAI's ``SwinTransformer`` exactly as ``monai.networks.nets.SwinUNETR`` builds
it (``swinViT``), returning its five normalised hidden states (strides 2, 4, 8, 16, 32; channels
f, 2f, 4f, 8f, 16f for ``feature_size`` f). The pre-training decoder has no skips: five times a
kernel-2 stride-2 transposed convolution and a MONAI ``UnetResBlock`` (instance norm), then a
1×1 output convolution (``UnetOutBlock``). Inputs must be multiples of 32 in every spatial size.

Examples::

    >>> import torch
    >>> net = SwinUNETRBackbone(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
    >>> recon, feats = net(torch.zeros(1, 1, 32, 32, 32))
    >>> tuple(recon.shape), net.feature_channels
    ((1, 1, 32, 32, 32), [12, 24, 48, 96, 192])
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from monai.networks.blocks import UnetOutBlock, UnetResBlock
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import Tensor, nn

from mmlib.models.base import Backbone, as_int_tuple


class SwinEncoder(nn.Module):
    """MONAI ``SwinTransformer`` returning its 5 normalised hidden states."""

    def __init__(
        self,
        in_channels: int,
        feature_size: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        use_v2: bool,
    ) -> None:
        super().__init__()
        self.swin = SwinTransformer(
            in_chans=in_channels,
            embed_dim=feature_size,
            window_size=(window_size,) * 3,
            patch_size=(2, 2, 2),
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=nn.LayerNorm,
            spatial_dims=3,
            use_v2=use_v2,
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C, X, Y, Z)`` -> 5 features ``(B, f * 2**i, X / 2**(i+1), ...)``."""
        return list(self.swin(x, normalize=True))


class SwinUpLevel(nn.Module):
    """Transposed convolution (×2) then a MONAI residual block; no skip connection."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)
        self.block = UnetResBlock(
            3, out_channels, out_channels, kernel_size=3, stride=1, norm_name="instance"
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, X, Y, Z) -> (B, C_out, 2X, 2Y, 2Z)``."""
        return self.block(self.up(x))


class SwinDecoder(nn.Module):
    """No-skip pre-training decoder: deepest feature (stride 32) -> full size."""

    def __init__(self, out_channels: int, feature_size: int) -> None:
        super().__init__()
        f = feature_size
        pairs = [(16 * f, 8 * f), (8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f), (f, f)]
        self.ups = nn.ModuleList(SwinUpLevel(a, b) for a, b in pairs)
        self.head = UnetOutBlock(3, f, out_channels)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``features[-1]`` ``(B, 16f, X/32, ..)`` -> ``(B, out, X, Y, Z)``."""
        h = features[-1]
        for up in self.ups:
            h = up(h)
        return self.head(h)


class SwinUNETRBackbone(Backbone):
    """SwinUNETR's Swin encoder with a no-skip decoder, for pre-training with mmlib.

    Args:
        in_channels: input channels. Defaults to 1.
        out_channels: reconstruction channels. Defaults to 1.
        feature_size: embedding width f; a multiple of 12 (as SwinUNETR requires). Defaults to 48.
        depths: Swin blocks per stage. Defaults to (2, 2, 2, 2).
        num_heads: attention heads per stage. Defaults to (3, 6, 12, 24).
        window_size: attention window. Defaults to 7.
        use_v2: SwinUNETR-v2 residual convolution blocks. Defaults to False.

    Raises:
        ValueError: When ``feature_size`` is not a multiple of 12.
    """

    name = "swinunetr"
    encoder: SwinEncoder
    decoder: SwinDecoder
    input_multiple = 32

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        use_v2: bool = False,
    ) -> None:
        super().__init__()
        if importlib.util.find_spec("einops") is None:
            raise ImportError(
                "swinunetr: MONAI's SwinTransformer needs the einops package; pip install einops"
            )
        if feature_size % 12:
            raise ValueError(
                f"swinunetr: feature_size should be a multiple of 12, got {feature_size}."
            )
        d = as_int_tuple(depths, 4, "swinunetr: depths")
        h = as_int_tuple(num_heads, 4, "swinunetr: num_heads")
        self.size = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "feature_size": feature_size,
            "depths": list(d),
            "num_heads": list(h),
            "window_size": window_size,
            "use_v2": use_v2,
        }
        self.in_channels = in_channels
        self.out_channels = out_channels
        f = feature_size
        self.feature_channels = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        self.feature_strides = [2, 4, 8, 16, 32]
        self.encoder = SwinEncoder(in_channels, f, d, h, window_size, use_v2)
        self.decoder = SwinDecoder(out_channels, f)

    def first_conv(self) -> nn.Module:
        """The patch-embedding convolution (reads the input channels)."""
        return self.encoder.swin.patch_embed.proj

    def set_first_conv(self, layer: nn.Module) -> None:
        """Replace the patch-embedding convolution."""
        self.encoder.swin.patch_embed.proj = layer


__all__ = ["SwinDecoder", "SwinEncoder", "SwinUNETRBackbone", "SwinUpLevel"]
