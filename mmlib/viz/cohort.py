"""Figures of the embedded cohort's files as written (notebook 01): axial overlays in RAS."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

from mmlib.data.phantom import report as R


def overlay_axial(
    ax: Any, image: nib.Nifti1Image, label: np.ndarray | None, title: str, z: int | None = None
) -> int:
    """Draw an axial slice of a NIfTI image with its label map on top, in RAS display order.

    Args:
        ax: a matplotlib axes.
        image: the image as written on disk (any orientation).
        label: integer labels on the image's grid ``(X, Y, Z)``, or None for the image alone.
        title: the axes title.
        z: the RAS axial slice. Defaults to None: the slice with the most label voxels (the
            middle slice without a label).

    Returns:
        The slice drawn.
    """
    vol = R.to_ras(np.asarray(image.get_fdata()), image.affine)
    lab = R.to_ras(label, image.affine) if label is not None else np.zeros(vol.shape, np.uint8)
    z = R.lesion_slice(lab) if z is None else z
    sp = R.ras_spacing(image.affine)
    inside = vol[vol > 0]
    vmax = float(np.percentile(inside, 99.5)) if inside.size else None
    ax.imshow(R.axial(vol, z), cmap="gray", vmax=vmax, aspect=sp[1] / sp[0])
    ax.imshow(
        np.ma.masked_equal(R.axial(lab, z), 0),
        cmap="Set1",
        alpha=0.45,
        vmin=1,
        vmax=9,
        interpolation="nearest",
        aspect=sp[1] / sp[0],
    )
    ax.set_title(title)
    ax.axis("off")
    return int(z)
