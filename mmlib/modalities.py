"""Canonical MRI modality names and the aliases public datasets use for them.

The canonical order is the order of the BrainMVP templates (``rep_template``):
``flair, t1, t1c, t2, mra, pd, dwi, adc``. Every room of mmlib speaks canonical names; the
aliases below are resolved once, at discovery time.
"""

from __future__ import annotations

MODALITIES: tuple[str, ...] = ("flair", "t1", "t1c", "t2", "mra", "pd", "dwi", "adc")
"""Canonical modality names, in template order (index = template channel)."""

MODALITY_INDEX: dict[str, int] = {m: i for i, m in enumerate(MODALITIES)}

_ALIASES: dict[str, str] = {
    # T1-weighted
    "t1": "t1",
    "t1n": "t1",
    "t1w": "t1",
    "t1native": "t1",
    "mprage": "t1",
    # T1 post-contrast
    "t1c": "t1c",
    "t1ce": "t1c",
    "t1gd": "t1c",
    "t1post": "t1c",
    "t1wce": "t1c",
    # T2-weighted
    "t2": "t2",
    "t2w": "t2",
    # FLAIR
    "flair": "flair",
    "t2f": "flair",
    "t2flair": "flair",
    "t2_flair": "flair",
    # angiography
    "mra": "mra",
    "tof": "mra",
    "angio": "mra",
    # proton density
    "pd": "pd",
    "pdw": "pd",
    # diffusion
    "dwi": "dwi",
    "trace": "dwi",
    "dwi_trace": "dwi",
    "adc": "adc",
}


def canonical(name: str, source: str | None = None) -> str:
    """Map a modality name as found in a dataset to its canonical name.

    Args:
        name: the name as written in a file name or list (case-insensitive; ``-`` and spaces
            are treated as ``_``).
        source: the file or entry the name came from, quoted in the error. Defaults to None.

    Returns:
        One of :data:`MODALITIES`.

    Raises:
        ValueError: When the name is not a known alias; the message names the source and
            lists the known names.

    Examples::

        >>> canonical("T1Gd")
        't1c'
        >>> canonical("t2f")
        'flair'
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in _ALIASES:
        return _ALIASES[key]
    squashed = key.replace("_", "")
    if squashed in _ALIASES:
        return _ALIASES[squashed]
    where = f"{source}: " if source else ""
    raise ValueError(
        f"{where}unknown modality {name!r}; known names are {', '.join(sorted(set(_ALIASES)))} "
        f"(canonical: {', '.join(MODALITIES)})"
    )


def modality_index(name: str) -> int:
    """Template channel of a modality name (any alias)."""
    return MODALITY_INDEX[canonical(name)]
