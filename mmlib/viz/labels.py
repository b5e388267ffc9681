"""Label schemes: the names and colours of segmentation labels, shared by napari and matplotlib.

BraTS labels are 1 necrotic / non-enhancing tumour core, 2 peritumoural oedema and enhancing
tumour as 4 (BraTS <= 2021) or 3 (BraTS 2023); tissue labels (MRBrainS, the embedded cohort) are
1 CSF, 2 grey matter, 3 white matter; the Decathlon's Task01 numbers 1 oedema, 2 non-enhancing,
3 enhancing tumour; ISLES has one lesion label. Colours follow the BraTS papers' figures: core
red, oedema
green, enhancing yellow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelScheme:
    """Names and RGBA colours (floats in [0, 1]) of the non-zero labels of one label map.

    Args:
        name: short name of the scheme, e.g. ``"brats2021"``.
        names: label value -> human-readable name.
        colors: label value -> ``(r, g, b, a)``.
    """

    name: str
    names: dict[int, str]
    colors: dict[int, tuple[float, float, float, float]]

    def color_dict(self) -> dict[int | None, tuple[float, float, float, float]]:
        """The ``{value: rgba}`` mapping for :class:`napari.utils.colormaps.DirectLabelColormap`.

        Background (0) is transparent and unknown values (``None``) are magenta, so a label the
        scheme does not expect stands out instead of vanishing.
        """
        out: dict[int | None, tuple[float, float, float, float]] = {0: (0.0, 0.0, 0.0, 0.0)}
        out.update(self.colors.items())
        out[None] = (1.0, 0.0, 1.0, 1.0)
        return out

    def lut(self, n: int | None = None) -> np.ndarray:
        """An RGBA lookup table ``(n, 4)`` indexed by label value (0 and unknown transparent)."""
        size = max(self.colors) + 1 if n is None else n
        table = np.zeros((size, 4), dtype=np.float32)
        for value, rgba in self.colors.items():
            if value < size:
                table[value] = rgba
        return table


_RED = (0.90, 0.10, 0.10, 1.0)
_GREEN = (0.15, 0.80, 0.20, 1.0)
_YELLOW = (1.00, 0.90, 0.10, 1.0)

SCHEMES: dict[str, LabelScheme] = {
    "brats2021": LabelScheme(
        "brats2021",
        {1: "necrotic / non-enhancing core", 2: "oedema", 4: "enhancing tumour"},
        {1: _RED, 2: _GREEN, 4: _YELLOW},
    ),
    "brats2023": LabelScheme(
        "brats2023",
        {1: "necrotic / non-enhancing core", 2: "oedema", 3: "enhancing tumour"},
        {1: _RED, 2: _GREEN, 3: _YELLOW},
    ),
    "decathlon": LabelScheme(  # Medical Segmentation Decathlon Task01 (BrainTumour) numbering
        "decathlon",
        {1: "oedema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
        {1: _GREEN, 2: _RED, 3: _YELLOW},
    ),
    "lesion": LabelScheme("lesion", {1: "lesion"}, {1: (1.00, 0.25, 0.25, 1.0)}),
    "tissue": LabelScheme(
        "tissue",
        {1: "CSF", 2: "grey matter", 3: "white matter"},
        {1: (0.10, 0.45, 1.00, 1.0), 2: (1.00, 0.55, 0.10, 1.0), 3: (0.95, 0.95, 0.85, 1.0)},
    ),
}


def get_scheme(scheme: str | LabelScheme | None, label: np.ndarray | None = None) -> LabelScheme:
    """Resolve a scheme by name, or guess it from the label values when ``scheme`` is None.

    A label map holding a 4 is BraTS <= 2021; anything else defaults to BraTS 2023. Tissue maps
    cannot be told apart from BraTS 2023 by their values: pass ``scheme="tissue"``.

    Raises:
        ValueError: When ``scheme`` is not a known name.
    """
    if isinstance(scheme, LabelScheme):
        return scheme
    if scheme is None:
        if label is not None and np.any(np.asarray(label) == 4):
            return SCHEMES["brats2021"]
        return SCHEMES["brats2023"]
    key = scheme.lower().replace("-", "").replace("_", "")
    if key in SCHEMES:
        return SCHEMES[key]
    raise ValueError(f"scheme: unknown label scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def scheme_for_source(source: str | None, label: np.ndarray | None = None) -> LabelScheme:
    """Guess the scheme from a store ``source`` name (``brats2021``, ``brats2023_ped``, ...).

    Sources named after BraTS 2023, BraTS <= 2021, UCSF-PDGM, the Decathlon, ISLES or MRBrainS
    get their scheme; anything else falls back to :func:`get_scheme` on the label values.
    """
    s = (source or "").lower()
    if "mrbrains" in s or "tissue" in s:
        return SCHEMES["tissue"]
    if "isles" in s:
        return SCHEMES["lesion"]
    if "decathlon" in s or "task01" in s:
        return SCHEMES["decathlon"]
    if "ucsf" in s:
        return SCHEMES["brats2021"]
    if "2023" in s or "2024" in s:
        return SCHEMES["brats2023"]
    if "brats" in s and any(y in s for y in ("2018", "2019", "2020", "2021")):
        return SCHEMES["brats2021"]
    return get_scheme(None, label)
