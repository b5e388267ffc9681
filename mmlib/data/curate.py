"""Curate studies once into a crop store: RAS, isotropic, cropped to the head, scaled to [0, 1].

Per study (:func:`curate_study`):

1. load every modality and the label with nibabel; refuse unreadable (truncated) files, 4-D
   volumes where 3-D is expected, NaN/Inf voxels, constant (e.g. all-zero) volumes, labels
   that are not integers or hold values the layout does not allow;
2. check that the modalities share a physical space: the world bounding boxes must overlap
   (at least half of the smaller field of view), else the study is refused; modalities on
   different grids (ISLES FLAIR vs DWI, IXI) are resampled onto the reference grid;
3. resample everything in one step onto an axis-aligned RAS grid of ``spacing`` mm covering the
   reference modality's field of view (the reference is the modality with the widest field
   of view, so that a slab or thick-slice series does not crop the head);
   images trilinear (Gaussian pre-filtered when down-sampling), labels nearest-neighbour;
   with ``register`` ``rigid`` or ``affine`` (:mod:`mmlib.data.register`), modalities on
   another grid than the reference are first registered to it (rigid, mutual information),
   the study is registered to the ICBM 2009a template, and the grid is an axis-aligned grid
   of ``spacing`` mm in MNI space (each image resampled once, from its file's grid); the row
   records ``register`` and ``transform`` (native world RAS mm -> MNI mm), and
   ``center_world`` is the template's brain centre for every study;
4. crop to the union head foreground (threshold, opening, largest component, hole filling);
5. scale each modality so that its 5th-95th percentiles over the head map to [0, 1], clipped;
6. write arrays, manifest row and a QC record atomically into the store.

:func:`curate` runs this over many studies in parallel processes with a progress bar; ``shard``
takes every N-th study so that N independent jobs fill one store. The ``mmlib curate`` command
(:mod:`mmlib.cli.curate`) exits 0 when every study was curated, 3 when some failed (the report
lists each with a one-line reason), 2 on usage errors.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage
from scipy import ndimage
from tqdm.auto import tqdm

from mmlib.data import nifti
from mmlib.data import register as reg
from mmlib.data import store as store_mod
from mmlib.data.layouts import ROLES, ScanRef, Study
from mmlib.modalities import MODALITIES

EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED = 0, 2, 3
HIST_BINS = 32
MIN_OVERLAP = 0.5
DUPLICATE_R = 0.995  # two modalities this correlated inside the head are one series twice


class CurationError(Exception):
    """A study cannot be curated; the message is the one-line reason for the report."""


@dataclass
class Curated:
    """One curated study in memory (before it is written)."""

    row: dict[str, Any]
    images: dict[str, np.ndarray]
    label: np.ndarray | None
    qc: dict[str, Any]


# ------------------------------------------------------------------------------- loading


def _load(ref: ScanRef, what: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    path = Path(ref.path)
    try:
        img = cast(SpatialImage, nib.load(str(path)))  # NIfTI or another spatial format
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise CurationError(f"{what}: file not found {path}") from None
    except Exception as err:  # nibabel raises many types for corrupt gzip/headers
        # a header claiming more voxels than the file holds: say so, with the sizes
        problem = nifti.size_problem(path)
        if problem is not None:
            raise CurationError(f"{what}: {problem}") from None
        raise CurationError(
            f"{what}: cannot read {path} (truncated or corrupt: {nifti.reason(err)})"
        ) from None
    if ref.channel is not None:
        if data.ndim != 4 or data.shape[3] <= ref.channel:
            raise CurationError(
                f"{what}: {path} has shape {data.shape}; expected 4-D with channel {ref.channel}"
            )
        data = data[..., ref.channel]
    elif data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise CurationError(
            f"{what}: {path} is {data.ndim}-D (shape {tuple(data.shape)}) where "
            "a 3-D volume is expected"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise CurationError(f"{what}: {path} has a singular or non-finite affine")
    info = {
        "path": str(path),
        "source_shape": list(data.shape),
        "source_spacing": [round(float(v), 4) for v in np.linalg.norm(affine[:3, :3], axis=0)],
        "source_orientation": "".join(nib.aff2axcodes(affine)),
        "source_dtype": str(data.dtype),
    }
    data, affine = to_closest_ras(data, affine)
    return data, affine, info


def to_closest_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute voxel axes so that they run closest to R, A, S (no interpolation).

    Afterwards an axis-aligned source at the target spacing is copied, not interpolated.
    """
    ornt = nib.orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    out = nib.orientations.apply_orientation(data, ornt)
    return out, affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)


