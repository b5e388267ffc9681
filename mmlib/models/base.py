"""The interface every mmlib backbone shares: an encoder, a no-skip pre-training decoder.

A :class:`Backbone` owns two sub-modules, ``encoder`` and ``decoder``, so that the encoder can be
exported alone (:func:`mmlib.models.checkpoints.export_encoder`) and a downstream head can be put
on it. ``encode(x)`` returns the multi-scale features, deepest last; ``decode(features)``
reconstructs the input from them without skip connections (pre-training); ``forward(x)`` does
both and returns ``(reconstruction, features)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class Backbone(nn.Module):
    """Base class of mmlib backbones.

    Subclasses set ``encoder``, ``decoder`` and the attributes below in ``__init__``.

    Attributes:
        name: registry name (``unet``, ``uniformer``, ``swinunetr``).
        size: the size keyword arguments that rebuild this backbone with
            :func:`mmlib.models.build_backbone` (``in_channels``/``out_channels`` included).
        in_channels: number of input channels.
        out_channels: number of reconstruction channels.
        feature_channels: channels of each tensor returned by :meth:`encode`, in order.
        feature_strides: spatial stride of each tensor returned by :meth:`encode`, in order.
        input_multiple: every spatial size of an input must be a multiple of this.
        feature_permutation: ``None`` when features are laid out like the input
            ``(B, C, X, Y, Z)``; else the ``Tensor.permute`` order that brings a feature back to
            the input's axis order (the released UniFormer works on ``(B, C, Z, X, Y)``).
    """

    name: str = "backbone"
    input_multiple: int = 1
    encoder: nn.Module
    decoder: nn.Module
    feature_permutation: tuple[int, ...] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.size: dict[str, Any] = {}
        self.in_channels = 1
        self.out_channels = 1
        self.feature_channels: list[int] = []
        self.feature_strides: list[int] = []

    def check_input(self, x: Tensor) -> None:
        """Raise a one-line ``ValueError`` when ``x`` is not a ``(B, C, X, Y, Z)`` input it
        accepts."""
        if x.ndim != 5:
            raise ValueError(
                f"{self.name}: expected an input of shape (B, C, X, Y, Z), got {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name}: input has {x.shape[1]} channels but the backbone takes "
                f"{self.in_channels}; rebuild it with in_channels={x.shape[1]} or use "
                "mmlib.models.adapt_in_channels"
            )
        bad = [s for s in x.shape[2:] if s % self.input_multiple]
        if bad:
            raise ValueError(
                f"{self.name}: every spatial size must be a multiple of {self.input_multiple}, "
                f"got {tuple(x.shape[2:])}; crop or pad the input"
            )

    def encode(self, x: Tensor) -> list[Tensor]:
        """Multi-scale features of ``x`` ``(B, C, X, Y, Z)``, deepest last."""
        self.check_input(x)
        return list(self.encoder(x))

    def decode(self, features: list[Tensor]) -> Tensor:
        """Reconstruction ``(B, out_channels, X, Y, Z)`` from :meth:`encode`'s features
        (no skips)."""
        return self.decoder(list(features))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encode then decode: ``(reconstruction (B, out, X, Y, Z), features)``."""
        features = self.encode(x)
        return self.decode(features), features

    def features_in_input_order(self, features: list[Tensor]) -> list[Tensor]:
        """The features with their spatial axes in the input's order ``(B, C, X, Y, Z)``."""
        if self.feature_permutation is None:
            return list(features)
        return [f.permute(*self.feature_permutation) for f in features]

    def first_conv(self) -> nn.Module:
        """The layer that reads the input channels (what :func:`adapt_in_channels` replaces)."""
        raise NotImplementedError(f"{type(self).__name__} does not name its first layer")

    def set_first_conv(self, layer: nn.Module) -> None:
        """Replace the layer returned by :meth:`first_conv`."""
        raise NotImplementedError(f"{type(self).__name__} does not name its first layer")

    def num_parameters(self) -> int:
        """Number of parameters (encoder and decoder)."""
        return sum(p.numel() for p in self.parameters())


def as_int_tuple(value: Any, n: int, what: str) -> tuple[int, ...]:
    """``value`` as a tuple of ``n`` ints, or a one-line ``ValueError`` naming ``what``."""
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        out = (int(value),) * n
    if len(out) != n:
        raise ValueError(f"{what} should have {n} entries, got {value!r}")
    return out


__all__ = ["Backbone", "as_int_tuple", "seeded"]


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block under a private torch RNG seeded with ``seed`` (no-op for None)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
