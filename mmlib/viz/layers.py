"""napari layer data, built without napari: ``(data, kwargs, layer_type)`` tuples.

napari's ``LayerData`` tuples are what readers return and what
:func:`mmlib.viz.napari.add_layers` turns into layers, so the npe2 reader, the dock widget, the
``mmlib view`` command and the notebook functions all build their layers here. Every layer
carries its physical scale (mm) and affine, world axis names ``x, y, z`` (RAS) and an
``metadata["mmlib"]`` dict saying what it shows. Nothing here imports napari or Qt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmlib.modalities import MODALITIES
from mmlib.proxy.templates import Templates, load_templates
from mmlib.runs import SAMPLE_KEYS, Samples, load_samples
from mmlib.viz.data import (
    Study,
    Volume,
    as_volume_array,
    load_store_study,
    load_study_folder,
    parse_store_entry,
)
from mmlib.viz.labels import LabelScheme, get_scheme

LayerData = tuple[Any, dict[str, Any], str]
"""napari's layer-data tuple: ``(data, layer keyword arguments, "image" | "labels")``."""

AXIS_LABELS: tuple[str, str, str] = ("x", "y", "z")
"""World axes of RAS arrays: x to the right, y anterior, z superior (mm)."""


def transform_kwargs(affine: np.ndarray | None) -> dict[str, Any]:
    """napari layer arguments (``scale``, ``translate``, ``affine``) for a voxel -> mm affine
    ``(4, 4)``.

    An axis-aligned affine with positive spacing becomes ``scale`` + ``translate``; any other
    keeps ``scale`` as the voxel sizes and puts the rest (rotation, flips) in ``affine``, so that
    ``layer.scale`` always reads as the spacing in mm.
    """
    if affine is None:
        return {"scale": (1.0, 1.0, 1.0), "translate": (0.0, 0.0, 0.0)}
    a = np.asarray(affine, dtype=np.float64).reshape(4, 4)
    m, t = a[:3, :3], a[:3, 3]
    spacing = np.linalg.norm(m, axis=0)
    if np.allclose(m, np.diag(np.diag(m)), atol=1e-6 * max(float(spacing.max()), 1.0)) and np.all(
        np.diag(m) > 0
    ):
        return {
            "scale": tuple(float(v) for v in np.diag(m)),
            "translate": tuple(float(v) for v in t),
        }
    rest = np.eye(4)
    rest[:3, :3] = m / spacing
    rest[:3, 3] = t
    return {"scale": tuple(float(v) for v in spacing), "translate": (0.0, 0.0, 0.0), "affine": rest}


