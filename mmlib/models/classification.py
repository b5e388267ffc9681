"""Classification network around a pre-trained encoder: pooled deepest feature and an MLP.

:class:`ClassifierNet` pools the deepest encoder feature globally and applies a small MLP whose
layers are built under a private RNG seeded with ``seed`` (:func:`mmlib.models.base.seeded`),
so that every initialisation of the encoder starts with the same head at a given seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmlib.models.base import Backbone, seeded


class ClassifierNet(nn.Module):
    """Encoder, global average pooling of the deepest feature, and a small MLP.

    Args:
        backbone: an mmlib backbone taking ``in_channels`` channels.
        n_classes: number of classes.
        hidden: width of the MLP's hidden layer. Defaults to 64.
        dropout: dropout before the last layer. Defaults to 0.2.
        seed: seed of the head's initialisation (None: the global RNG). Defaults to None.
    """

    def __init__(
        self,
        backbone: Backbone,
        n_classes: int,
        hidden: int = 64,
        dropout: float = 0.2,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes should be at least 2, got {n_classes}")
        self.backbone = backbone
        c = int(backbone.feature_channels[-1])
        with seeded(seed):
            self.head = nn.Sequential(
                nn.Linear(c, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_classes),
            )

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the (pre-trained) encoder."""
        return list(self.backbone.parameters())

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``(B, n_classes)`` of a batch ``(B, C, X, Y, Z)``.

        Args:
            x: ``(B, C, X, Y, Z)``.
            return_features: also return the deepest encoder feature map
                ``(B, feature_channels[-1], x, y, z)`` (before pooling), e.g. for the
                consistency loss of template-replacement fine-tuning. Defaults to False.
        """
        deep = self.backbone.encode(x)[-1]  # pooled: its axis order does not matter
        pooled = F.adaptive_avg_pool3d(deep, 1).flatten(1)
        logits = self.head(pooled)
        return (logits, deep) if return_features else logits
