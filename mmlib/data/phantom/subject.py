"""One simulated subject: its anatomy warp, vessels, lesions, and its images on any grid.

A subject lives in *scanner (world) millimetres*. The pull-back map
``u = W(x)`` sends a world point ``x`` to template millimetres ``u``: the inverse of a head
pose (rotation, scale, translation), then a smooth random displacement, then (optionally) a
ventricle enlargement (atrophy) and the mass effect of lesions. Tissue fractions are sampled
at ``W(x)`` (trilinear), lesions are evaluated analytically before the mass effect, and every
modality is synthesised on the grid it is written on (:func:`render`), so that each source's
grid, orientation and voxel size come for free and labels align with images exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from mmlib.data.phantom.anatomy import ANATOMY_CHANNELS, Anatomy
from mmlib.data.phantom.lesions import EXTRA_AXIAL, Lesion, soft
from mmlib.data.phantom.tissues import COMPARTMENTS, SEQUENCES, Tissue, signal_table, stroke_tissue

_C = {name: i for i, name in enumerate(COMPARTMENTS)}


@dataclass
class VesselTree:
    """A procedurally grown arterial tree: points (template mm) with radii (mm)."""

    points: np.ndarray
    radii: np.ndarray

    def fraction(self, u: np.ndarray, voxel_mm: float) -> np.ndarray:
        """Vessel fraction at template points ``u`` (N, 3) for a voxel size (partial volume)."""
        out = np.zeros(len(u), dtype=np.float32)
        if len(self.points) == 0:
            return out
        tree = cKDTree(self.points)
        bound = float(self.radii.max()) + voxel_mm
        # k=1 over (N, 3) points: one distance and one index per point
        dist, nearest = cast(
            tuple[np.ndarray, np.ndarray], tree.query(u, k=1, distance_upper_bound=bound)
        )
        hit = np.isfinite(dist)
        r = self.radii[nearest[hit]]
        out[hit] = np.clip((r - dist[hit]) / max(voxel_mm, 1e-3) + 0.5, 0.0, 1.0)
        return out

    def splat(self, anatomy: Anatomy) -> np.ndarray:
        """The tree rendered onto the template grid (X, Y, Z), partial volume by distance."""
        shape = anatomy.shape
        inv = np.linalg.inv(anatomy.affine)
        f = anatomy.factor
        vol = np.zeros(shape, dtype=np.float32)
        vox = self.points @ inv[:3, :3].T + inv[:3, 3]
        base = np.round(vox).astype(int)
        reach = int(math.ceil(float(self.radii.max()) / f + 0.5))
        for off in np.ndindex(*(2 * reach + 1,) * 3):
            o = np.array(off) - reach
            cell = base + o
            ok = np.all((cell >= 0) & (cell < np.array(shape)), axis=1)
            d = np.linalg.norm((cell[ok] - vox[ok]) * f, axis=1)
            val = np.clip((self.radii[ok] - d) / f + 0.5, 0.0, 1.0) * np.minimum(
                1.0, (2 * self.radii[ok] / f) ** 2
            )
            np.maximum.at(vol, tuple(cell[ok].T), val.astype(np.float32))
        return vol


def grow_vessels(rng: np.random.Generator, anatomy: Anatomy, generations: int = 5) -> VesselTree:
    """Grow an arterial tree from the circle of Willis into the brain.

    Roots: both internal carotids (splitting into the middle and anterior cerebral arteries)
    and the basilar artery (into both posterior cerebral arteries). Each branch is a random
    walk of 10-25 mm that splits in two with radius x0.75 (Murray-like), stopping when it
    leaves the brain or becomes thinner than 0.4 mm.
    """
    inv = np.linalg.inv(anatomy.affine)
    brain = anatomy.brain_dist > 0
    nx, ny, nz = brain.shape
    a, t = inv[:3, :3], inv[:3, 3]

    def inside(p: np.ndarray) -> bool:
        i, j, k = (int(round(v)) for v in a @ p + t)
        return 0 <= i < nx and 0 <= j < ny and 0 <= k < nz and bool(brain[i, j, k])

    pts: list[np.ndarray] = []
    rad: list[float] = []
    jitter = rng.normal(0, 2.0, 3)
    stack: list[tuple[np.ndarray, np.ndarray, float, int]] = []
    for side in (-1.0, 1.0):
        ica = np.array([18.0 * side, 2.0, -22.0]) + jitter
        stack.append((ica, np.array([0.9 * side, 0.0, 0.35]), 1.6, 0))  # MCA
        stack.append((ica, np.array([-0.35 * side, 0.9, 0.3]), 1.2, 1))  # ACA
        ba = np.array([0.0, -22.0, -22.0]) + jitter
        stack.append((ba, np.array([0.6 * side, -0.8, 0.25]), 1.2, 1))  # PCA
        for z in np.arange(-40.0, -22.0, 1.0):  # the carotid siphon below
            pts.append(np.array([18.0 * side, 2.0, z]) + jitter)
            rad.append(2.0)
    for z in np.arange(-45.0, -22.0, 1.0):
        pts.append(np.array([0.0, -22.0, z]) + jitter)
        rad.append(1.5)
    while stack:
        p, d, r, gen = stack.pop()
        d = d / np.linalg.norm(d)
        length = rng.uniform(10.0, 25.0)
        for _ in range(int(length)):
            d = d + rng.normal(0, 0.15, 3)
            d /= np.linalg.norm(d)
            p = p + d
            if not inside(p) and gen > 0:
                break
            pts.append(p.copy())
            rad.append(r)
        else:
            if gen < generations and r * 0.75 >= 0.4:
                for _ in range(2):
                    nd = d + rng.normal(0, 0.6, 3)
                    stack.append((p.copy(), nd, r * 0.75, gen + 1))
    return VesselTree(np.asarray(pts, dtype=np.float32), np.asarray(rad, dtype=np.float32))


@dataclass
class Subject:
    """Everything random about one subject (drawn once, rendered on any number of grids).

    Attributes:
        pose: (4, 4) template mm -> world mm (rotation, isotropic scale, translation).
        disp: (3, gx, gy, gz) smooth displacement in mm on a coarse template grid.
        disp_affine: (4, 4) coarse-grid voxel -> template mm.
        ventricle_shift: atrophy: mm that tissue is pulled away from the ventricles.
        thinning: atrophy: fraction of cortical GM turned into CSF.
        lesions: the lesions.
        tissues: the subject's tissue properties.
        vessels: the arterial tree.
        vessel_map: the tree on the template grid (X, Y, Z).
        attrs: study-level attributes (participants.tsv columns).
    """

    pose: np.ndarray
    disp: np.ndarray
    disp_affine: np.ndarray
    ventricle_shift: float
    thinning: float
    lesions: list[Lesion]
    tissues: dict[str, Tissue]
    vessels: VesselTree
    vessel_map: np.ndarray
    attrs: dict[str, object] = field(default_factory=dict)


def random_pose(
    rng: np.random.Generator, rotation_deg: float, shift_mm: float, scale: float
) -> np.ndarray:
    """A head pose: rotation (uniform within ``±rotation_deg`` per axis), scale, shift."""
    ang = np.radians(rng.uniform(-rotation_deg, rotation_deg, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, :3] = rz @ ry @ rx * scale
    pose[:3, 3] = rng.uniform(-shift_mm, shift_mm, 3)
    return pose


def random_displacement(
    rng: np.random.Generator, anatomy: Anatomy, amplitude_mm: float, spacing_mm: float = 16.0
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field on a coarse grid covering the template."""
    lo = anatomy.affine[:3, 3]
    extent = np.array(anatomy.shape) * anatomy.factor
    n = np.ceil(extent / spacing_mm).astype(int) + 3
    field_ = ndi.gaussian_filter(rng.normal(size=(3, *n)), sigma=(0, 1, 1, 1))
    field_ *= amplitude_mm / max(float(field_.std()), 1e-6)
    aff = np.eye(4)
    aff[:3, :3] *= spacing_mm
    aff[:3, 3] = lo - spacing_mm
    return field_.astype(np.float32), aff


