"""Lesion models: gliomas (necrotic core, enhancing rim, oedema), meningiomas, strokes, brain
metastases (small ring- or solid-enhancing nodules at the grey-white junction with oedema, several
per study) and vestibular schwannomas (one homogeneously enhancing nodule in the
cerebellopontine angle at the internal acoustic canal, no oedema).

A lesion is a level field ``r(u)`` in template millimetres ``u``: a randomly oriented, randomly
stretched ball of radius ``R`` whose surface is perturbed by a few random Fourier modes, so
that ``r <= 1`` is the whole lesion and ``r <= core``, ``r <= necrosis`` its nested parts.
Soft (partial-volume) masks are ramps of one output voxel across each level.

Sizes are set by volume: :func:`calibrate` scales ``R`` until the whole lesion, restricted to
the tissue it may occupy, has the requested volume on the template grid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from mmlib.data.phantom.anatomy import Anatomy

#: Lesion kinds and the grades they come in.
LESION_KINDS: tuple[str, ...] = ("glioma", "meningioma", "stroke", "metastasis", "schwannoma")

#: Extra-axial kinds: they may displace the bone edge (partial skull room) and have no oedema.
EXTRA_AXIAL: tuple[str, ...] = ("meningioma", "schwannoma")

#: Template mm (MNI) of a vestibular schwannoma's centre on the left (mirror x for the right):
#: in the cerebellopontine angle at the opening of the internal acoustic canal, lateral to
#: the pons, so that a 1-8 ml tumour abuts the brainstem rather than growing inside it.
IAC_MNI: tuple[float, float, float] = (-23.0, -30.0, -36.0)


@dataclass(frozen=True)
class Lesion:
    """One lesion in template space.

    Attributes:
        kind: one of :data:`LESION_KINDS`.
        center: (3,) template mm.
        radius: mm of the whole lesion (before the shape perturbation).
        shape: (3, 3) rotation-and-stretch matrix (determinant 1).
        waves: (M, 3) wave vectors (rad/mm) of the surface perturbation.
        phases: (M,) phases.
        amps: (M,) amplitudes (fraction of the radius).
        core: level of the tumour core (``r <= core``): 0 for strokes.
        necrosis: level of the necrotic core (``r <= necrosis``): 0 when none.
        enhancing: True when the core enhances (high grade, meningioma).
        mass: mass-effect strength in [0, 0.5) (tissue pushed away from the centre).
        age_hours: hours since onset (strokes).
        grade: ``"HGG"``/``"LGG"`` for gliomas, None otherwise.
    """

    kind: str
    center: np.ndarray
    radius: float
    shape: np.ndarray
    waves: np.ndarray
    phases: np.ndarray
    amps: np.ndarray
    core: float = 0.0
    necrosis: float = 0.0
    enhancing: bool = False
    mass: float = 0.0
    age_hours: float = 0.0
    grade: str | None = None

    def level(self, u: np.ndarray) -> np.ndarray:
        """The level ``r`` at template points ``u`` (N, 3); ``r <= 1`` is inside."""
        d = (u - self.center) @ self.shape.T
        r = np.sqrt((d * d).sum(1)) / self.radius
        pert = np.cos(u @ self.waves.T + self.phases) @ self.amps
        return (r + pert).astype(np.float32)

    def reach_mm(self) -> float:
        """A radius (mm) outside which the lesion and its mass effect vanish."""
        stretch = float(np.linalg.norm(np.linalg.inv(self.shape), 2))
        return self.radius * stretch * (1.0 + float(np.abs(self.amps).sum())) * 1.8 + 4.0


def soft(level: np.ndarray, at: float, width: float) -> np.ndarray:
    """Partial-volume indicator of ``level <= at`` with a ramp ``width`` (level units)."""
    return np.clip((at - level) / max(width, 1e-6) + 0.5, 0.0, 1.0).astype(np.float32)


def random_lesion(
    kind: str,
    rng: np.random.Generator,
    anatomy: Anatomy,
    volume_ml: float,
    *,
    grade: str | None = None,
    age_hours: float = 0.0,
    paediatric: bool = False,
) -> Lesion:
    """Draw a lesion of a kind, placed where that kind occurs, with a target volume.

    Args:
        kind: one of :data:`LESION_KINDS`.
        rng: the subject's generator.
        anatomy: the template maps (placement, calibration).
        volume_ml: target volume of the whole lesion (oedema included) in ml.
        grade: ``"HGG"`` (necrosis, enhancing rim) or ``"LGG"`` (diffuse, non-enhancing) for
            gliomas. Defaults to None (HGG).
        age_hours: hours since onset for strokes. Defaults to 0.
        paediatric: bias glioma placement to the posterior fossa and midline. Defaults to False.

    Raises:
        ValueError: When the kind is unknown, or no place in the brain can hold the lesion.
    """
    if kind not in LESION_KINDS:
        raise ValueError(f"unknown lesion kind {kind!r}; choose one of {', '.join(LESION_KINDS)}")
    radius = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    a = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    stretch = np.exp(rng.uniform(-0.2, 0.2, size=3))
    stretch /= np.prod(stretch) ** (1.0 / 3.0)
    shape = (a * stretch) @ a.T
    m = 6
    dirs = rng.normal(size=(m, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    wavelength = rng.uniform(0.8, 1.6, size=(m, 1)) * radius
    waves = dirs * (2 * np.pi / wavelength)
    rough = {"glioma": 0.05, "meningioma": 0.025, "stroke": 0.09, "metastasis": 0.03}.get(
        kind, 0.02
    )
    amps = rng.uniform(0.5, 1.0, size=m) * rough
    phases = rng.uniform(0, 2 * np.pi, size=m)

    dist, wm = anatomy.brain_dist, anatomy.channel("wm")
    gmwm = anatomy.channel("gm") + wm
    idx = np.indices(dist.shape).reshape(3, -1).T
    mni = anatomy.world(idx.astype(np.float32))
    flat_d = dist.reshape(-1)
    if kind == "glioma":
        ok = (wm.reshape(-1) > 0.5) & (flat_d >= min(0.9 * radius, 0.8 * dist.max()))
        if paediatric and rng.random() < 0.6:
            post = ((mni[:, 2] < -10) & (mni[:, 1] < -35)) | (np.abs(mni[:, 0]) < 12)
            ok2 = post & (gmwm.reshape(-1) > 0.5) & (flat_d >= min(0.7 * radius, 0.8 * dist.max()))
            ok = ok2 if ok2.any() else ok
    elif kind == "meningioma":
        ok = (flat_d >= 0.25 * radius) & (flat_d <= 0.25 * radius + 6.0) & (mni[:, 2] > -10)
    elif kind == "metastasis":
        # haematogenous spread ends at the grey-white junction, cerebrum and cerebellum
        gm_f, wm_f = anatomy.channel("gm").reshape(-1), wm.reshape(-1)
        ok = (gm_f > 0.25) & (wm_f > 0.25) & (flat_d >= min(radius, 0.8 * dist.max()))
    elif kind == "schwannoma":
        # the cerebellopontine angle at the internal acoustic canal, one side
        side = -1.0 if rng.random() < 0.5 else 1.0
        target = np.array(IAC_MNI) * np.array([-side, 1.0, 1.0])
        near = np.sqrt(((mni - target) ** 2).sum(1))
        inside = flat_d > 0
        ok = inside & (near <= max(6.0, 1.5 * anatomy.factor))
        if not ok.any() and inside.any():
            ok = inside & (near <= near[inside].min() + 1e-3)
    else:
        ok = (gmwm.reshape(-1) > 0.6) & (np.abs(mni[:, 0]) > 18) & (flat_d >= 0.5 * radius)
        ok &= mni[:, 2] > -20
    if not ok.any():
        raise ValueError(
            f"a {kind} of {volume_ml:.0f} ml (radius {radius:.0f} mm) does not fit in the brain "
            f"(largest inscribed radius {dist.max():.0f} mm); lower the lesion volume range"
        )
    center = mni[rng.choice(np.flatnonzero(ok))] + rng.uniform(-0.5, 0.5, 3) * anatomy.factor
    if kind == "glioma":
        hgg = grade != "LGG"
        lesion = Lesion(
            kind,
            center,
            radius,
            shape,
            waves,
            phases,
            amps,
            core=rng.uniform(0.45, 0.65) if hgg else rng.uniform(0.55, 0.75),
            necrosis=rng.uniform(0.2, 0.35) if hgg else 0.0,
            enhancing=hgg,
            mass=rng.uniform(0.15, 0.3) if hgg else 0.1,
            grade="HGG" if hgg else "LGG",
        )
    elif kind == "meningioma":
        lesion = Lesion(
            kind,
            center,
            radius,
            shape,
            waves,
            phases,
            amps,
            core=rng.uniform(0.7, 0.85),
            necrosis=0.0,
            enhancing=True,
            mass=rng.uniform(0.2, 0.35),
        )
    elif kind == "metastasis":
        # enhancing nodule inside a wide oedema; the larger ones have a necrotic centre
        core = rng.uniform(0.35, 0.55)
        necrotic = volume_ml * core**3 > 0.4 and rng.random() < 0.7
        lesion = Lesion(
            kind,
            center,
            radius,
            shape,
            waves,
            phases,
            amps,
            core=core,
            necrosis=core * rng.uniform(0.35, 0.6) if necrotic else 0.0,
            enhancing=True,
            mass=rng.uniform(0.05, 0.15),
        )
    elif kind == "schwannoma":
        # a solid, homogeneously enhancing nodule: the whole lesion is core, no oedema
        lesion = Lesion(
            kind, center, radius, shape, waves, phases, amps, core=1.0, enhancing=True, mass=0.1
        )
    else:
        lesion = Lesion(kind, center, radius, shape, waves, phases, amps, age_hours=age_hours)
    return calibrate(lesion, anatomy, volume_ml)


def calibrate(lesion: Lesion, anatomy: Anatomy, volume_ml: float, steps: int = 5) -> Lesion:
    """Scale a lesion's radius until its whole volume on the template grid is ``volume_ml``.

    The whole lesion is composed as :func:`mmlib.data.phantom.subject.render` composes it: the
    core replaces every intracranial compartment, oedema only white matter and half the grey
    matter, a stroke grey and white matter.
    """
    f = anatomy.factor
    gm, wm = anatomy.channel("gm"), anatomy.channel("wm")
    if lesion.kind == "stroke":
        room_core, room_ed = gm + wm, gm + wm
    else:
        room_core = anatomy.maps[[0, 1, 2, 5, 6]].sum(0)
        if lesion.kind in EXTRA_AXIAL:
            room_core = np.clip(room_core + 0.3 * anatomy.channel("skull"), 0, 1)
        room_ed = wm + 0.5 * gm
    inv = np.linalg.inv(anatomy.affine)
    core_level = lesion.core if lesion.kind != "stroke" else 1.0
    for _ in range(steps):
        reach = lesion.reach_mm() / 1.8
        lo = np.floor(inv[:3, :3] @ (lesion.center - reach) + inv[:3, 3]).astype(int)
        hi = np.ceil(inv[:3, :3] @ (lesion.center + reach) + inv[:3, 3]).astype(int) + 1
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        lo = np.clip(lo, 0, np.array(gm.shape))
        hi = np.clip(hi, 0, np.array(gm.shape))
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        idx = np.indices(hi - lo).reshape(3, -1).T + lo
        u = anatomy.world(idx.astype(np.float32))
        level = lesion.level(u)
        w = f / lesion.radius
        whole, core = soft(level, 1.0, w), soft(level, core_level, w)
        frac = core * room_core[box].reshape(-1) + np.clip(whole - core, 0, 1) * room_ed[
            box
        ].reshape(-1)
        vol = float(frac.sum()) * f**3 / 1000.0
        if vol <= 0:
            break
        ratio = volume_ml / vol
        if abs(ratio - 1.0) < 0.02:
            break
        lesion = replace(lesion, radius=lesion.radius * float(np.clip(ratio, 0.3, 3.0)) ** (1 / 3))
    return lesion


def lesion_volume_ml(label: np.ndarray, affine: np.ndarray) -> float:
    """Volume (ml) of the non-zero voxels of a label map with a given affine."""
    return float((label > 0).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0)


def components(label: np.ndarray) -> int:
    """Number of connected components of a label map's foreground."""
    return int(ndi.label(label > 0)[1])
