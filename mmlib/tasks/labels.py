"""Predicted regions back to a dataset's own integer labels.

A segmentation network predicts region masks (:class:`~mmlib.tasks.regions.RegionSpec`): BraTS
TC, WT, ET (nested), one binary lesion, or exclusive tissue classes. A file written for a viewer,
a challenge portal or another tool holds the dataset's labels instead: for BraTS, 1 (necrotic /
non-enhancing core, TC without ET), 2 (oedema, WT without TC) and the enhancing tumour as **4**
up to BraTS 2021 or **3** from BraTS 2023 on; 1 for a binary lesion; 1..n for tissue classes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mmlib.tasks.regions import CONVENTIONS, RegionSpec


def dataset_convention(label_values: Iterable[int] | None, default: str) -> str:
    """The BraTS convention of a dataset from the label values its layout allows.

    Args:
        label_values: the values a layout's labels may hold (e.g. ``(0, 1, 2, 4)`` for BraTS
            2021, ``(0, 1, 2, 3)`` for BraTS 2023), or None when the layout does not say.
        default: the convention to use when the values do not tell (the model's own).

    Returns:
        ``"brats2021"`` or ``"brats2023"``.

    Raises:
        ValueError: When ``default`` is not a known convention and the values do not tell.
    """
    values = set(label_values or ())
    if 4 in values and 3 not in values:
        return "brats2021"
    if 3 in values and 4 not in values:
        return "brats2023"
    if default not in CONVENTIONS:
        raise ValueError(f"BraTS convention {default!r} unknown; choose {', '.join(CONVENTIONS)}")
    return default


def regions_to_labels(
    masks: np.ndarray, regions: RegionSpec, convention: str | None = None
) -> np.ndarray:
    """Integer labels of predicted region masks, in a dataset's own convention.

    Args:
        masks: boolean ``(R, X, Y, Z)`` in the order of ``regions.names`` (for BraTS: TC, WT,
            ET, nested as :meth:`RegionSpec.predict` returns them).
        regions: what the network predicts.
        convention: ``"brats2021"`` (ET = 4) or ``"brats2023"`` (ET = 3), BraTS only; None uses
            ``regions.convention``. Defaults to None.

    Returns:
        uint8 labels ``(X, Y, Z)``: BraTS 0/1/2/ET, binary 0/1, classes 0..n.

    Raises:
        ValueError: When the masks do not have one channel per region, or the BraTS
            convention is not ``brats2021``/``brats2023``.

    Examples::

        >>> m = np.zeros((3, 1, 1, 3), bool); m[:, 0, 0, 0] = True; m[1, 0, 0, 1] = True
        >>> regions_to_labels(m, RegionSpec(("TC", "WT", "ET"), "brats"), "brats2021")[0, 0]
        array([4, 2, 0], dtype=uint8)
    """
    masks = np.asarray(masks).astype(bool)
    if masks.ndim != 4 or masks.shape[0] != len(regions.names):
        raise ValueError(
            f"masks of shape {masks.shape}: expected ({len(regions.names)}, X, Y, Z),"
            f" one channel per region {list(regions.names)}"
        )
    out = np.zeros(masks.shape[1:], dtype=np.uint8)
    if regions.kind == "brats":
        conv = convention or regions.convention
        if conv not in CONVENTIONS:
            raise ValueError(
                f"BraTS convention {conv!r}: choose brats2021 (ET = 4) or brats2023 (ET = 3)"
            )
        tc, wt, et = masks
        out[wt | tc | et] = 2
        out[tc | et] = 1
        out[et] = CONVENTIONS[conv]
    elif regions.kind == "binary":
        out[masks[0]] = 1
    else:
        for k in range(masks.shape[0]):
            out[masks[k]] = k + 1
    return out
