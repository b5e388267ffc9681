"""Segmentation network around a pre-trained encoder: a skip-connected decoder.

The encoder is any mmlib backbone (``encode(x) -> list[Tensor]``, deepest last, with
``feature_channels`` and ``feature_strides``); its pre-training decoder (no skips) is not used.

:class:`SegmentationNet` adds a decoder with skip connections, built from MONAI's blocks:
``"unetr"`` (UNETR-style, Hatamizadeh et al., WACV 2022, the decoder BrainMVP uses for
UniFormer): every encoder feature is first projected by a residual block (a stride-1 first
feature, the raw input that UniFormer returns, is projected by a 3³ convolution to the first
stage's width and decoded at that width, as in the official network), a full-resolution
residual stem sees the raw input (strided first features), and each up-step is a transposed
convolution, a concatenation and a residual block; ``"unet"`` (U-Net decoder, for the U-Net
encoder): raw encoder features are concatenated after each transposed convolution and refined by
two convolutions. Optional deep supervision adds a 1x1 head at each decoder level. For sigmoid
(multi-label) outputs the 1x1 heads' bias can start at a foreground prior ``head_bias``
(RetinaNet's prior initialisation, Lin et al., ICCV 2017): with a zero bias every voxel starts
at probability 0.5, and on a short schedule the network is still predicting several times the
true tumour volume when training stops (measured at demo scale: 7.5 % of the voxels predicted
positive for 1 % true whole tumour, Dice 0.2 at threshold 0.5 but 0.7 at a better one).

Pairing by seed: the new layers (decoder, heads) are built under a private RNG seeded with
``seed`` (:func:`mmlib.models.base.seeded`), so that every initialisation of the encoder
(scratch, BrainMVP, ablations) starts fine-tuning with the very same decoder weights at a
given seed.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import (
    UnetOutBlock,
    UnetrBasicBlock,
    UnetResBlock,
    UnetrUpBlock,
    UnetUpBlock,
)
from torch import nn

from mmlib.models.base import Backbone, seeded

DECODERS: tuple[str, ...] = ("unetr", "unet")


def default_decoder(backbone_name: str) -> str:
    """The decoder BrainMVP pairs with a backbone: U-Net decoder for ``unet``, UNETR otherwise."""
    return "unet" if backbone_name == "unet" else "unetr"


class SegmentationNet(nn.Module):
    """Encoder plus a skip-connected decoder.

    Args:
        backbone: an mmlib backbone whose first layer already takes ``in_channels`` channels
            (see :func:`mmlib.models.adapt_in_channels`).
        in_channels: input channels C (the task's modalities).
        out_channels: output channels (regions, or classes plus background).
        decoder: ``"unetr"`` or ``"unet"``. Defaults to "unetr".
        deep_supervision: also return logits of the coarser decoder levels in training.
            Defaults to False.
        norm: MONAI norm name of the decoder blocks. Defaults to "instance".
        seed: seed of the decoder's initialisation (None: the global RNG). Defaults to None.
        head_bias: initial bias of the output heads (e.g. ``log(p / (1 - p))`` for a sigmoid
            foreground prior p); None keeps the default initialisation. Defaults to None.

    Raises:
        ValueError: When the decoder is unknown or the feature strides are not increasing
            integer ratios.

    Examples::

        >>> net = SegmentationNet(backbone, in_channels=4, out_channels=3, decoder="unet", seed=0)
        >>> net(torch.zeros(1, 4, 32, 32, 32)).shape
        torch.Size([1, 3, 32, 32, 32])
    """

    def __init__(
        self,
        backbone: Backbone,
        in_channels: int,
        out_channels: int,
        decoder: str = "unetr",
        deep_supervision: bool = False,
        norm: str = "instance",
        seed: int | None = None,
        head_bias: float | None = None,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder should be one of {', '.join(DECODERS)}, got {decoder!r}")
        chans = [int(c) for c in backbone.feature_channels]
        strides = [int(s) for s in backbone.feature_strides]
        ratios = [strides[i + 1] // strides[i] for i in range(len(strides) - 1)]
        if any(r < 1 or strides[i] * r != strides[i + 1] for i, r in enumerate(ratios)):
            raise ValueError(f"feature_strides {strides} should increase by integer ratios")
        self.backbone = backbone
        self.decoder_kind = decoder
        self.deep_supervision = deep_supervision
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.strides = strides
        # A stride-1 first feature is the raw input (UniFormer returns it, C = number of
        # modalities): decoding at C channels starves the last stage and the head, so the
        # official network projects it with a 3³ convolution to the first stage's width (64 in
        # UniFormer-S) and decodes at that width.
        dec = list(chans)
        if strides[0] == 1 and len(chans) > 1:
            dec[0] = max(chans[0], chans[1])
        self.decoder_channels = dec
        with seeded(seed):
            self.proj = nn.ModuleList()
            self.ups = nn.ModuleList()
            self.input_stem: nn.Module | None = None
            if decoder == "unetr":
                for c, d in zip(chans[:-1], dec[:-1]):
                    self.proj.append(UnetrBasicBlock(3, c, d, 3, 1, norm, res_block=True))
                for i in range(len(chans) - 1, 0, -1):
                    self.ups.append(
                        UnetrUpBlock(3, dec[i], dec[i - 1], 3, ratios[i - 1], norm, res_block=True)
                    )
            else:
                if dec[0] != chans[0]:
                    self.input_stem = UnetResBlock(3, chans[0], dec[0], 3, 1, norm)
                for i in range(len(chans) - 1, 0, -1):
                    self.ups.append(UnetUpBlock(3, dec[i], dec[i - 1], 3, 1, ratios[i - 1], norm))
            head_in = dec[0]
            self.stem: nn.Module | None = None
            self.final_up: nn.Module | None = None
            if strides[0] > 1:
                stem_c = max(8, chans[0] // 2)
                if decoder == "unetr":
                    self.stem = UnetrBasicBlock(3, in_channels, stem_c, 3, 1, norm, res_block=True)
                    self.final_up = UnetrUpBlock(
                        3, dec[0], stem_c, 3, strides[0], norm, res_block=True
                    )
                else:
                    self.stem = UnetResBlock(3, in_channels, stem_c, 3, 1, norm)
                    self.final_up = UnetUpBlock(3, dec[0], stem_c, 3, 1, strides[0], norm)
                head_in = stem_c
            self.head = UnetOutBlock(3, head_in, out_channels)
            self.aux_heads = nn.ModuleList(
                [UnetOutBlock(3, dec[i - 1], out_channels) for i in range(len(chans) - 1, 1, -1)]
                if deep_supervision
                else []
            )
        if head_bias is not None:
            for h in [self.head, *self.aux_heads]:
                nn.init.constant_(h.conv.conv.bias, float(head_bias))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the (pre-trained) encoder, e.g. for a lower learning rate."""
        return list(self.backbone.parameters())

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone.encode(x)
        to_input = getattr(self.backbone, "features_in_input_order", None)
        return list(to_input(feats)) if to_input is not None else list(feats)

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
        """Segment a batch.

        Args:
            x: ``(B, C, X, Y, Z)``, each spatial size divisible by the deepest stride.
            return_features: also return the deepest encoder feature (the bottleneck), e.g.
                for the consistency loss of template-replacement fine-tuning; one forward
                pass, so it works under DDP. Defaults to False.

        Returns:
            logits ``(B, out, X, Y, Z)``; in training with deep supervision, a list whose first
            entry is that and the others coarser logits (deepest last). With
            ``return_features``, the pair ``(that, deepest)`` where ``deepest`` is
            ``(B, feature_channels[-1], x, y, z)`` in the input's axis order.
        """
        feats = self._features(x)
        if self.decoder_kind == "unetr":
            skips = [p(f) for p, f in zip(self.proj, feats[:-1])] + [feats[-1]]
        else:
            skips = list(feats)
            if self.input_stem is not None:
                skips[0] = self.input_stem(skips[0])
        y = skips[-1]
        aux: list[torch.Tensor] = []
        for j, up in enumerate(self.ups):
            y = up(y, skips[-2 - j])
            if self.deep_supervision and self.training and j < len(self.aux_heads):
                aux.append(self.aux_heads[j](y))
        if self.final_up is not None and self.stem is not None:
            y = self.final_up(y, self.stem(x))
        out = self.head(y)
        logits: torch.Tensor | list[torch.Tensor] = [out] + aux[::-1] if aux else out
        if return_features:
            return logits, feats[-1]
        return logits
