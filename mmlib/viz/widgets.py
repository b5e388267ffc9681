"""ipywidgets slice viewers for the notebooks, with a static figure for the book.

A :class:`SliceViewer` has a slice slider, a plane (axis) selector, a volume (modality)
selector with a "side by side" choice, and an overlay-opacity slider when there is a label map.
It renders with matplotlib into an ``ipywidgets.Image``, so it needs no JavaScript beyond the
stock widgets. The executed book is static HTML where widgets do not run, so :func:`show`
displays the interactive viewer *and* a static figure of its initial state; displaying a viewer
alone also offers ``image/png`` to front-ends without widgets.

Examples::

    >>> from mmlib.viz import widgets as mw
    >>> viewer = mw.study_viewer(study)       # doctest: +SKIP
    >>> mw.show(viewer)                       # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmlib.modalities import MODALITIES
from mmlib.runs import SAMPLE_KEYS, Samples
from mmlib.viz.data import SAMPLE_TITLES, Study
from mmlib.viz.labels import LabelScheme, get_scheme
from mmlib.viz.layers import as_study, as_templates, pick_entry
from mmlib.viz.plots import AXES, axis_index, best_slice, modality_grid, plane_name

SIDE_BY_SIDE = "side by side"


class SliceViewer:
    """Step through slices of co-registered volumes, one at a time or side by side.

    Args:
        volumes: name -> ``(X, Y, Z)`` arrays of one shape (modalities, sample arrays, ...).
        label: label map ``(X, Y, Z)`` drawn on top. Defaults to None.
        scheme: label scheme (see :mod:`mmlib.viz.labels`). Defaults to None (guessed).
        spacing: voxel size in mm. Defaults to (1, 1, 1).
        axis: initial plane. Defaults to ``"axial"``.
        index: initial slice. Defaults to None (the label's largest cross-section, else middle).
        volume: initial volume, or ``"side by side"``. Defaults to None (the first).
        opacity: initial label opacity. Defaults to 0.5.
        title: shown above the panels. Defaults to None.
        size: inches per panel of the rendered figure. Defaults to 3.0.

    Raises:
        ValueError: When ``volumes`` is empty or the shapes differ.
    """

    def __init__(
        self,
        volumes: Mapping[str, np.ndarray],
        *,
        label: np.ndarray | None = None,
        scheme: str | LabelScheme | None = None,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        axis: str = "axial",
        index: int | None = None,
        volume: str | None = None,
        opacity: float = 0.5,
        title: str | None = None,
        size: float = 3.0,
    ) -> None:
        import ipywidgets as w

        self.volumes = {str(k): np.asarray(v) for k, v in volumes.items()}
        if not self.volumes:
            raise ValueError("volumes: nothing to show (empty mapping)")
        shapes = {v.shape for v in self.volumes.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"volumes: expected 3-D arrays of one shape, got {sorted(shapes)}")
        self.shape: tuple[int, int, int] = next(iter(shapes))
        self.label = None if label is None else np.asarray(label)
        self.scheme = get_scheme(scheme, self.label) if self.label is not None else None
        self.spacing = tuple(float(s) for s in spacing)
        self.title = title
        self.size = size
        a = axis_index(axis)
        start = (
            index
            if index is not None
            else (best_slice(self.label, a) if self.label is not None else self.shape[a] // 2)
        )
        names = list(self.volumes)
        options = names + ([SIDE_BY_SIDE] if len(names) > 1 else [])
        self.axis = w.ToggleButtons(options=list(AXES), value=plane_name(a), description="plane")
        self.slice = w.IntSlider(
            value=start, min=0, max=self.shape[a] - 1, description="slice", continuous_update=False
        )
        self.volume = w.Dropdown(options=options, value=volume or names[0], description="volume")
        self.opacity = w.FloatSlider(
            value=opacity,
            min=0.0,
            max=1.0,
            step=0.05,
            description="overlay",
            disabled=self.label is None,
            continuous_update=False,
        )
        self.image = w.Image(format="png")
        self.widget = w.VBox(
            [w.HBox([self.axis, self.volume]), w.HBox([self.slice, self.opacity]), self.image]
        )
        self.axis.observe(self._on_axis, names="value")
        for control in (self.slice, self.volume, self.opacity):
            control.observe(lambda _: self.update(), names="value")
        self.update()

    def _on_axis(self, _: Any) -> None:
        a = axis_index(self.axis.value)
        with self.slice.hold_trait_notifications():
            self.slice.max = self.shape[a] - 1
            self.slice.value = (
                best_slice(self.label, a) if self.label is not None else self.shape[a] // 2
            )
        self.update()

    def figure(self) -> Figure:
        """The current view as a matplotlib figure (what the book shows)."""
        shown = (
            self.volumes
            if self.volume.value == SIDE_BY_SIDE
            else {self.volume.value: self.volumes[self.volume.value]}
        )
        a = axis_index(self.axis.value)
        title = (
            f"{self.title + ' - ' if self.title else ''}{plane_name(a)} slice {self.slice.value}"
        )
        return modality_grid(
            shown,
            a,
            self.slice.value,
            label=self.label,
            scheme=self.scheme,
            alpha=float(self.opacity.value),
            spacing=self.spacing,
            ncols=4,
            size=self.size,
            title=title,
        )

    def png(self) -> bytes:
        """The current view as PNG bytes."""
        fig = self.figure()
        buf = io.BytesIO()
        FigureCanvasAgg(fig).print_png(buf)
        return buf.getvalue()

    def update(self) -> None:
        """Redraw the image from the controls."""
        self.image.value = self.png()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["image/png"] = base64.b64encode(bytes(self.image.value)).decode("ascii")
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        label = "; label" if self.label is not None else ""
        return f"SliceViewer({', '.join(self.volumes)}; shape {self.shape}{label})"


def show(viewer: SliceViewer, static: bool = True) -> None:
    """Display the interactive viewer and, when ``static``, a static figure of its current view.

    The static figure is what the rendered book shows (widgets do not run in static HTML).
    """
    from IPython.display import display

    display(viewer.widget)
    if static:
        display(viewer.figure())


def study_viewer(study: Study | str, **kwargs: Any) -> SliceViewer:
    """A viewer of every modality of a study (a Study, NIfTI folder or ``STORE::STUDY``)
    with its labels.

    Modalities on different grids are not resampled: the study's images must share one shape.
    """
    st = as_study(study)
    first = next(iter(st.images.values()))
    kwargs.setdefault("title", st.name)
    kwargs.setdefault("scheme", st.scheme)
    return SliceViewer(
        {m: v.data for m, v in st.images.items()},
        label=st.label.data if st.label is not None else None,
        spacing=first.spacing,
        **kwargs,
    )


def sample_viewer(
    samples: Samples,
    index: int | None = None,
    *,
    study: str | None = None,
    modality: str | None = None,
    **kwargs: Any,
) -> SliceViewer:
    """A viewer of one proxy-task sample: target, mask, views and reconstructions, side by side."""
    i = pick_entry(samples, index, study, modality)
    vols = {SAMPLE_TITLES[k]: samples.arrays[k][i] for k in SAMPLE_KEYS if k in samples.arrays}
    kwargs.setdefault(
        "title",
        f"{samples.study[i]} / {samples.modality[i]}"
        + (f", step {samples.step}" if samples.step is not None else ""),
    )
    kwargs.setdefault("volume", SIDE_BY_SIDE)
    if samples.spacing is not None:
        kwargs.setdefault("spacing", tuple(float(v) for v in samples.spacing[i]))
    return SliceViewer(vols, **kwargs)


def template_viewer(
    templates: Any, modalities: Sequence[str] | None = None, **kwargs: Any
) -> SliceViewer:
    """A viewer of the learned templates (checkpoint folder, templates object or
    ``(8, X, Y, Z)``), min-max scaled."""
    t = as_templates(templates)
    names = list(modalities) if modalities is not None else list(MODALITIES[: t.volumes.shape[0]])
    spacing = tuple(float(s) for s in np.linalg.norm(t.affine[:3, :3], axis=0))
    kwargs.setdefault("title", "templates")
    kwargs.setdefault("volume", SIDE_BY_SIDE)
    scaled = t.scaled().cpu().numpy()  # the one template scaling, whole templates
    return SliceViewer(
        {m: scaled[MODALITIES.index(m)] for m in names},
        spacing=spacing,
        **kwargs,
    )