def _sample(volumes: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear samples of (C, X, Y, Z) volumes at voxel coords (3, N) -> (C, N), 0 outside.

    One :func:`torch.nn.functional.grid_sample` over all channels (2.2x faster than
    ``scipy.ndimage.map_coordinates`` per channel on one thread: most of a study's simulation
    time); a point outside ``[0, n - 1]`` along any axis is 0, as ``map_coordinates`` with
    ``mode="constant"`` gives (grid_sample would blend the border voxel with the zero padding).
    """
    import torch
    import torch.nn.functional as F

    vol = np.ascontiguousarray(volumes, dtype=np.float32)
    c = np.asarray(coords, dtype=np.float32)
    size = np.asarray(vol.shape[1:], dtype=np.float32)[:, None]
    inside = ((c >= 0) & (c <= size - 1)).all(0)
    # grid_sample's last axis is (W, H, D) = (Z, Y, X) for an input (1, C, X, Y, Z)
    grid = (2 * c / np.maximum(size - 1, 1) - 1)[::-1].T.copy()
    out = F.grid_sample(
        torch.from_numpy(vol)[None],
        torch.from_numpy(grid).view(1, 1, 1, -1, 3),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return np.where(inside, out.view(vol.shape[0], -1).numpy(), np.float32(0.0))


def pull_back(subject: Subject, anatomy: Anatomy, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Template mm of world points ``x`` (N, 3): ``(u_lesion, u_tissue)`` before and after the
    mass effect of the lesions."""
    inv_pose = np.linalg.inv(subject.pose)
    u = (x @ inv_pose[:3, :3].T + inv_pose[:3, 3]).astype(np.float32)
    dinv = np.linalg.inv(subject.disp_affine)
    c = (u @ dinv[:3, :3].T + dinv[:3, 3]).T.astype(np.float32)
    u = u + _sample(subject.disp, c).T
    if subject.ventricle_shift > 0:
        ainv = np.linalg.inv(anatomy.affine)
        cv = (u @ ainv[:3, :3].T + ainv[:3, 3]).T.astype(np.float32)
        u = u + subject.ventricle_shift * _sample(anatomy.ventricle_grad, cv).T
    u_lesion = u
    u = u.copy()
    for les in subject.lesions:
        if les.mass <= 0:
            continue
        d = u - les.center
        r2 = (d * d).sum(1)
        sigma = 1.2 * les.radius * max(les.core, 0.5)
        u = les.center + d * (1.0 - les.mass * np.exp(-r2 / (2 * sigma**2)))[:, None]
    return u_lesion, u.astype(np.float32)


def _in_head_box(subject: Subject, anatomy: Anatomy, x: np.ndarray) -> np.ndarray:
    """Points (N, 3) whose template position (pose only) lies within the head's box plus a
    margin; everything else is air and is not sampled."""
    head = anatomy.maps[:5].sum(0) > 0
    idx = np.argwhere(head)
    lo = anatomy.world(idx.min(0).astype(np.float32)) - 15.0
    hi = anatomy.world(idx.max(0).astype(np.float32)) + 15.0
    inv_pose = np.linalg.inv(subject.pose)
    u = x @ inv_pose[:3, :3].T.astype(np.float32) + inv_pose[:3, 3].astype(np.float32)
    return np.all((u >= np.minimum(lo, hi)) & (u <= np.maximum(lo, hi)), axis=1)


@dataclass
class Rendered:
    """A subject's images on one grid.

    Attributes:
        images: modality -> (X, Y, Z) float32 (scanner units; ADC in 1e-6 mm²/s).
        fractions: (K, X, Y, Z) float32 compartment fractions, order :data:`COMPARTMENTS`.
        brain: (X, Y, Z) bool intracranial mask (what skull-stripping keeps).
    """

    images: dict[str, np.ndarray]
    fractions: np.ndarray
    brain: np.ndarray

    def fraction(self, name: str) -> np.ndarray:
        """One compartment's fraction map by name."""
        return self.fractions[_C[name]]

    def lesion_label(self) -> np.ndarray:
        """Generic lesion codes (X, Y, Z) uint8: 1 necrotic/non-enhancing core (or stroke),
        2 oedema, 3 enhancing (or meningioma); argmax within the whole lesion (fraction >= 0.5)."""
        core = self.fraction("necrosis") + self.fraction("nonenhancing") + self.fraction("stroke")
        ed = self.fraction("oedema")
        et = self.fraction("enhancing") + self.fraction("meningioma")
        whole = core + ed + et
        codes = np.argmax(np.stack([core, ed, et]), axis=0).astype(np.uint8) + 1
        return np.where(whole >= 0.5, codes, 0).astype(np.uint8)

    def tissue_label(self) -> np.ndarray:
        """MRBrainS-style tissue labels (X, Y, Z) uint8: 1 CSF, 2 GM, 3 WM, 0 elsewhere.
        Lesion compartments count as the tissue they replaced (GM/WM)."""
        csf = self.fraction("csf") + self.fraction("choroid") + self.fraction("sinus")
        les = sum(
            self.fraction(k)
            for k in ("oedema", "enhancing", "necrosis", "nonenhancing", "stroke", "meningioma")
        )
        gm, wm = self.fraction("gm"), self.fraction("wm") + les
        lab = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.uint8) + 1
        return np.where(csf + gm + wm >= 0.5, lab, 0).astype(np.uint8)


