"""Open studies, proxy-task samples, templates and segmentations in napari.

Every function takes an optional ``viewer`` (a new, shown one is made when None), adds layers
with their physical scale (mm) and affine (built by :mod:`mmlib.viz.layers`), and returns the
layers it added, so the same calls work from JupyterLab (``%gui qt``), from the ``napari``
command (the mmlib plugin's dock widget) and from ``mmlib view PATH``. This module imports
napari lazily and Qt only inside :func:`screenshot`; the widgets live in :mod:`mmlib.viz._widget`.

Examples::

    >>> from mmlib.viz import napari as mv
    >>> viewer = mv.new_viewer()                                   # doctest: +SKIP
    >>> mv.open_study("BraTS2021_00000/", viewer, grid=True)       # doctest: +SKIP
    >>> mv.open_sample(run.samples(), viewer, study="s0", modality="t1")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmlib.runs import SAMPLE_KEYS, RunFolder, Samples
from mmlib.viz.data import Study, Volume
from mmlib.viz.labels import LabelScheme
from mmlib.viz.layers import (
    LayerData,
    image_layer,
    label_focus,
    labels_layer,
    sample_layers,
    study_layers,
    surface_layers,
    template_layers,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Layer

PLANES: dict[str, tuple[tuple[int, int, int], tuple[str, str]]] = {
    # dims order (slider first, then rows, columns) and the 2-D camera orientation, for RAS arrays:
    # anterior / superior up, the patient's right on the screen's right (neurological view).
    "axial": ((2, 1, 0), ("up", "right")),
    "coronal": ((1, 2, 0), ("up", "right")),
    "sagittal": ((0, 2, 1), ("up", "right")),
}


def new_viewer(
    show: bool = True, title: str = "mmlib", size: tuple[int, int] | None = None
) -> napari.Viewer:
    """A napari viewer, on the current display or a private Xvfb started for it.

    Without any display, a hidden viewer (``show=False``) still works on Qt's offscreen
    platform (layers, no screenshots); a shown one cannot.

    Args:
        show: show the window (needed for screenshots). Defaults to True.
        title: window title. Defaults to ``"mmlib"``.
        size: window width and height in pixels. Defaults to None (napari's).

    Raises:
        RuntimeError: When ``show`` and no display can be had (see :mod:`mmlib.viz.display`).
    """
    import os

    from mmlib.viz.display import ensure_display, no_display_reason

    if not ensure_display():
        if show:
            raise RuntimeError(f"napari cannot open a window: {no_display_reason()}")
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a hidden viewer needs no display
    import napari

    viewer = napari.Viewer(show=show, title=title)
    if size is not None:
        viewer.window.resize(*size)
    return viewer


def display_status() -> tuple[bool, str]:
    """Whether a shown napari viewer can be had here (starting Xvfb if needed), and if not why."""
    from mmlib.viz.display import ensure_display, no_display_reason

    ok = ensure_display()
    return ok, "" if ok else no_display_reason()


def _viewer(viewer: napari.Viewer | None) -> napari.Viewer:
    return new_viewer() if viewer is None else viewer


def add_layers(viewer: napari.Viewer, layer_data: Sequence[LayerData]) -> list[Layer]:
    """Add layer-data tuples ``(data, kwargs, type)`` to ``viewer``; returns the layers."""
    from napari.layers import Layer

    with batched(viewer):
        return [
            viewer.add_layer(Layer.create(data, dict(kwargs), kind))
            for data, kwargs, kind in layer_data
        ]


def remove_layers(viewer: napari.Viewer, layers: Sequence[Layer]) -> None:
    """Remove ``layers`` (those still in the viewer) with one scene-graph update."""
    with batched(viewer):
        for layer in layers:
            if layer in viewer.layers:
                viewer.layers.remove(layer)


def batched(viewer: napari.Viewer) -> Any:
    """A context that pauses napari's scene-graph updates (one update, one ``gc.collect``,
    at exit)."""
    import contextlib

    batch = getattr(viewer.layers, "batched_update", None)
    return batch() if batch is not None else contextlib.nullcontext()


def open_segmentation(
    label: np.ndarray | Volume,
    viewer: napari.Viewer | None = None,
    *,
    affine: np.ndarray | None = None,
    scheme: str | LabelScheme | None = None,
    name: str = "segmentation",
    opacity: float = 0.5,
) -> Labels:
    """Add a label map ``(X, Y, Z)`` as a labels layer with its scheme's colours and names.

    Args:
        label: integer label map, or a :class:`~mmlib.viz.data.Volume` (its affine is used).
        viewer: where to add it. Defaults to None (a new viewer).
        affine: voxel -> mm ``(4, 4)``. Defaults to the volume's, else identity.
        scheme: ``brats2021`` (enhancing = 4), ``brats2023`` (enhancing = 3), ``tissue`` or a
            :class:`~mmlib.viz.labels.LabelScheme`. Defaults to None (a 4 in the map means
            BraTS <= 2021, else 2023).
        name: layer name. Defaults to ``"segmentation"``.
        opacity: layer opacity. Defaults to 0.5.

    Returns:
        The labels layer; hovering shows each label's name (``layer.features["name"]``).
    """
    viewer = _viewer(viewer)
    return add_layers(
        viewer, [labels_layer(label, affine=affine, scheme=scheme, name=name, opacity=opacity)]
    )[0]


def open_study(
    study: Study | str | Path,
    viewer: napari.Viewer | None = None,
    *,
    modalities: Sequence[str] | None = None,
    scheme: str | LabelScheme | None = None,
    grid: bool = False,
    plane: str = "axial",
    label_opacity: float = 0.5,
) -> list[Layer]:
    """Add every modality of a study as an image layer, and its label map as a labels layer.

    Layers are named ``<study>/<modality>`` and ``<study>/segmentation``. In grid mode each
    modality gets its own cell with its own copy of the segmentation on top (the copies share
    one array). A labelled study opens at the slices through the label's centre, the
    segmentation visible (:func:`focus_on_label`); one without a label at the middle slices.

    Args:
        study: a :class:`~mmlib.viz.data.Study`, a folder of NIfTI files or ``STORE::STUDY``.
        viewer: where to add the layers. Defaults to None (a new viewer).
        modalities: which modalities, in order. Defaults to None (all present).
        scheme: label scheme (see :func:`open_segmentation`). Defaults to the study's.
        grid: one cell per modality. Defaults to False.
        plane: ``axial``, ``coronal`` or ``sagittal``. Defaults to ``"axial"``.
        label_opacity: opacity of the segmentation. Defaults to 0.5.

    Returns:
        The layers added, in the order added.

    Raises:
        KeyError: When a requested modality is not in the study.
    """
    data = study_layers(
        study, modalities=modalities, scheme=scheme, grid=grid, label_opacity=label_opacity
    )
    viewer = _viewer(viewer)
    layers = add_layers(viewer, data)
    set_plane(viewer, plane)
    if grid:
        set_grid(viewer, stride=2 if any(kind == "labels" for _, _, kind in data) else 1)
    from napari.layers import Labels

    labels = [layer for layer in layers if isinstance(layer, Labels)]
    if labels:
        focus_on_label(viewer, labels)
    return layers


def focus_on_label(
    viewer: napari.Viewer, layers: Labels | Sequence[Labels]
) -> tuple[float, ...] | None:
    """Show the slices through a label's centre, with its labels layer(s) visible.

    The viewer's position moves to the labelled voxel nearest the label's centre of mass
    (:func:`~mmlib.viz.layers.label_focus`), so the axial, coronal and sagittal planes all cut the
    label; :func:`open_study` does this for a labelled study instead of opening at the middle slice.

    Args:
        viewer: the viewer.
        layers: a labels layer, or several that show one label map (the copies of grid mode);
            the first gives the position, all are made visible.

    Returns:
        The world position (mm) moved to, or None when the label map is empty (nothing moves).
    """
    group = [layers] if not isinstance(layers, Sequence) else list(layers)
    if not group:
        raise ValueError("focus_on_label: give at least one labels layer")
    voxel = label_focus(np.asarray(group[0].data))
    for layer in group:
        layer.visible = True
    if voxel is None:
        return None
    world = tuple(float(v) for v in group[0].data_to_world(voxel))
    for axis, value in enumerate(world):
        viewer.dims.set_point(axis, value)
    return world


def open_sample(
    sample: Samples | Mapping[str, Any] | str | Path,
    viewer: napari.Viewer | None = None,
    *,
    index: int | None = None,
    study: str | None = None,
    modality: str | None = None,
    keys: Sequence[str] = SAMPLE_KEYS,
    spacing: Sequence[float] | None = None,
    grid: bool = True,
    plane: str = "axial",
) -> list[Image]:
    """Add a proxy-task sample: target, mask, view A, view B and both reconstructions.

    Args:
        sample: :class:`~mmlib.runs.Samples`, a ``samples/step_*.npz`` path, or a mapping
            of arrays ``(X, Y, Z)``, ``(N, X, Y, Z)`` or ``(B, 1, X, Y, Z)`` (the views dict of
            :class:`mmlib.proxy.brainmvp.BrainMVPObjective`).
        viewer: where to add the layers. Defaults to None (a new viewer).
        index: which entry. Defaults to None (the one matching ``study``/``modality``, else 0).
        study: pick the entry of this study. Defaults to None.
        modality: pick the entry of this target modality. Defaults to None.
        keys: which arrays, in order. Defaults to :data:`~mmlib.runs.SAMPLE_KEYS`.
        spacing: voxel size in mm of the crop. Defaults to None (the samples file's own
            ``spacing`` when recorded, else 1 mm).
        grid: one cell per array. Defaults to True.
        plane: ``axial``, ``coronal`` or ``sagittal``. Defaults to ``"axial"``.

    Returns:
        The image layers, named ``<study>/<modality>: <key>`` (just ``<key>`` without ids).
    """
    data = sample_layers(
        sample, index=index, study=study, modality=modality, keys=keys, spacing=spacing
    )
    viewer = _viewer(viewer)
    layers = add_layers(viewer, data)
    set_plane(viewer, plane)
    if grid:
        set_grid(viewer)
    return layers


def open_templates(
    templates: Any,
    viewer: napari.Viewer | None = None,
    *,
    affine: np.ndarray | None = None,
    modalities: Sequence[str] | None = None,
    grid: bool = True,
    plane: str = "axial",
) -> list[Image]:
    """Add the learned modality templates, one layer per modality, min-max scaled as they are used.

    Args:
        templates: a checkpoint folder, a templates object (``.volumes``, ``.affine``) or an
            array ``(8, X, Y, Z)`` in :data:`~mmlib.modalities.MODALITIES` order.
        viewer: where to add the layers. Defaults to None (a new viewer).
        affine: template voxel -> head-centred mm ``(4, 4)``. Defaults to the templates' own.
        modalities: which to show. Defaults to None (all).
        grid: one cell per modality. Defaults to True.
        plane: ``axial``, ``coronal`` or ``sagittal``. Defaults to ``"axial"``.

    Returns:
        The image layers, named ``template/<modality>``.
    """
    data = template_layers(templates, affine=affine, modalities=modalities)
    viewer = _viewer(viewer)
    layers = add_layers(viewer, data)
    set_plane(viewer, plane)
    if grid:
        set_grid(viewer)
    return layers


def compare_runs(
    runs: Sequence[str | Path | RunFolder],
    viewer: napari.Viewer | None = None,
    *,
    study: str | None = None,
    modality: str | None = None,
    step: int | None = None,
    key: str = "recon_a",
    plane: str = "axial",
) -> list[Image]:
    """Side by side in grid mode: the target, then ``key`` (a reconstruction) of each run.

    Args:
        runs: run folders with samples files.
        viewer: where to add the layers. Defaults to None (a new viewer).
        study: the study to compare. Defaults to None (each run's first entry).
        modality: the target modality. Defaults to None.
        step: the step of every run. Defaults to None (each run's newest).
        key: the sample array to compare. Defaults to ``"recon_a"``.
        plane: ``axial``, ``coronal`` or ``sagittal``. Defaults to ``"axial"``.

    Returns:
        The layers: ``<study>/<modality>: target``, then ``<kind>/<run>: <key>`` per run.
    """
    folders = [r if isinstance(r, RunFolder) else RunFolder(r) for r in runs]
    data: list[LayerData] = []
    for j, run in enumerate(folders):
        s = run.samples(step)
        i = s.index(study, modality)
        entry = s.entry(i)
        if j == 0:
            data.append(
                image_layer(
                    Volume("target", entry["target"]), name=f"{s.study[i]}/{s.modality[i]}: target"
                )
            )
        data.append(
            image_layer(
                Volume(key, entry[key]), name=f"{run.name}: {key}", metadata={"run": str(run.path)}
            )
        )
    viewer = _viewer(viewer)
    layers = add_layers(viewer, data)
    set_plane(viewer, plane)
    set_grid(viewer)
    return layers


def set_plane(viewer: napari.Viewer, plane: str = "axial") -> None:
    """Show the ``axial``, ``coronal`` or ``sagittal`` plane of RAS data, anterior/superior up.

    Raises:
        ValueError: When ``plane`` is unknown.
    """
    if plane not in PLANES:
        raise ValueError(f"plane: unknown plane {plane!r}; choose one of {', '.join(PLANES)}")
    if viewer.dims.ndim != 3:
        return
    order, orientation = PLANES[plane]
    viewer.dims.ndisplay = 2
    viewer.dims.order = order
    camera_of(viewer).orientation2d = orientation
    viewer.reset_view()


def set_3d(
    viewer: napari.Viewer,
    *,
    angles: tuple[float, float, float] = (-30.0, 30.0, 0.0),
    rendering: str = "attenuated_mip",
    surfaces: bool = True,
) -> list[Layer]:
    """Render in 3-D: image layers as (attenuated) maximum-intensity projections, labels as
    surfaces.

    Args:
        viewer: the viewer.
        angles: camera Euler angles in degrees, from the axial view of :func:`set_plane`.
            Defaults to (-30, 30, 0), an oblique view of the top and one side.
        rendering: image rendering (``mip``, ``attenuated_mip``, ``translucent``, ...).
            Defaults to ``"attenuated_mip"``.
        surfaces: replace each visible labels layer by one surface per label (hiding the labels
            layer): ray-casting a labels volume is slow without a GPU (tens of seconds per frame
            on a software renderer), surfaces are not. Defaults to True.

    Returns:
        The surface layers added.
    """
    from napari.layers import Image, Labels

    added: list[Layer] = []
    if surfaces:
        for layer in [
            layer for layer in viewer.layers if isinstance(layer, Labels) and layer.visible
        ]:
            data = surface_layers(
                np.asarray(layer.data),
                affine=_data_to_world(layer),
                scheme=layer.metadata.get("mmlib", {}).get("scheme"),
                name=layer.name,
            )
            added += add_layers(viewer, data)
            layer.visible = False
    viewer.dims.ndisplay = 3
    for layer in viewer.layers:
        if isinstance(layer, Image):
            layer.rendering = rendering
    viewer.reset_view()  # (resets the camera angles too)
    camera_of(viewer).angles = angles
    # napari's status bar reads layer values under the pointer along the cursor's view direction,
    # which stays None until the mouse moves in 3-D (never, under Xvfb): labels layers with
    # features then raise in napari's status thread. Give the cursor the camera's direction.
    if hasattr(viewer.cursor, "_view_direction"):
        viewer.cursor._view_direction = np.asarray(camera_of(viewer).view_direction)
    return added


def _data_to_world(layer: Layer) -> np.ndarray:
    """The 4 x 4 voxel -> world matrix of a 3-D layer (its scale, translate, rotate, shear
    and affine)."""
    from napari.utils.transforms import Affine

    physical = Affine(
        scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear
    )
    return np.asarray(layer.affine.affine_matrix, dtype=np.float64) @ np.asarray(
        physical.affine_matrix, dtype=np.float64
    )


def camera_of(viewer: napari.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    camera = getattr(scene, "camera", None)
    return camera if camera is not None else viewer.camera


def grid_of(viewer: napari.Viewer) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid`` since napari 0.9, ``viewer.grid``
    before)."""
    canvas = getattr(viewer, "canvas", None)
    grid = getattr(canvas, "grid", None)
    return grid if grid is not None else viewer.grid


def set_grid(
    viewer: napari.Viewer,
    enabled: bool = True,
    *,
    stride: int = 1,
    shape: tuple[int, int] | None = None,
) -> None:
    """Turn napari's grid mode on or off: ``stride`` layers per cell, ``shape``
    (rows, columns) or automatic."""
    grid = grid_of(viewer)
    grid.enabled = enabled
    grid.stride = stride
    grid.shape = shape if shape is not None else (-1, -1)
    viewer.reset_view()


def screenshot(
    viewer: napari.Viewer,
    path: str | Path | None = None,
    *,
    canvas_only: bool = True,
    reset_view: bool = True,
) -> np.ndarray:
    """An RGBA screenshot ``(H, W, 4)`` uint8 of a *shown* viewer, also saved as PNG when ``path``.

    Args:
        viewer: a shown viewer.
        path: where to save the PNG. Defaults to None (not saved).
        canvas_only: the canvas only, or the whole window with its docks. Defaults to True.
        reset_view: fit the layers to the canvas first, once pending resizes (a new dock, a
            new window size) have been applied. Defaults to True.

    Raises:
        RuntimeError: When the viewer's window is not shown (hidden canvases render black).
    """
    from qtpy.QtWidgets import QApplication  # a shown viewer already runs Qt

    if not viewer.window._qt_window.isVisible():
        raise RuntimeError(
            "screenshot: the viewer is hidden; make it with show=True (under Xvfb when headless)"
        )
    QApplication.processEvents()
    if reset_view:
        viewer.reset_view()
        QApplication.processEvents()
    image = np.asarray(viewer.screenshot(canvas_only=canvas_only, flash=False))
    if path is not None:
        import matplotlib.image

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(str(path), image)
    return image


def pixel_std(image: np.ndarray) -> float:
    """Standard deviation of the RGB pixel values: near zero for a blank (black) screenshot."""
    return float(np.asarray(image)[..., :3].astype(np.float32).std())
