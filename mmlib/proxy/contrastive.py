"""Modality-aware contrastive learning: symmetric InfoNCE between the two BrainMVP views.

BrainMVP (Rui et al., CVPR 2025) treats the deepest encoder features of view A (template fill)
and view B (cross-modal fill) of the same study and target modality as a positive pair, and the
other studies of the batch as negatives: a symmetric InfoNCE on L2-normalised, flattened
features with temperature 1.0, no projection head. Two improvements the authors did not make
are options here, both off by default for fidelity: gathering negatives across DDP ranks (with
the gradient flowing back to every rank) and a projection head.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x (B, D)`` of every DDP rank along dim 0, keeping gradients to each rank.

    Uses :func:`torch.distributed.nn.functional.all_gather`, whose backward sums the gradients
    of all ranks' losses into each rank's input. Without an initialised process group (or with
    one rank) it returns ``x``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def info_nce(
    za: Tensor,
    zb: Tensor,
    temperature: float = 1.0,
    gather_distributed: bool = False,
) -> Tensor:
    """Symmetric InfoNCE between paired embeddings.

    ``za[i]`` and ``zb[i]`` are positives; every ``zb[j]`` (``j != i``, over all ranks when
    gathering) is a negative of ``za[i]`` and vice versa. The loss is
    ``(CE(za·zbᵀ/τ, i) + CE(zb·zaᵀ/τ, i)) / 2``, averaged over the local rows.

    Args:
        za: ``(B, ...)`` features of view A (flattened to ``(B, D)``).
        zb: ``(B, ...)`` features of view B, same shape.
        temperature: τ. Defaults to 1.0 (the authors').
        gather_distributed: use the other ranks' rows as extra negatives. Defaults to False.

    Returns:
        Scalar loss. With gathering, each rank returns the loss of its own rows; the mean over
        ranks equals the loss of one process on the concatenated batch.

    Raises:
        ValueError: When shapes disagree or ``temperature`` is not positive.
    """
    if za.shape != zb.shape or za.dim() < 2:
        raise ValueError(
            f"info_nce: za and zb should have the same shape (B, ...), got {tuple(za.shape)} "
            f"and {tuple(zb.shape)}."
        )
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature should be positive, got {temperature}.")
    a = F.normalize(za.flatten(1).float(), dim=1)
    b = F.normalize(zb.flatten(1).float(), dim=1)
    n = a.shape[0]
    offset = 0
    if gather_distributed and dist.is_available() and dist.is_initialized():
        a_all, b_all = gather_with_grad(a), gather_with_grad(b)
        offset = dist.get_rank() * n
    else:
        a_all, b_all = a, b
    labels = torch.arange(n, device=a.device) + offset
    loss_ab = F.cross_entropy(a @ b_all.T / temperature, labels)
    loss_ba = F.cross_entropy(b @ a_all.T / temperature, labels)
    return (loss_ab + loss_ba) / 2


class ProjectionHead(nn.Module):
    """Optional projection head: global average pool, then Linear-ReLU-Linear.

    Off by default in BrainMVP (the authors contrast the flattened deepest features directly);
    offered for comparison with SimCLR-style practice.

    Args:
        in_channels: channels of the deepest feature map.
        hidden: hidden width. Defaults to 512.
        out: output width. Defaults to 128.
    """

    def __init__(self, in_channels: int, hidden: int = 512, out: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, X, Y, Z) -> (B, out)``."""
        return self.net(x.flatten(2).mean(dim=2) if x.dim() > 2 else x)


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` with an optional projection head.

    Args:
        temperature: τ. Defaults to 1.0.
        gather_distributed: gather negatives across DDP ranks. Defaults to False.
        projection: a head applied to both views before the loss (e.g. :class:`ProjectionHead`).
            Defaults to None (off, as the authors).

    Raises:
        ValueError: When ``gather_distributed`` is set but torch.distributed is unavailable.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        gather_distributed: bool = False,
        projection: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if gather_distributed and not dist.is_available():
            raise ValueError(
                "InfoNCELoss: gather_distributed=True needs torch.distributed; set "
                "gather_distributed=False or use a torch build with distributed."
            )
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)
        self.projection = projection

    def forward(self, za: Tensor, zb: Tensor) -> Tensor:
        """Loss of the paired features ``(B, ...)`` of the two views."""
        if self.projection is not None:
            za, zb = self.projection(za), self.projection(zb)
        return info_nce(za, zb, self.temperature, self.gather_distributed)
