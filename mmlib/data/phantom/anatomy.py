"""Real anatomy for the embedded cohort: the ICBM 2009a template and its tissue maps.

The ICBM 2009a non-linear symmetric template (Fonov et al., NeuroImage 2011) ships inside the
nilearn wheel at 1 mm (197×233×189, RAS, MNI mm): a skull-stripped T1 and grey- and white-matter
probability maps. No download happens: :func:`load_anatomy` reads them with
``nilearn.datasets.load_mni152_*_template(resolution=1)``.

From them we build, once per process and simulation factor ``f``, a stack of tissue-fraction
maps in *template space* (the MNI grid block-averaged by ``f``):

* ``csf``: inside the brain mask but neither grey nor white matter, plus a thin subarachnoid
  shell around it;
* ``gm``, ``wm``: the template probabilities;
* ``skull`` and ``scalp``: synthetic shells grown outward from the brain by distance
  transform (the template carries no head), so that sources that are not skull-stripped (IXI,
  ISLES, MRBrainS, ADNI) show bone (dark) and scalp fat (bright on T1);
* ``choroid``: choroid plexus in the atria of the lateral ventricles (enhances on T1c);
* ``sinus``: the superior sagittal sinus along the midline (enhances on T1c);

plus helper fields used by the subject model: the distance to the brain edge (lesion
placement), the gradient of a smoothed ventricle mask (ventricle enlargement) and the
proximity to outer CSF (cortical thinning).
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy import ndimage as ndi

#: Channels of :attr:`Anatomy.maps`, in order.
ANATOMY_CHANNELS: tuple[str, ...] = ("csf", "gm", "wm", "skull", "scalp", "choroid", "sinus")


@dataclass(frozen=True)
class Anatomy:
    """Template-space tissue maps at one simulation factor.

    Attributes:
        factor: the block size in mm (1 = the template's 1 mm grid).
        affine: (4, 4) template voxel -> MNI mm.
        maps: (C, X, Y, Z) float32 tissue fractions, channels :data:`ANATOMY_CHANNELS`.
        brain_dist: (X, Y, Z) float32 distance in mm from each brain voxel to the brain edge
            (0 outside).
        ventricle_grad: (3, X, Y, Z) float32 gradient (per mm, max norm 1) of the smoothed
            ventricle mask, pointing into the ventricles.
        cortex: (X, Y, Z) float32 proximity to outer CSF in [0, 1] (cortical thinning weight).
        ventricles: (X, Y, Z) bool lateral/third ventricles.
    """

    factor: int
    affine: np.ndarray
    maps: np.ndarray
    brain_dist: np.ndarray
    ventricle_grad: np.ndarray
    cortex: np.ndarray
    ventricles: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)`` of the template grid."""
        return tuple(int(s) for s in self.maps.shape[1:])  # type: ignore[return-value]

    def channel(self, name: str) -> np.ndarray:
        """One tissue-fraction map ``(X, Y, Z)`` by name."""
        return self.maps[ANATOMY_CHANNELS.index(name)]

    def world(self, index: np.ndarray) -> np.ndarray:
        """MNI mm of voxel indices ``(N, 3)``."""
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def brain_volume_ml(self) -> float:
        """Brain (GM + WM + CSF inside the mask) volume in millilitres."""
        frac = self.channel("gm") + self.channel("wm")
        return float(frac.sum() * self.factor**3 / 1000.0)

    def max_inscribed_radius_mm(self) -> float:
        """Radius of the largest ball that fits inside the brain."""
        return float(self.brain_dist.max())


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a.astype(np.float32)
    pad = [(0, (-s) % f) for s in a.shape]
    a = np.pad(a.astype(np.float32), pad)
    x, y, z = (s // f for s in a.shape)
    return a.reshape(x, f, y, f, z, f).mean(axis=(1, 3, 5), dtype=np.float32)


def _load_icbm() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """T1, GM, WM of ICBM 2009a at 1 mm and its affine, from the nilearn wheel (no download)."""
    os.environ.setdefault("NILEARN_DATA", os.path.join(tempfile.gettempdir(), "mmlib-nilearn"))
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    arrays = [np.asarray(img.dataobj, dtype=np.float32) for img in (t1, gm, wm)]
    return arrays[0], arrays[1], arrays[2], np.asarray(t1.affine, dtype=np.float64)


@functools.lru_cache(maxsize=4)
def load_anatomy(factor: int) -> Anatomy:
    """Build the template-space tissue maps at a simulation factor (cached per process).

    Args:
        factor: block-average factor (1, 2, 3, 4 ...); voxel size is ``factor`` mm.

    Returns:
        The :class:`Anatomy`.

    Raises:
        ValueError: When ``factor`` is not a positive integer.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"anatomy factor should be a positive integer, got {factor!r}")
    t1, gm, wm, aff = _load_icbm()
    brain1 = (t1 > 0) | (gm + wm > 0.5)
    brain1 = ndi.binary_fill_holes(ndi.binary_closing(brain1, iterations=2))
    gm = np.where(brain1, gm, 0.0)
    wm = np.where(brain1, wm, 0.0)
    # shells outside the brain, by distance in mm (1 mm grid)
    out_dist = ndi.distance_transform_edt(~brain1).astype(np.float32)
    shell_csf = (out_dist > 0) & (out_dist <= 2.0)
    skull1 = (out_dist > 2.0) & (out_dist <= 8.0)
    scalp1 = (out_dist > 8.0) & (out_dist <= 13.0)
    csf1 = np.clip(brain1.astype(np.float32) - gm - wm, 0.0, 1.0) + shell_csf

    f = factor
    csf, gmf, wmf = _block_mean(csf1, f), _block_mean(gm, f), _block_mean(wm, f)
    skull, scalp = _block_mean(skull1, f), _block_mean(scalp1, f)
    brain = _block_mean(brain1, f)
    affine = aff.copy()
    affine[:3, :3] = aff[:3, :3] * f
    affine[:3, 3] = aff[:3, 3] + aff[:3, :3] @ np.full(3, (f - 1) / 2.0)

    shape = csf.shape
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    mni = (idx @ affine[:3, :3].T + affine[:3, 3]).T.reshape(3, *shape)
    brain_mask = brain > 0.5
    brain_dist = ndi.distance_transform_edt(brain_mask, sampling=f).astype(np.float32)

    # ventricles: deep CSF near the midline, above the brainstem
    ventricles = (csf > 0.5) & (brain_dist > 9.0) & (np.abs(mni[0]) < 32) & (mni[2] > -15)
    ventricles &= (mni[1] > -60) & (mni[1] < 30)
    lab, n = ndi.label(ventricles)
    if n > 1:
        sizes = ndi.sum(ventricles, lab, index=np.arange(1, n + 1))
        keep = np.arange(1, n + 1)[sizes >= max(2.0, 0.05 * sizes.max())]
        ventricles = np.isin(lab, keep)
    smooth = ndi.gaussian_filter(ventricles.astype(np.float32), sigma=5.0 / f)
    grad = np.stack(cast(list[np.ndarray], np.gradient(smooth, f))).astype(np.float32)
    norm = np.sqrt((grad**2).sum(0)).max()
    ventricle_grad = grad / max(float(norm), 1e-6)

    # choroid plexus: a fraction of the ventricle voxels in the atria
    atria = ventricles & (mni[1] < -20) & (mni[1] > -50) & (np.abs(mni[0]) > 10)
    choroid = np.where(atria, 0.6 * csf, 0.0).astype(np.float32)
    csf = csf - choroid
    # superior sagittal sinus: a tube along the midline in the outer shell, above z = 0
    d_mid = np.abs(mni[0])
    sinus = ((d_mid < 4.0) & (mni[2] > 0) & (csf > 0.3) & (brain_dist < 4.0 * f)).astype(np.float32)
    sinus *= csf
    csf = csf - sinus

    outer = (csf > 0.3) & (brain_dist < 6.0)
    cortex = ndi.gaussian_filter(outer.astype(np.float32), sigma=2.0 / f)
    cortex = np.clip(cortex / max(float(cortex.max()), 1e-6), 0.0, 1.0) * (gmf > 0.05)

    maps = np.stack([csf, gmf, wmf, skull, scalp, choroid, sinus]).astype(np.float32)
    maps = np.clip(maps, 0.0, 1.0)
    return Anatomy(
        f, affine, maps, brain_dist, ventricle_grad, cortex.astype(np.float32), ventricles
    )
