"""The one scale parameter that sizes every notebook and command.

``smoke`` is for tests (each notebook well under a minute on 2 CPU cores), ``demo`` is the
book's default on CPU (the whole book in minutes, results that show the method's effect),
``paper`` is GPU scale on real data (1 mm, 96³ crops, full backbones, the authors' schedule).
Each room keeps its own preset table keyed by these names; every preset runs the same code.
"""

from __future__ import annotations

SCALES: tuple[str, ...] = ("smoke", "demo", "paper")


def check_scale(scale: str) -> str:
    """Return ``scale`` if it is a known preset.

    Raises:
        ValueError: When ``scale`` is not one of :data:`SCALES`.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return scale
