"""Registration at curation: a study's modalities to each other, the study to one template space.

The template space is the ICBM 2009a non-linear symmetric template (Fonov et al., NeuroImage
2011) that the nilearn wheel ships (skull-stripped T1, 197×233×189 at 1 mm, RAS, MNI mm; read
offline with ``nilearn.datasets.load_mni152_template``). A registered study is stored on an
axis-aligned grid in MNI millimetres at the store's spacing, and its manifest row records the
``transform`` (4×4, native world RAS mm -> MNI mm) that :mod:`mmlib.evaluate.predict` inverts
to take predictions back to the native grid.

Modes (``mmlib curate --register``):

* ``none``: no registration; the store is in the study's own world, head-centred (as before).
* ``rigid``: 6 degrees of freedom (rotation, translation), SimpleITK ``Euler3DTransform``.
* ``affine``: 12 degrees of freedom, initialised by the rigid result, ``AffineTransform``.

Both use SimpleITK's ``ImageRegistrationMethod`` (Mattes mutual information, so any contrast
registers to the T1 template; three resolution levels; regular-step gradient descent),
initialised by aligning the centres of the template's brain and the study's head foreground.
No optimiser is written here.

Coordinates: every image handed to SimpleITK is on a diagonal, positive (RAS) grid and is given
to it with an identity direction and its RAS origin, so SimpleITK's physical space *is* RAS mm
here (not its usual LPS) and the matrices it returns need no sign flips.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The values of ``mmlib curate --register``.
REGISTER_MODES: tuple[str, ...] = ("none", "rigid", "affine")
#: Which modality of a study is registered to the (T1) template: the first one present.
MOVING_PREFERENCE: tuple[str, ...] = ("t1", "t1c", "flair", "t2", "pd", "dwi", "mra", "adc")
#: Name of the template space recorded in manifests.
TEMPLATE_SPACE = "ICBM2009a"


class RegistrationError(Exception):
    """Registration failed; the message is a one-line reason."""


def check_mode(mode: str) -> str:
    """Return ``mode`` when it is one of :data:`REGISTER_MODES`.

    Raises:
        ValueError: Naming the allowed values.
    """
    if mode not in REGISTER_MODES:
        raise ValueError(f"--register {mode!r}: choose one of {', '.join(REGISTER_MODES)}")
    return mode


def _sitk() -> Any:
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - a missing dependency
        raise RegistrationError(
            "registration needs SimpleITK: pip install 'simpleitk==2.5.7' (pinned in "
            "constraints.txt), or curate with --register none"
        ) from None
    return sitk


# --------------------------------------------------------------------------------- template


@functools.lru_cache(maxsize=1)
def _icbm_1mm() -> tuple[np.ndarray, np.ndarray]:
    os.environ.setdefault("NILEARN_DATA", os.path.join(tempfile.gettempdir(), "mmlib-nilearn"))
    from nilearn import datasets

    img = datasets.load_mni152_template(resolution=1)
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


@functools.lru_cache(maxsize=4)
def icbm_template(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The ICBM 2009a T1 template at an isotropic spacing.

    Args:
        spacing: mm per voxel (the template is Gaussian pre-filtered when down-sampled).

    Returns:
        ``(volume (X, Y, Z) float32 in [0, 1], affine (4, 4))``: RAS, diagonal, MNI mm.
    """
    from mmlib.data.curate import resample, target_grid

    data, affine = _icbm_1mm()
    if abs(spacing - 1.0) < 1e-6:
        return data, affine
    shape, grid = target_grid(data.shape, affine, spacing)
    return resample(data, affine, shape, grid, order=1).astype(np.float32), grid


@functools.lru_cache(maxsize=1)
def template_center() -> np.ndarray:
    """MNI mm (3,) of the centre of the ICBM 2009a brain (the template's foreground).

    A registered study's ``center_world`` is this point for every study, so that a template
    coordinate (MNI mm minus this centre) is the same anatomy in every registered study.
    """
    data, affine = _icbm_1mm()
    idx = np.argwhere(data > 0).mean(0)
    return np.round(idx @ affine[:3, :3].T + affine[:3, 3], 4)


# ---------------------------------------------------------------------------- SimpleITK glue


