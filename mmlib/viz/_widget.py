"""The plugin's dock widget: browse a run folder (step, study, modality) and show its views.

A :class:`magicgui.widgets.Container`, so no Qt is written by hand; napari docks it from the
``Plugins > mmlib > Run browser`` menu, ``mmlib view RUN`` docks it with the run loaded, and code
can drive it (``RunBrowser(viewer, run_dir=...)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.types import FileDialogMode
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label

from mmlib.proxy.templates import load_templates
from mmlib.runs import RunFolder, Samples
from mmlib.viz.layers import sample_layers, template_layers
from mmlib.viz.napari import add_layers, remove_layers, set_grid, set_plane

if TYPE_CHECKING:
    import napari

VIEWS = "proxy views"
TEMPLATES = "templates"


class RunBrowser(Container):
    """Pick a run folder, then a checkpoint step, a study and a target modality.

    "proxy views" shows that step's ``samples/step_XXXXXXX.npz`` entry (target, mask, view A,
    view B, both reconstructions) side by side; "templates" shows the templates saved in the
    step's checkpoint. The layers the browser adds are replaced on every change; others stay.

    Args:
        napari_viewer: the viewer to show layers in (napari passes it).
        run_dir: a run folder to load at once. Defaults to None.
    """

    def __init__(self, napari_viewer: napari.Viewer, run_dir: str | Path | None = None) -> None:
        self._run_dir = FileEdit(mode=FileDialogMode.EXISTING_DIRECTORY, label="run folder")
        self._what = ComboBox(choices=[VIEWS, TEMPLATES], value=VIEWS, label="show")
        # napari calls reset_choices() on docked widgets whenever layers change: the choices are
        # callables reading the browser's state, so they survive it.
        self._steps: list[int] = []
        self._studies: list[str] = []
        self._modalities: list[str] = []
        self._step = ComboBox(choices=lambda _: self._steps, label="step")
        self._study = ComboBox(choices=lambda _: self._studies, label="study")
        self._modality = ComboBox(choices=lambda _: self._modalities, label="modality")
        self._plane = ComboBox(
            choices=["axial", "coronal", "sagittal"], value="axial", label="plane"
        )
        self._grid = CheckBox(value=True, text="grid")
        self._info = Label(value="pick a run folder")
        super().__init__(
            widgets=[
                self._run_dir,
                self._what,
                self._step,
                self._study,
                self._modality,
                self._plane,
                self._grid,
                self._info,
            ],
            labels=True,
        )
        self.viewer = napari_viewer
        self.run: RunFolder | None = None
        self.samples: Samples | None = None
        self.layers: list[Any] = []
        self._busy = False
        self._run_dir.changed.connect(lambda v: self.load(v))
        self._step.changed.connect(lambda _: self._on_step())
        self._study.changed.connect(lambda _: self._on_study())
        for w in (self._what, self._modality, self._plane, self._grid):
            w.changed.connect(lambda _: self.show())
        if run_dir is not None:
            self._run_dir.value = Path(run_dir)

    @property
    def info(self) -> str:
        """The status line (what is shown, or why nothing is)."""
        return str(self._info.value)

    def load(self, path: str | Path) -> None:
        """Load a run folder and show its newest step."""
        try:
            self.run = RunFolder(path)
        except NotADirectoryError as err:
            self.run = None
            self._info.value = str(err)
            return
        self._busy = True
        steps = self._steps = self.run.steps()
        self._step.reset_choices()
        if steps:
            self._step.value = steps[-1]
        self._busy = False
        self._on_step()

    def select(
        self,
        *,
        step: int | None = None,
        study: str | None = None,
        modality: str | None = None,
        what: str | None = None,
    ) -> None:
        """Choose any of step, study, modality and what to show, then show it once."""
        self._busy = True
        if what is not None:
            self._what.value = what
        if step is not None:
            self._step.value = step
        self._busy = False
        self._on_step(show=False)
        self._busy = True
        if study is not None:
            self._study.value = study
        self._busy = False
        self._on_study(show=False)
        self._busy = True
        if modality is not None:
            self._modality.value = modality
        self._busy = False
        self.show()

    def _on_step(self, show: bool = True) -> None:
        if self._busy or self.run is None:
            return
        step = self._step.value
        self.samples = (
            self.run.samples(step) if step is not None and step in self.run.sample_steps() else None
        )
        self._busy = True
        studies = self._studies = (
            list(dict.fromkeys(self.samples.study)) if self.samples is not None else []
        )
        current = self._study.value
        self._study.reset_choices()
        if studies:
            self._study.value = current if current in studies else studies[0]
        self._busy = False
        self._on_study(show)

    def _on_study(self, show: bool = True) -> None:
        if self._busy:
            return
        s = self.samples
        mods = (
            [m for st, m in zip(s.study, s.modality) if st == self._study.value]
            if s is not None
            else []
        )
        self._busy = True
        current = self._modality.value
        self._modalities = list(dict.fromkeys(mods))
        self._modality.reset_choices()
        if mods:
            self._modality.value = current if current in mods else mods[0]
        self._busy = False
        if show:
            self.show()

    def clear(self) -> None:
        """Remove the layers this browser added."""
        remove_layers(self.viewer, self.layers)
        self.layers = []

    # shadows magicgui Widget.show(run=False) (which opens a window); kept: callers use this name
    def show(self) -> None:  # type: ignore[override]
        """Show the current choice (replacing the browser's previous layers)."""
        if self._busy or self.run is None:
            return
        self.clear()
        step = self._step.value
        if step is None:
            self._info.value = f"{self.run.path.name}: no samples or checkpoints yet"
            return
        if self._what.value == VIEWS:
            if self.samples is None:
                self._info.value = f"step {step}: no samples file (samples/step_{step:07d}.npz)"
                return
            data = sample_layers(
                self.samples, study=self._study.value, modality=self._modality.value
            )
            self._info.value = f"step {step}: {self._study.value} / {self._modality.value}"
        else:
            try:
                data = template_layers(load_templates(self.run.checkpoint(step)))
            except (FileNotFoundError, KeyError) as err:
                self._info.value = str(err)
                return
            self._info.value = f"step {step}: templates"
        self.layers = add_layers(self.viewer, data)
        set_plane(self.viewer, self._plane.value)
        set_grid(self.viewer, self._grid.value)


def run_browser(napari_viewer: napari.Viewer) -> RunBrowser:
    """The npe2 widget command: an empty :class:`RunBrowser` for ``napari_viewer``."""
    return RunBrowser(napari_viewer)