def contrast_for(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits: ``(0, 1)`` for store-scaled arrays, else the 0.5-99.5th percentiles
    of the foreground."""
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0)
    fg = data[data > lo]
    if fg.size == 0:
        return (lo, hi if hi > lo else lo + 1.0)
    a, b = (float(v) for v in np.percentile(fg, [0.5, 99.5]))
    return (a, b if b > a else a + 1.0)


def image_layer(
    volume: Volume,
    *,
    name: str | None = None,
    colormap: str = "gray",
    contrast_limits: tuple[float, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> LayerData:
    """Layer data of one image volume ``(X, Y, Z)`` with its scale and affine."""
    data = np.asarray(volume.data)
    kwargs = {
        "name": name or volume.name,
        "colormap": colormap,
        "contrast_limits": contrast_limits or contrast_for(data),
        "axis_labels": AXIS_LABELS,
        "units": "mm",
        "metadata": {"mmlib": dict(metadata or {})},
        **transform_kwargs(volume.affine),
    }
    return data, kwargs, "image"


def labels_layer(
    label: np.ndarray | Volume,
    *,
    affine: np.ndarray | None = None,
    scheme: str | LabelScheme | None = None,
    name: str = "segmentation",
    opacity: float = 0.5,
    metadata: Mapping[str, Any] | None = None,
) -> LayerData:
    """Layer data of a label map ``(X, Y, Z)``: the scheme's colours, and names as features.

    Args:
        label: integer label map, or a :class:`~mmlib.viz.data.Volume` (its affine is used).
        affine: voxel -> mm ``(4, 4)``. Defaults to the volume's, else identity.
        scheme: ``brats2021``, ``brats2023``, ``tissue`` or a :class:`LabelScheme`. Defaults to
            None (guessed from the values: a 4 means BraTS <= 2021).
        name: layer name. Defaults to ``"segmentation"``.
        opacity: layer opacity. Defaults to 0.5.
        metadata: stored under ``metadata["mmlib"]``. Defaults to None.
    """
    import pandas as pd

    if isinstance(label, Volume):
        affine = label.affine if affine is None else affine
        label = label.data
    data = np.asarray(as_volume_array(label))
    if not np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.int32)
    sch = get_scheme(scheme, data)
    values = [0, *sorted(sch.names)]
    features = pd.DataFrame(
        {"index": values, "name": ["background"] + [sch.names[v] for v in values[1:]]}
    )
    kwargs = {
        "name": name,
        "colormap": sch.color_dict(),
        "features": features,
        "opacity": opacity,
        "axis_labels": AXIS_LABELS,
        "units": "mm",
        "metadata": {"mmlib": {"scheme": sch.name, **(metadata or {})}},
        **transform_kwargs(affine),
    }
    return data, kwargs, "labels"


def label_focus(label: np.ndarray | Volume) -> tuple[int, int, int] | None:
    """The labelled voxel nearest the label map's centre of mass, or None when nothing is labelled.

    Where a viewer should open on a labelled study: every plane through this voxel (axial,
    coronal, sagittal) cuts the label, which is not true of the centre of mass itself (it can fall
    outside a ring-enhancing or crescent-shaped lesion). All non-zero values count as the label.

    Args:
        label: integer label map ``(X, Y, Z)``, or a :class:`~mmlib.viz.data.Volume`.

    Returns:
        The voxel index ``(i, j, k)``, or None for an empty (all-zero) map.

    Raises:
        ValueError: When the map is not 3-D.
    """
    data = np.asarray(label.data if isinstance(label, Volume) else label)
    if data.ndim != 3:
        raise ValueError(f"label: expected a 3-D label map (X, Y, Z), got shape {data.shape}")
    voxels = np.argwhere(data != 0)
    if voxels.size == 0:
        return None
    centre = voxels.mean(axis=0)
    nearest = voxels[int(np.argmin(((voxels - centre) ** 2).sum(axis=1)))]
    return (int(nearest[0]), int(nearest[1]), int(nearest[2]))


def as_study(study: Study | str | Path, scheme: str | None = None) -> Study:
    """A :class:`~mmlib.viz.data.Study` from a study, a NIfTI folder or ``STORE::STUDY``."""
    if isinstance(study, Study):
        return study
    entry = parse_store_entry(str(study))
    if entry is not None:
        return load_store_study(entry[0], entry[1], scheme)
    return load_study_folder(study, scheme)


def study_layers(
    study: Study | str | Path,
    *,
    modalities: Sequence[str] | None = None,
    scheme: str | LabelScheme | None = None,
    grid: bool = False,
    label_opacity: float = 0.5,
) -> list[LayerData]:
    """Layer data of a study: one image per modality, and its label map.

    Layers are named ``<study>/<modality>`` and ``<study>/segmentation``. With ``grid`` each
    modality is followed by its own copy of the segmentation (sharing one array), so that a grid
    of stride 2 overlays it in every cell.

    Raises:
        KeyError: When a requested modality is not in the study.
    """
    st = as_study(study, scheme if isinstance(scheme, str) else None)
    names = list(modalities) if modalities is not None else st.modalities
    missing = [m for m in names if m not in st.images]
    if missing:
        raise KeyError(
            f"modalities: {st.name} has no {', '.join(missing)}; it has {', '.join(st.modalities)}"
        )
    sch = scheme if scheme is not None else st.scheme
    out: list[LayerData] = []
    for i, m in enumerate(names):
        out.append(
            image_layer(
                st.images[m], name=f"{st.name}/{m}", metadata={"study": st.name, "modality": m}
            )
        )
        if st.label is not None and (grid or i == len(names) - 1):
            suffix = f" ({m})" if grid else ""
            out.append(
                labels_layer(
                    st.label,
                    scheme=sch,
                    name=f"{st.name}/segmentation{suffix}",
                    opacity=label_opacity,
                    metadata={"study": st.name},
                )
            )
    return out


def pick_entry(
    samples: Samples,
    index: int | None = None,
    study: str | None = None,
    modality: str | None = None,
) -> int:
    """The entry ``index``, or the first matching ``study``/``modality`` (0 when all are None).

    Raises:
        IndexError: When ``index`` is out of range.
        KeyError: When no entry matches.
    """
    if index is not None:
        if not 0 <= index < len(samples):
            raise IndexError(f"index: {index} out of range for {len(samples)} samples")
        return index
    return samples.index(study, modality)


def sample_layers(
    sample: Samples | Mapping[str, Any] | str | Path,
    *,
    index: int | None = None,
    study: str | None = None,
    modality: str | None = None,
    keys: Sequence[str] = SAMPLE_KEYS,
    spacing: Sequence[float] | None = None,
) -> list[LayerData]:
    """Layer data of a proxy-task sample (target, mask, views, reconstructions), in ``keys`` order.

    ``sample`` is :class:`~mmlib.runs.Samples`, a ``samples/step_*.npz`` path, or a mapping
    of arrays ``(X, Y, Z)``, ``(N, X, Y, Z)`` or ``(B, 1, X, Y, Z)`` (the views dict of
    :class:`mmlib.proxy.brainmvp.BrainMVPObjective`). Layers are named
    ``<study>/<modality>: <key>`` (just ``<key>`` for a plain mapping). ``spacing`` (mm per voxel)
    defaults to the samples' own when the file records it, else 1 mm.
    """
    prefix = ""
    meta: dict[str, Any] = {}
    if isinstance(sample, (str, Path)):
        sample = load_samples(sample)
    if isinstance(sample, Samples):
        i = pick_entry(sample, index, study, modality)
        arrays = sample.entry(i)
        prefix = f"{sample.study[i]}/{sample.modality[i]}: "
        meta = {"study": sample.study[i], "modality": sample.modality[i], "step": sample.step}
        if spacing is None and sample.spacing is not None:
            spacing = tuple(float(v) for v in sample.spacing[i])
    else:
        arrays = {k: as_volume_array(v, index or 0) for k, v in sample.items() if k in keys}
    affine = np.diag([*(float(s) for s in (spacing or (1.0, 1.0, 1.0))), 1.0])
    out: list[LayerData] = []
    for key in keys:
        if key not in arrays:
            continue
        data = np.asarray(arrays[key], dtype=np.float32)
        limits = (0.0, 1.0) if key == "mask" else contrast_for(data)
        out.append(
            image_layer(
                Volume(key, data, affine),
                name=f"{prefix}{key}",
                contrast_limits=limits,
                colormap="magma" if key == "mask" else "gray",
                metadata={**meta, "key": key},
            )
        )
    return out


def as_templates(templates: Any, affine: np.ndarray | None = None) -> Templates:
    """:class:`mmlib.proxy.templates.Templates` from a checkpoint folder, a ``Templates``, an
    object with ``volumes`` (and ``affine``), or an array ``(8, X, Y, Z)``.

    Raises:
        ValueError: When the volumes are not 4-D.
    """
    if isinstance(templates, Templates):
        return templates
    if isinstance(templates, (str, Path)):
        return load_templates(templates)
    vol = getattr(templates, "volumes", templates)
    aff = affine if affine is not None else getattr(templates, "affine", None)
    if hasattr(vol, "detach"):
        vol = vol.detach().float().cpu().numpy()
    if aff is not None and hasattr(aff, "detach"):
        aff = aff.detach().cpu().numpy()
    vol = np.asarray(vol, dtype=np.float32)
    if vol.ndim != 4:
        raise ValueError(f"templates: expected volumes (M, X, Y, Z), got shape {vol.shape}")
    return Templates.from_volumes(vol, np.eye(4) if aff is None else aff)


def template_layers(
    templates: Any, *, affine: np.ndarray | None = None, modalities: Sequence[str] | None = None
) -> list[LayerData]:
    """Layer data of the learned templates, one per modality, min-max scaled as they are used.

    Layers are named ``template/<modality>``.
    """
    t = as_templates(templates, affine)
    names = list(modalities) if modalities is not None else list(MODALITIES[: t.volumes.shape[0]])
    scaled = t.scaled().cpu().numpy()  # the one template scaling, whole templates
    return [
        image_layer(
            Volume(m, scaled[MODALITIES.index(m)], t.affine),
            name=f"template/{m}",
            contrast_limits=(0.0, 1.0),
            metadata={"template": m},
        )
        for m in names
    ]


def surface_layers(
    label: np.ndarray | Volume,
    *,
    affine: np.ndarray | None = None,
    scheme: str | LabelScheme | None = None,
    name: str = "segmentation",
    opacity: float = 0.6,
) -> list[LayerData]:
    """Layer data of one surface per label value (marching cubes), in the scheme's colours.

    Surfaces are what a software-rendered 3-D view draws quickly (a labels volume is ray-cast
    per pixel); napari shows them with the images' scale and affine, drawn over the volume
    rendering of the images (no depth test), inner labels last.

    Args:
        label: integer label map ``(X, Y, Z)``, or a :class:`~mmlib.viz.data.Volume`.
        affine: voxel -> mm ``(4, 4)``. Defaults to the volume's, else identity.
        scheme: label scheme. Defaults to None (guessed from the values).
        name: prefix of the layer names ``<name>: <label name>``. Defaults to ``"segmentation"``.
        opacity: surface opacity. Defaults to 0.6.
    """
    from skimage.measure import marching_cubes

    if isinstance(label, Volume):
        affine = label.affine if affine is None else affine
        label = label.data
    data = np.asarray(as_volume_array(label))
    sch = get_scheme(scheme, data)
    out: list[LayerData] = []
    for value in sorted(int(v) for v in np.unique(data) if v != 0):
        mask = np.pad(data == value, 1).astype(np.float32)
        if mask.sum() < 1:
            continue
        verts, faces, _, _ = marching_cubes(mask, level=0.5)
        verts = (verts - 1.0).astype(np.float32)
        color = np.asarray(sch.colors.get(value, (1.0, 0.0, 1.0, 1.0)), dtype=np.float32)
        kwargs = {
            "name": f"{name}: {sch.names.get(value, str(value))}",
            "vertex_colors": np.tile(color, (len(verts), 1)),
            "opacity": opacity,
            "shading": "smooth",
            "blending": "translucent_no_depth",  # seen through the (volume-rendered) head
            "axis_labels": AXIS_LABELS,
            "units": "mm",
            "metadata": {"mmlib": {"label": value, "scheme": sch.name}},
            **transform_kwargs(affine),
        }
        out.append(((verts, faces.astype(np.int32)), kwargs, "surface"))
    return out
