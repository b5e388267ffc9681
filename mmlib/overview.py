"""What the first notebook shows: the environment mmlib runs in and the method in one picture."""

from __future__ import annotations

import os
import platform
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def environment_report() -> dict[str, Any]:
    """Versions, device and threads of the running interpreter.

    Returns:
        A flat dict: python, platform, torch, monai, numpy, nibabel, cuda (bool), device name,
        gpu_count, torch_threads, cpu_count, bf16 (whether bf16 autocast is supported).
    """
    import monai
    import nibabel
    import numpy
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "nibabel": nibabel.__version__,
        "cuda": cuda,
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"cpu ({platform.processor() or platform.machine()})",
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count() or 1,
        "bf16": bool(torch.cuda.is_bf16_supported()) if cuda else True,
    }


def _box(
    ax: Any, xy: tuple[float, float], text: str, color: str, w: float = 1.5, h: float = 0.62
) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (xy[0] - w / 2, xy[1] - h / 2),
            w,
            h,
            boxstyle="round,pad=0.04",
            fc=color,
            ec="#333333",
            lw=1.0,
        )
    )
    ax.text(xy[0], xy[1], text, ha="center", va="center", fontsize=8.5)


def _arrow(
    ax: Any,
    a: tuple[float, float],
    b: tuple[float, float],
    style: str = "-|>",
    color: str = "#333333",
) -> None:
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=11, lw=1.1, color=color))


def method_diagram() -> Figure:
    """BrainMVP in one picture: two masked views of one modality, one encoder-decoder, three losses.

    Returns:
        A matplotlib figure (about 10×4 inches).
    """
    fig, ax = plt.subplots(figsize=(10.5, 4.2))
    ax.set_xlim(0, 12.2)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    _box(ax, (0.9, 2.3), "study\n(T1, T2, FLAIR, …)", "#e8eef7", w=1.6, h=0.9)
    _box(ax, (2.9, 2.3), "target $X_m$\n+ block mask", "#e8eef7")
    _box(ax, (5.0, 3.5), "view A: masked\ncubes ← template $T_m$", "#fde2c8", w=1.9)
    _box(ax, (5.0, 1.1), "view B: masked\ncubes ← modality $X_n$", "#d6f0d9", w=1.9)
    _box(ax, (7.3, 2.3), "shared\nencoder", "#eeeeee", w=1.1, h=2.6)
    _box(ax, (9.1, 3.5), "decoder\n(no skips)", "#eeeeee", w=1.2)
    _box(ax, (9.1, 1.1), "decoder\n(no skips)", "#eeeeee", w=1.2)
    _box(ax, (11.2, 3.5), "$L_{md}$ = MSE\nto $X_m$", "#fde2c8", w=1.4)
    _box(ax, (11.2, 1.1), "$L_{cmr}$ = MSE\nto $X_m$", "#d6f0d9", w=1.4)
    _box(ax, (9.1, 2.3), "$L_{cl}$: InfoNCE on\ndeepest features", "#f3e0f7", w=1.7, h=0.55)
    _arrow(ax, (1.7, 2.3), (2.15, 2.3))
    _arrow(ax, (3.65, 2.5), (4.05, 3.4))
    _arrow(ax, (3.65, 2.1), (4.05, 1.2))
    _arrow(ax, (5.95, 3.4), (6.75, 2.9))
    _arrow(ax, (5.95, 1.2), (6.75, 1.7))
    _arrow(ax, (7.85, 3.2), (8.5, 3.5))
    _arrow(ax, (7.85, 1.4), (8.5, 1.1))
    _arrow(ax, (7.85, 2.3), (8.25, 2.3))
    _arrow(ax, (9.7, 3.5), (10.5, 3.5))
    _arrow(ax, (9.7, 1.1), (10.5, 1.1))
    ax.text(
        6.1, 4.35, "templates $T_m$ are learned only through $L_{md}$", fontsize=8, style="italic"
    )
    ax.text(
        0.2,
        0.15,
        "total = $w_{md} L_{md} + w_{cmr} L_{cmr} + w_{cl} L_{cl}$  (authors' code: 10, 1, 1)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