def _image(data: np.ndarray, affine: np.ndarray) -> Any:
    """A SimpleITK image of a volume on a diagonal RAS grid (physical space = RAS mm)."""
    sitk = _sitk()
    diag = np.diag(affine)[:3]
    off = affine[:3, :3] - np.diag(diag)
    if np.any(diag <= 0) or np.abs(off).max() > 1e-6:
        raise RegistrationError("registration needs an axis-aligned RAS grid (diagonal affine)")
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).transpose()))
    img.SetSpacing([float(s) for s in diag])
    img.SetOrigin([float(o) for o in affine[:3, 3]])
    return img


def _matrix(transform: Any) -> np.ndarray:
    """4×4 of a SimpleITK Euler3D/Affine transform: ``y = A (x - c) + c + t``."""
    a = np.asarray(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    c = np.asarray(transform.GetCenter(), dtype=np.float64)
    t = np.asarray(transform.GetTranslation(), dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = c + t - a @ c
    return out


def _centre(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World mm of the centre of a volume's foreground (voxels above 10 % of its 99th pct)."""
    pos = data[data > 0]
    thr = 0.1 * float(np.percentile(pos, 99)) if pos.size else 0.0
    idx = np.argwhere(data > thr)
    if idx.size == 0:
        raise RegistrationError("nothing to register: the image is empty")
    return idx.mean(0) @ affine[:3, :3].T + affine[:3, 3]


#: Voxels of the fixed image the metric samples per iteration (random, seeded). 20,000 gives
#: the accuracy of 60,000 in two thirds of the time (demo cohort, affine at 2 mm, 3 studies each
#: of ixi, adni, brats2021: mean error 1.886 mm for both, 3.6 vs 5.5 s a study on one thread,
#: ``mmlib.data.alignment.alignment_errors``); 10,000 lost one ADNI study (3.99 mm mean).
METRIC_SAMPLES = 20_000


def _levels(spacing: float) -> tuple[list[int], list[float]]:
    """Shrink factors and smoothing sigmas (mm): coarsest ~8 mm, finest the given spacing."""
    shrink = sorted({max(1, round(s / spacing)) for s in (8.0, 4.0, spacing)}, reverse=True)
    return shrink, [max(0.0, (f - 1) * spacing / 2) for f in shrink]


def _run(
    fixed: Any,
    moving: Any,
    initial: Any,
    spacing: float,
    seed: int,
    iterations: int,
    mask: Any = None,
) -> Any:
    sitk = _sitk()
    reg = sitk.ImageRegistrationMethod()
    # one thread: the metric's per-thread histograms are summed in an order that depends on
    # scheduling, and the optimiser amplifies the last-bit differences (the same study registered
    # twice on a loaded 2-core machine differed by 3.7 mm); curation parallelises over studies
    reg.SetNumberOfThreads(1)
    if mask is not None:
        reg.SetMetricFixedMask(mask)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    n = int(np.prod(fixed.GetSize()))
    # seed 0 is SimpleITK's "wall clock" (a new draw each run): shift it so runs repeat
    reg.SetMetricSamplingPercentage(float(min(1.0, METRIC_SAMPLES / max(n, 1))), seed + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    shrink, sigmas = _levels(spacing)
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=True)
    # the metric and its sampler use ITK's global threader, not the method's thread count
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        reg.Execute(fixed, moving)
    except RuntimeError as err:  # ITK explains in many lines; keep the gist
        last = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise RegistrationError(f"SimpleITK registration failed: {last[-1][:200]}") from None
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return initial


def register_images(
    fixed: tuple[np.ndarray, np.ndarray],
    moving: tuple[np.ndarray, np.ndarray],
    mode: str,
    *,
    spacing: float | None = None,
    seed: int = 0,
    iterations: int = 100,
    fixed_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Register ``moving`` onto ``fixed`` (both ``(volume, diagonal RAS affine)``).

    Args:
        fixed: the image that stays (e.g. the template).
        moving: the image that moves (e.g. a study's T1).
        mode: ``rigid`` or ``affine``.
        spacing: mm of the finest level. Defaults to None (the fixed image's spacing).
        seed: seed of the metric's random sampling (same inputs, same result). Defaults to 0.
        iterations: optimiser iterations per level. Defaults to 100.
        fixed_mask: where on the fixed grid the metric is evaluated (bool, fixed's shape).
            Defaults to None (everywhere).

    Returns:
        ``(4, 4)``: moving world mm -> fixed world mm (the inverse of SimpleITK's
        fixed-to-moving transform).

    Raises:
        RegistrationError: When SimpleITK fails or an image is empty or not axis-aligned.
        ValueError: For an unknown mode (``none`` has no transform to estimate).
    """
    if mode not in ("rigid", "affine"):
        raise ValueError(f"register_images: mode {mode!r} is not 'rigid' or 'affine'")
    sitk = _sitk()
    f_img, m_img = _image(*fixed), _image(*moving)
    mask = None
    if fixed_mask is not None:
        mask = sitk.Cast(_image(fixed_mask.astype(np.float32), fixed[1]), sitk.sitkUInt8)
    sp = float(spacing if spacing is not None else np.diag(fixed[1])[0])
    c_fixed, c_moving = _centre(*fixed), _centre(*moving)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter([float(c) for c in c_fixed])
    rigid.SetTranslation([float(t) for t in c_moving - c_fixed])
    rigid = _run(f_img, m_img, rigid, sp, seed, iterations, mask)
    result = rigid
    if mode == "affine":
        aff = sitk.AffineTransform(3)
        aff.SetCenter(rigid.GetCenter())
        aff.SetMatrix(rigid.GetMatrix())
        aff.SetTranslation(rigid.GetTranslation())
        result = _run(f_img, m_img, aff, sp, seed, iterations, mask)
    fixed_to_moving = _matrix(result)
    if not np.all(np.isfinite(fixed_to_moving)) or abs(np.linalg.det(fixed_to_moving)) < 1e-3:
        raise RegistrationError("registration gave a singular transform")
    moving_to_fixed = np.linalg.inv(fixed_to_moving)
    _check_plausible(moving_to_fixed, c_moving, fixed)
    return moving_to_fixed


#: Largest scale (and smallest, its inverse) a registration may apply along any axis: heads
#: differ in size by far less; beyond it the optimiser has diverged.
MAX_SCALE = 2.0


def _check_plausible(
    moving_to_fixed: np.ndarray, c_moving: np.ndarray, fixed: tuple[np.ndarray, np.ndarray]
) -> None:
    """Reject a diverged registration: a scale outside ``[1/MAX_SCALE, MAX_SCALE]`` or a moving
    foreground centre mapped outside the fixed image's field of view. (A diverged affine seen
    on the demo cohort mapped a head onto a 9099 x 27534 x 13983 grid: 12.7 TiB to allocate.)"""
    scales = np.linalg.svd(moving_to_fixed[:3, :3], compute_uv=False)
    if scales.max() > MAX_SCALE or scales.min() < 1.0 / MAX_SCALE:
        raise RegistrationError(
            f"registration diverged: it scales by {scales.min():.2f}-{scales.max():.2f} "
            f"(a plausible head is within 1/{MAX_SCALE:g}-{MAX_SCALE:g})"
        )
    data, affine = fixed
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in data.shape], indexing="ij"))
    world = corners.reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3]
    centre = moving_to_fixed[:3, :3] @ c_moving + moving_to_fixed[:3, 3]
    if np.any(centre < world.min(0)) or np.any(centre > world.max(0)):
        raise RegistrationError(
            "registration diverged: the moving image's centre lands outside the fixed image "
            f"({np.round(centre, 1).tolist()} mm)"
        )


#: The finest level (mm) at which a study is registered to the template: a store on a finer
#: grid (1 mm, the paper scale) gets the transform estimated with the template and a block mean
#: of the study at this spacing, and applied at its own. Measured (demo cohort, one study per
#: source, affine, one thread, quiet 2-core machine; ``mmlib.data.alignment.alignment_errors`` at
#: 1 and 2 mm): mean error adni / brats2021 / ixi / isles2022 at 1 mm 1.96 / 1.95 / 1.96 /
#: **11.38** mm when registered at 1 mm (the ISLES study's fine level diverged: worse than no
#: registration, 8.39 mm), 2.04 / 2.01 / 1.86 / 1.95 mm when registered at 2 mm (at a 2 mm
#: store: 2.00 / 2.03 / 1.86 / 1.82); curating a study at 1 mm took 17-44 s, now 5.5-33 s.
FINEST_MM = 2.0


def register_to_template(
    moving: tuple[np.ndarray, np.ndarray], mode: str, spacing: float, seed: int = 0
) -> np.ndarray:
    """Register a study image to the ICBM 2009a template for a store at ``spacing`` mm.

    The transform is estimated at ``max(spacing, FINEST_MM)`` (the study block-averaged to it;
    see :data:`FINEST_MM`): as accurate at 1 mm, faster, and it does not diverge where the 1 mm
    fine level did.

    Returns:
        ``(4, 4)`` native world RAS mm -> MNI mm (identity for ``none``).
    """
    check_mode(mode)
    if mode == "none":
        return np.eye(4)
    at = max(float(spacing), FINEST_MM)
    template = icbm_template(at)
    coarse = _block_mean(*moving, round(at / float(spacing)))
    return register_images(
        template, coarse, mode, spacing=at, seed=seed, fixed_mask=template_mask(at)
    )


def _block_mean(data: np.ndarray, affine: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """``(volume, affine)`` averaged over ``factor``³ blocks (the same world positions)."""
    if factor <= 1:
        return data, affine
    shape = [n - n % factor for n in data.shape]
    crop = data[: shape[0], : shape[1], : shape[2]]
    blocks = crop.reshape(
        shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor
    ).mean(axis=(1, 3, 5))
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * factor
    # a block's centre is (factor - 1) / 2 voxels from its first voxel
    out[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.full(3, (factor - 1) / 2)
    return blocks.astype(np.float32), out


#: How far (mm) beyond the template's brain the registration metric looks: the template has
#: no skull, so a head image is compared with it only near the brain (a whole-image metric
#: shrinks a head with skull onto the brain).
MASK_MARGIN_MM = 4.0


@functools.lru_cache(maxsize=4)
def template_mask(spacing: float) -> np.ndarray:
    """The template's brain grown by :data:`MASK_MARGIN_MM` at ``spacing`` (bool (X, Y, Z)):
    where the registration metric is evaluated."""
    from scipy import ndimage

    data, _ = icbm_template(spacing)
    brain = ndimage.binary_fill_holes(data > 0.05)
    dist = ndimage.distance_transform_edt(~brain, sampling=spacing)
    return np.asarray(dist <= MASK_MARGIN_MM)


def moving_modality(modalities: Sequence[str]) -> str:
    """The modality of a study that is registered to the template (see
    :data:`MOVING_PREFERENCE`; else the first)."""
    for m in MOVING_PREFERENCE:
        if m in modalities:
            return m
    return modalities[0]


def bounding_grid(
    shape: Sequence[int], affine: np.ndarray, transform: np.ndarray, spacing: float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """An axis-aligned grid (``spacing`` mm) covering a volume's field of view after
    ``transform``.

    Args:
        shape: the volume's shape.
        affine: its voxel-to-world matrix.
        transform: world -> target world (4, 4).
        spacing: output spacing.

    Returns:
        ``(shape, affine)`` in the target world (diagonal, RAS).
    """
    from mmlib.data.curate import target_grid

    return target_grid(shape, transform @ affine, spacing)


def template_on_grid(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The ICBM 2009a T1 on a template grid of a registered store's frame.

    In a store curated with ``--register rigid|affine`` a template coordinate is MNI mm minus
    :func:`template_center`; this resamples the ICBM T1 onto a grid in those coordinates (e.g.
    ``Templates.affine`` and ``Templates.shape`` of templates learned on such a store, or
    imported with ``Templates.from_released(..., register="affine")``), to show or correlate
    learned templates against the anatomy they should match.

    Args:
        affine: (4, 4) voxel -> template mm (diagonal).
        shape: the grid's ``(X, Y, Z)``.

    Returns:
        ``(X, Y, Z)`` float32 in [0, 1], zeros outside the template's field of view.
    """
    from mmlib.data.curate import resample

    data, mni = _icbm_1mm()
    head = np.eye(4)
    head[:3, 3] = -template_center()
    return resample(data, head @ mni, shape, np.asarray(affine, np.float64), order=1).astype(
        np.float32
    )