def _check_image(data: np.ndarray, what: str) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise CurationError(f"{what}: {bad} NaN/Inf voxels")
    lo, hi = float(data.min()), float(data.max())
    if hi - lo <= 0:
        raise CurationError(f"{what}: constant volume (every voxel is {lo:g})")
    return data


def _bbox_world(shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array(
        [
            [i, j, k]
            for i in (-0.5, shape[0] - 0.5)
            for j in (-0.5, shape[1] - 0.5)
            for k in (-0.5, shape[2] - 0.5)
        ]
    )
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world.min(0), world.max(0)


def _overlap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    inter = np.clip(np.minimum(a[1], b[1]) - np.maximum(a[0], b[0]), 0, None).prod()
    smaller = min(np.prod(a[1] - a[0]), np.prod(b[1] - b[0]))
    return float(inter / smaller) if smaller > 0 else 0.0


def target_grid(
    shape: Sequence[int], affine: np.ndarray, spacing: float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """An axis-aligned RAS grid of ``spacing`` mm covering a volume's field of view.

    Returns:
        ``(shape, affine)`` with a diagonal, positive affine.
    """
    lo, hi = _bbox_world(shape, affine)
    out_shape = tuple(int(max(1, np.ceil((h - lo_) / spacing - 1e-6))) for lo_, h in zip(lo, hi))
    out_affine = np.diag([spacing, spacing, spacing, 1.0])
    out_affine[:3, 3] = lo + spacing / 2
    return out_shape, out_affine  # type: ignore[return-value]


def resample(
    data: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    out_affine: np.ndarray,
    order: Literal[0, 1, 2, 3, 4, 5] = 1,
) -> np.ndarray:
    """Resample ``data`` (voxel-to-world ``affine``) onto the grid ``(shape, out_affine)``.

    Pure integer shifts with unchanged voxel size are copied without interpolation. When
    down-sampling an image (order > 0), a Gaussian pre-filter avoids aliasing.

    Args:
        data: the volume (X, Y, Z).
        affine: its voxel-to-world matrix (4, 4).
        shape: output shape.
        out_affine: output voxel-to-world matrix (4, 4).
        order: spline order, 1 for images, 0 for labels. Defaults to 1.

    Returns:
        The resampled volume (shape), zeros outside the source field of view.
    """
    m = np.linalg.inv(affine) @ out_affine
    mat, off = m[:3, :3], m[:3, 3]
    if np.allclose(mat, np.eye(3), atol=1e-6) and np.allclose(off, np.round(off), atol=1e-4):
        off_i = np.round(off).astype(int)
        out = np.zeros(shape, dtype=data.dtype)
        src = [slice(max(0, o), min(n, o + s)) for o, n, s in zip(off_i, data.shape, shape)]
        dst = [slice(sl.start - o, sl.stop - o) for sl, o in zip(src, off_i)]
        if all(sl.stop > sl.start for sl in src):
            out[tuple(dst)] = data[tuple(src)]
        return out
    if order > 0:
        factor = np.linalg.norm(mat, axis=0)
        sigma = np.where(factor > 1.5, np.sqrt(np.maximum(factor**2 - 1, 0)) / 2, 0)
        if np.any(sigma > 0):
            data = ndimage.gaussian_filter(data, sigma=sigma, mode="nearest")
    return ndimage.affine_transform(
        data,
        mat,
        off,
        output_shape=tuple(shape),
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )


def foreground(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """The union head foreground of co-registered volumes.

    Each volume is thresholded at 10 % of its 99th percentile of positive voxels; the union is
    opened once (removes isolated noise voxels), reduced to its largest connected component and
    its holes are filled (dark CSF inside the head stays inside).

    Returns:
        A boolean mask (X, Y, Z).
    """
    full: np.ndarray = np.zeros(volumes[0].shape, dtype=bool)
    for v in volumes:
        pos = v[v > 0]
        if pos.size:
            full |= v > 0.1 * float(np.percentile(pos, 99))
    # the morphology runs on a grid of at most ~4M voxels (every 2nd voxel at 1 mm): the mask
    # only decides the crop box and which voxels count as head, ±1 voxel does not matter
    step = 2 if full.size > 4_000_000 else 1
    mask = full[::step, ::step, ::step]
    opened = ndimage.binary_opening(mask)
    if opened.any():
        mask = opened
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(mask)
    if step > 1:
        for axis in range(3):
            mask = np.repeat(mask, step, axis=axis)
        mask = mask[: full.shape[0], : full.shape[1], : full.shape[2]]
    return mask


def _hist(values: np.ndarray) -> list[float]:
    h, _ = np.histogram(values, bins=HIST_BINS, range=(0.0, 1.0))
    return [round(float(x), 5) for x in h / max(1, h.sum())]


def curate_study(
    study: Study, spacing: float = 1.0, margin: int = 2, register: str = "none"
) -> Curated:
    """Pre-process one study in memory (see the module docstring for the steps).

    Args:
        study: the study from :func:`mmlib.data.layouts.discover`.
        spacing: the target isotropic spacing in mm. Defaults to 1.0.
        margin: voxels kept around the head's bounding box. Defaults to 2.
        register: ``none``, ``rigid`` or ``affine`` (:mod:`mmlib.data.register`): store the
            study in its own world (head-centred) or registered to the ICBM 2009a template.
            Defaults to "none".

    Returns:
        The arrays, manifest row (without ``split``) and QC record.

    Raises:
        CurationError: With a one-line reason when the study cannot be curated.
    """
    reg.check_mode(register)
    if study.problems:
        raise CurationError(study.problems[0])
    if not study.modalities:
        raise CurationError(f"{study.study}: no modalities found")
    warnings: list[str] = []
    notes: list[str] = []
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    qc_mod: dict[str, dict[str, Any]] = {}
    for mod, ref in study.modalities.items():
        data, affine, info = _load(ref, f"{study.study} {mod}")
        raw[mod] = (_check_image(data, f"{study.study} {mod} ({ref.path})"), affine)
        qc_mod[mod] = info
    # the reference is the widest field of view (an IXI MRA slab or a thick-slice FLAIR must
    # not crop the head); ties go to the finer voxels, then template order
    fov = {
        m: float(np.prod(np.subtract(*_bbox_world(d.shape, a)[::-1]))) for m, (d, a) in raw.items()
    }
    voxel = {m: float(abs(np.linalg.det(a[:3, :3]))) for m, (_, a) in raw.items()}
    reference = min(
        raw, key=lambda m: (-round(fov[m], -2), round(voxel[m], 6), MODALITIES.index(m))
    )
    ref_data, ref_aff = raw[reference]
    ref_box = _bbox_world(ref_data.shape, ref_aff)
    for mod, (data, aff) in raw.items():
        if mod == reference:
            continue
        ov = _overlap(ref_box, _bbox_world(data.shape, aff))
        if ov < MIN_OVERLAP:
            raise CurationError(
                f"{study.study}: {mod} and {reference} do not overlap in physical "
                f"space ({ov:.0%} of the smaller field of view); check their "
                "affines"
            )
        if data.shape != ref_data.shape or not np.allclose(aff, ref_aff, atol=1e-3):
            notes.append(
                f"{mod} on a different grid than {reference} (overlap {ov:.0%}); resampled"
            )
    for mod, info in qc_mod.items():
        sp = np.array(info["source_spacing"])
        if sp.max() / sp.min() > 3:
            notes.append(f"{mod}: anisotropic source voxels {info['source_spacing']} mm")
        if _oblique(raw[mod][1]):
            notes.append(f"{mod}: oblique acquisition, rotated onto the RAS grid")
    shape, grid = target_grid(ref_data.shape, ref_aff, spacing)
    same_grid = {
        m: d.shape == ref_data.shape and np.allclose(a, ref_aff, atol=1e-3)
        for m, (d, a) in raw.items()
    }
    # to_world[m]: the modality's world -> the stored world (identity without registration)
    to_world = {m: np.eye(4) for m in raw}
    transform = np.eye(4)
    if register != "none":
        try:
            transform = _register(
                raw, reference, same_grid, shape, grid, spacing, register, to_world, notes
            )
        except reg.RegistrationError as err:
            raise CurationError(f"{study.study}: {err}") from None
        shape, grid = reg.bounding_grid(ref_data.shape, ref_aff, transform, spacing)
        to_world = {m: transform @ c for m, c in to_world.items()}
    vols = {m: resample(d, to_world[m] @ a, shape, grid, order=1) for m, (d, a) in raw.items()}
    # where each modality has data at all (a slab covers part of the head)
    cover = {
        m: None
        if same_grid[m]
        else resample(np.ones(d.shape, np.uint8), to_world[m] @ a, shape, grid, order=0).astype(
            bool
        )
        for m, (d, a) in raw.items()
    }
    label = None
    if study.label is not None:
        label = _load_label(study, shape, grid, ref_box, raw, to_world, reference)
    del raw
    fg = foreground(list(vols.values()))
    if not fg.any():
        raise CurationError(f"{study.study}: no head foreground found in any modality")
    lo = np.maximum(np.argwhere(fg).min(0) - margin, 0)
    hi = np.minimum(np.argwhere(fg).max(0) + 1 + margin, shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    fg_c = fg[crop]
    affine = grid.copy()
    affine[:3, 3] = grid[:3, 3] + lo * spacing
    if register == "none":
        center_vox = np.array(ndimage.center_of_mass(fg_c))
        center_world = (affine[:3, :3] @ center_vox + affine[:3, 3]).tolist()
    else:  # one template space: the same origin (the template's brain centre) for every study
        center_world = reg.template_center().tolist()
    images: dict[str, np.ndarray] = {}
    for mod, vol in vols.items():
        v = vol[crop]
        covered = cover[mod]
        inside = fg_c if covered is None else fg_c & covered[crop]
        if not inside.any():
            raise CurationError(f"{study.study} {mod}: its field of view misses the head")
        head = v[inside]
        p5, p95 = (float(x) for x in np.percentile(head, [5, 95]))
        if p95 - p5 <= 1e-6 * max(1.0, abs(p95)):
            raise CurationError(
                f"{study.study} {mod}: no contrast inside the head (5th and "
                f"95th percentiles are both {p5:g})"
            )
        scaled = np.clip((v - p5) / (p95 - p5), 0.0, 1.0).astype(np.float32)
        images[mod] = scaled
        sh = scaled[inside]
        qc_mod[mod].update(
            {
                "p5": p5,
                "p95": p95,
                "mean": float(sh.mean()),
                "hist": _hist(sh),
                "fg_fraction": float(np.count_nonzero(vol > 0) / vol.size),
                "head_coverage": float(inside.sum() / fg_c.sum()),
            }
        )
    corr = _correlations(images, fg_c)
    for mod, rec in qc_mod.items():
        if rec["head_coverage"] < 0.5:
            notes.append(f"{mod} covers {rec['head_coverage']:.0%} of the head (a slab)")
    for (a, b), r in corr.items():
        if r > DUPLICATE_R:
            warnings.append(
                f"{a} and {b} are nearly identical inside the head (r={r:.3f}); "
                "a duplicated or mislabelled series?"
            )
    label_c = label[crop] if label is not None else None
    label_values = sorted(int(x) for x in np.unique(label_c)) if label_c is not None else []
    row = {
        "study": study.study,
        "source": study.source,
        "layout": study.layout,
        "modalities": list(images),
        "shape": [int(s) for s in fg_c.shape],
        "spacing": [float(spacing)] * 3,
        "affine": affine.tolist(),
        "center_world": [round(float(c), 4) for c in center_world],
        "label": label_c is not None,
        "label_values": label_values,
        "attrs": study.attrs,
        "split": None,
        "task": study.task,
        "role": study.role,
        "reference": reference,
        "register": register,
        "transform": np.round(transform, 8).tolist(),
    }
    qc = {
        "modalities": qc_mod,
        "warnings": warnings,
        "notes": notes,
        "head_fraction": float(fg_c.mean()),
        "correlation": {f"{a}-{b}": round(r, 4) for (a, b), r in corr.items()},
        "grid_shape": list(shape),
        "label_voxels": (
            {str(v): int(np.count_nonzero(label_c == v)) for v in label_values}
            if label_c is not None
            else {}
        ),
    }
    return Curated(row, images, label_c, qc)


def _oblique(affine: np.ndarray) -> bool:
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.abs(rot).max(axis=0).min() < 0.999)


def _correlations(images: dict[str, np.ndarray], fg: np.ndarray) -> dict[tuple[str, str], float]:
    mods = list(images)
    idx = np.flatnonzero(fg.ravel())
    if idx.size > 200_000:
        idx = idx[:: idx.size // 200_000]
    flat = {m: images[m].ravel()[idx] for m in mods}
    out = {}
    for i, a in enumerate(mods):
        for b in mods[i + 1 :]:
            sa, sb = flat[a].std(), flat[b].std()
            r = (
                float(np.mean((flat[a] - flat[a].mean()) * (flat[b] - flat[b].mean())) / (sa * sb))
                if sa > 0 and sb > 0
                else 0.0
            )
            out[(a, b)] = r
    return out


def _register(
    raw: dict[str, tuple[np.ndarray, np.ndarray]],
    reference: str,
    same_grid: dict[str, bool],
    shape: Sequence[int],
    grid: np.ndarray,
    spacing: float,
    mode: str,
    to_world: dict[str, np.ndarray],
    notes: list[str],
) -> np.ndarray:
    """Co-register modalities on other grids to the reference (rigid; fills ``to_world``),
    then register the study to the template; returns native world -> MNI mm (4, 4)."""
    ref_vol = resample(*raw[reference], shape, grid, order=1)
    # modalities written on one grid (IXI T2 and PD, ISLES DWI and ADC) move together: one
    # rigid registration per grid, of the group's preferred modality (DWI rather than ADC)
    groups: dict[tuple[Any, ...], list[str]] = {}
    for mod, (data, aff) in raw.items():
        if not same_grid[mod]:
            key = (data.shape, tuple(np.round(aff, 3).ravel()))
            groups.setdefault(key, []).append(mod)
    for mods in groups.values():
        lead = reg.moving_modality(mods)
        vol = resample(*raw[lead], shape, grid, order=1)
        corr = reg.register_images((ref_vol, grid), (vol, grid), "rigid", spacing=spacing)
        centre = _bbox_world(shape, grid)
        mid = (centre[0] + centre[1]) / 2  # how far the correction moves the grid's centre
        moved = float(np.linalg.norm(corr[:3, :3] @ mid + corr[:3, 3] - mid))
        for mod in mods:
            to_world[mod] = corr
        notes.append(
            f"{', '.join(mods)} co-registered to {reference} (rigid on {lead}; "
            f"moved {moved:.1f} mm)"
        )
    mov = reg.moving_modality(list(raw))
    if mov == reference:
        moving = ref_vol
    else:
        data, aff = raw[mov]
        moving = resample(data, to_world[mov] @ aff, shape, grid, order=1)
    transform = reg.register_to_template((moving, grid), mode, spacing)
    notes.append(f"registered to {reg.TEMPLATE_SPACE} ({mode}, moving image {mov})")
    return transform


def _load_label(
    study: Study,
    shape: Sequence[int],
    grid: np.ndarray,
    ref_box: tuple[np.ndarray, np.ndarray],
    raw: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    to_world: dict[str, np.ndarray] | None = None,
    reference: str = "",
) -> np.ndarray:
    assert study.label is not None
    data, affine, _ = _load(ScanRef(study.label), f"{study.study} label")
    data = np.asarray(data)
    if not np.all(np.isfinite(data)):
        raise CurationError(f"{study.study} label: NaN/Inf values in {study.label}")
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        raise CurationError(f"{study.study} label: non-integer values in {study.label}")
    values = {int(v) for v in np.unique(rounded)}
    allowed = set(study.label_values) if study.label_values is not None else set(range(256))
    if not values <= allowed:
        raise CurationError(
            f"{study.study} label: unexpected values {sorted(values - allowed)} "
            f"in {study.label} (allowed {sorted(allowed) if len(allowed) < 20 else '0..255'})"
        )
    if _overlap(ref_box, _bbox_world(data.shape, affine)) < MIN_OVERLAP:
        raise CurationError(f"{study.study} label: {study.label} does not overlap the images")
    move = np.eye(4)
    if raw is not None and to_world is not None:
        # the label follows the modality it was drawn on (same grid), else the reference's
        same = [
            m
            for m, (d, a) in raw.items()
            if d.shape == data.shape and np.allclose(a, affine, atol=1e-3)
        ]
        move = to_world[same[0] if same else reference]
    return resample(rounded.astype(np.uint8), move @ affine, shape, grid, order=0)


# --------------------------------------------------------------------------------- many


@dataclass
class CurateReport:
    """What one curation run did: curated, skipped (already in the store) and failed studies."""

    store: str
    spacing: float
    shard: str | None = None
    curated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def status(self) -> int:
        """The exit status: 0 when nothing failed, 3 when some studies failed."""
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def summary(self) -> str:
        """One line: counts and time."""
        return (
            f"curated {len(self.curated)}, skipped {len(self.skipped)} (already in store), "
            f"failed {len(self.failed)} in {self.seconds:.1f} s -> {self.store}"
        )

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        store_mod._atomic_write_text(path, json.dumps(asdict(self), indent=1))
        return path


def _process(
    study: Study, root: str, spacing: float, split: str, margin: int, register: str = "none"
) -> tuple[str, str, str | list[str]]:
    """Worker: curate and write one study; returns (study, status, reason-or-warnings)."""
    try:
        cur = curate_study(study, spacing, margin, register)
    except CurationError as err:
        return study.study, "failed", str(err).splitlines()[0]
    except MemoryError:
        return study.study, "failed", f"{study.study}: out of memory while curating"
    except Exception as err:  # a bug or an unforeseen input: report it, keep going
        return study.study, "failed", f"{study.study}: {nifti.reason(err)}"
    cur.row["split"] = split
    store_mod.write_study(root, cur.row, cur.images, cur.label, cur.qc)
    return study.study, "curated", cur.qc["warnings"]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``"I/N"`` (0 <= I < N).

    Raises:
        ValueError: When the text is not of that form.
    """
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= I < N (I counts from 0)")
    return i, n


def _set_role(root: Path, study: str, role: str) -> None:
    """Record ``role`` in a finished study's ``meta.json`` (atomically; the manifest is
    rewritten by :func:`mmlib.data.store.consolidate` at the end of :func:`curate`)."""
    meta = root / "studies" / store_mod.study_dirname(study) / "meta.json"
    data = json.loads(meta.read_text())
    if data["row"].get("role") == role:
        return
    data["row"]["role"] = role
    tmp = meta.with_name(f".meta.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, meta)


def curate(
    studies: Sequence[Study],
    out: str | Path,
    spacing: float = 1.0,
    workers: int = 1,
    shard: tuple[int, int] | str | None = None,
    split_file: str | Path | None = None,
    margin: int = 2,
    progress: bool = True,
    qc_report: bool = True,
    role: str | None = None,
    register: str = "none",
) -> CurateReport:
    """Curate studies into the store at ``out`` (created if needed).

    Finished studies are skipped, so an interrupted run is resumed by running it again (with
    ``role``, a finished study's recorded role is set to it without curating it again).

    Args:
        studies: from :func:`mmlib.data.layouts.discover`.
        out: the store folder.
        spacing: target isotropic spacing (mm). Defaults to 1.0.
        workers: parallel processes (1: in this process). Defaults to 1.
        shard: ``(I, N)`` or ``"I/N"``: curate only studies ``I, I+N, I+2N, ...`` of the
            id-sorted list. Defaults to None (all).
        split_file: a split file overriding the hash splits. Defaults to None.
        margin: voxels kept around the head. Defaults to 2.
        progress: show a tqdm bar. Defaults to True.
        qc_report: write the QC report (``reports/qc``) at the end. Defaults to True.
        role: ``pretrain`` or ``downstream`` for every study, replacing the sources' own
            (pre-training samples only ``pretrain`` studies when the store records roles, and
            every study when it records none). Defaults to None (the sources' roles; none for
            a dataset folder).
        register: ``none``, ``rigid`` or ``affine``: register each study to the ICBM 2009a
            template (:mod:`mmlib.data.register`); a store holds one mode (recorded in
            ``store.json``). Defaults to "none".

    Returns:
        The report (also written to ``out/reports/curate[-shard-I-of-N].json``).

    Raises:
        ValueError: When ``role`` is not one of :data:`mmlib.data.layouts.ROLES`, ``register``
            not one of :data:`mmlib.data.register.REGISTER_MODES`, or ``out`` is a store of
            another spacing or registration.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"role {role!r}: choose one of {', '.join(ROLES)}")
    reg.check_mode(register)
    t0 = time.perf_counter()
    root = store_mod.init_store(out, spacing, register)
    store_mod.clean_stale(root)
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    todo = sorted(studies, key=lambda s: s.study)
    if role is not None:
        todo = [replace(st, role=role) for st in todo]
    if shard is not None:
        todo = todo[shard[0] :: shard[1]]
    override = store_mod.read_split_file(split_file) if split_file else {}
    report = CurateReport(
        str(root), float(spacing), None if shard is None else f"{shard[0]}/{shard[1]}"
    )
    jobs = []
    for st in todo:
        if store_mod.is_done(root, st.study) and not st.problems:
            if role is not None:
                _set_role(root, st.study, role)
            report.skipped.append(st.study)
        else:
            split = override.get(st.study) or st.split or store_mod.assign_split(st.study)
            jobs.append((st, str(root), float(spacing), split, margin, register))
    bar = tqdm(total=len(jobs), desc=f"curate ({spacing:g} mm)", unit="study", disable=not progress)

    def record(result: tuple[str, str, Any]) -> None:
        sid, status, extra = result
        if status == "curated":
            report.curated.append(sid)
            if extra:
                report.warnings[sid] = list(extra)
        else:
            report.failed[sid] = extra
        bar.update(1)

    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            record(_process(*job))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_process, *job): job[0].study for job in jobs}
            for fut in as_completed(futures):
                try:
                    record(fut.result())
                except BrokenProcessPool:  # a worker was killed (e.g. out of memory)
                    record(
                        (
                            futures[fut],
                            "failed",
                            f"{futures[fut]}: a curation process died "
                            "(killed, out of memory?); rerun to retry, finished studies are kept",
                        )
                    )
    bar.close()
    store_mod.consolidate(root)
    report.seconds = time.perf_counter() - t0
    name = "curate" if shard is None else f"curate-shard-{shard[0]}-of-{shard[1]}"
    report.write(root / "reports" / f"{name}.json")
    if qc_report:
        from mmlib.data import qc

        qc.write_report(store_mod.Store(root), root / "reports" / "qc")
    return report