def bias_field(rng: np.random.Generator, x: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(poly2(x))`` with ~``amplitude`` log-std over a head."""
    p = (x / 80.0).astype(np.float32)
    terms = [
        p[:, 0],
        p[:, 1],
        p[:, 2],
        p[:, 0] * p[:, 1],
        p[:, 1] * p[:, 2],
        p[:, 0] * p[:, 2],
        p[:, 0] ** 2,
        p[:, 1] ** 2,
        p[:, 2] ** 2,
    ]
    coef = rng.normal(0.0, amplitude / 2.0, len(terms))
    log = sum(c * t for c, t in zip(coef, terms))
    return np.exp(log).astype(np.float32)


def rician(rng: np.random.Generator, s: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of a signal with complex Gaussian noise of std ``sigma`` (Rician)."""
    n1 = rng.standard_normal(s.shape, dtype=np.float32)
    n2 = rng.standard_normal(s.shape, dtype=np.float32)
    return np.sqrt((s + sigma * n1) ** 2 + (sigma * n2) ** 2)


def grid_points(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World mm (N, 3) of every voxel of a grid, C order."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    return idx @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)


def render(
    subject: Subject,
    anatomy: Anatomy,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    modalities: tuple[str, ...] | list[str],
    rng: np.random.Generator,
    *,
    noise: float = 0.03,
    bias: float = 0.15,
) -> Rendered:
    """Synthesise a subject's modalities on one grid (noise, bias field included).

    Args:
        subject: the subject.
        anatomy: the template maps.
        affine: (4, 4) voxel -> world mm of the grid.
        shape: the grid's ``(X, Y, Z)``.
        modalities: canonical names to synthesise.
        rng: generator for the noise and bias draws.
        noise: Rician noise std relative to the brightest of GM/WM. Defaults to 0.03.
        bias: log-amplitude of the bias field. Defaults to 0.15.

    Returns:
        The :class:`Rendered` images (relative units before the scanner scale; ADC in
        1e-6 mm²/s) and compartment fractions on the grid.
    """
    x_all = grid_points(affine, shape)
    n_all = len(x_all)
    head = _in_head_box(subject, anatomy, x_all)
    x = x_all[head]
    n = len(x)
    u_les, u = pull_back(subject, anatomy, x)
    ainv = np.linalg.inv(anatomy.affine)
    cu = (u @ ainv[:3, :3].T + ainv[:3, 3]).T.astype(np.float32)
    anat = _sample(anatomy.maps, cu)
    voxel_mm = float(np.abs(np.linalg.det(affine[:3, :3])) ** (1 / 3))
    frac = np.zeros((len(COMPARTMENTS), n), dtype=np.float32)
    for i, name in enumerate(ANATOMY_CHANNELS):
        frac[_C[name]] = anat[i]
    if "mra" in modalities:
        frac[_C["vessel"]] = subject.vessels.fraction(u, voxel_mm)
    else:
        frac[_C["vessel"]] = _sample(subject.vessel_map[None], cu)[0]
    if subject.thinning > 0:
        loss = subject.thinning * _sample(anatomy.cortex[None], cu)[0] * frac[_C["gm"]]
        frac[_C["gm"]] -= loss
        frac[_C["csf"]] += loss
    brain_parts = [_C[k] for k in ("csf", "gm", "wm", "choroid", "sinus", "vessel")]
    for les in subject.lesions:
        near = np.flatnonzero(((u_les - les.center) ** 2).sum(1) < les.reach_mm() ** 2)
        if near.size == 0:
            continue
        level = les.level(u_les[near])
        w = voxel_mm / les.radius
        whole = soft(level, 1.0, w)
        sub = frac[:, near]
        gm, wm = sub[_C["gm"]], sub[_C["wm"]]
        if les.kind == "stroke":
            take = whole
            sub[_C["stroke"]] += take * (gm + wm)
            sub[_C["gm"]] *= 1 - take
            sub[_C["wm"]] *= 1 - take
        else:
            core = soft(level, les.core, w)
            nec = soft(level, les.necrosis, w) if les.necrosis > 0 else np.zeros_like(core)
            room = sub[brain_parts].sum(0)
            if les.kind in EXTRA_AXIAL:
                room = np.clip(room + sub[_C["skull"]] * 0.3, 0, 1)
            core_frac = core * room
            for k in brain_parts:
                sub[k] *= 1 - core
            if les.kind == "meningioma":
                sub[_C["meningioma"]] += core_frac
            elif les.enhancing:
                sub[_C["necrosis"]] += nec * room
                sub[_C["enhancing"]] += (core - nec) * room
            else:
                sub[_C["nonenhancing"]] += core_frac
            ed = np.clip(whole - core, 0, 1) / np.clip(1 - core, 1e-3, 1)
            ed_wm, ed_gm = ed * sub[_C["wm"]], 0.5 * ed * sub[_C["gm"]]
            sub[_C["oedema"]] += ed_wm + ed_gm
            sub[_C["wm"]] -= ed_wm
            sub[_C["gm"]] -= ed_gm
        frac[:, near] = sub
    total = frac.sum(0)
    frac /= np.maximum(total, 1.0)
    full = np.zeros((len(COMPARTMENTS), n_all), dtype=np.float32)
    full[:, head] = frac
    frac, x, n = full, x_all, n_all
    brain_idx = [_C[k] for k in COMPARTMENTS if k not in ("skull", "scalp")]
    brain = frac[brain_idx].sum(0) >= 0.5

    tissues = dict(subject.tissues)
    for les in subject.lesions:
        if les.kind == "stroke":
            tissues["stroke"] = stroke_tissue(subject.tissues["stroke"], les.age_hours)
    images: dict[str, np.ndarray] = {}
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for mod in modalities:
        kind = SEQUENCES[mod].kind
        key = "diffusion" if kind in ("dwi", "adc") else mod
        if key not in cache:
            s_tab, s0_tab = signal_table(tissues, mod)
            ref = float(max(s0_tab[_C["gm"]], s0_tab[_C["wm"]]))
            b = bias_field(rng, x, bias)
            s = (s_tab @ frac) * b
            s0 = (s0_tab @ frac) * b
            sigma = noise * ref
            sn = rician(rng, s, sigma)
            s0n = rician(rng, s0, sigma) if kind in ("dwi", "adc") else sn
            cache[key] = (sn, s0n)
        sn, s0n = cache[key]
        if kind == "adc":
            bval = SEQUENCES[mod].b
            valid = s0n > 0.1 * float(np.median(s0n[brain])) if brain.any() else s0n > 0
            adc = np.zeros(n, dtype=np.float32)
            adc[valid] = np.log(s0n[valid] / np.maximum(sn[valid], 1e-6)) / bval * 1e6
            images[mod] = np.clip(adc, 0.0, 4000.0).reshape(shape)
        else:
            images[mod] = sn.reshape(shape)
    return Rendered(images, frac.reshape(len(COMPARTMENTS), *shape), brain.reshape(shape))
