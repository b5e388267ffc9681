"""npe2 sample data: the ICBM 2009a template with tissue labels, from the nilearn wheel
(no download)."""

from __future__ import annotations

from mmlib.viz.data import mni_study
from mmlib.viz.layers import LayerData, study_layers


def mni152() -> list[LayerData]:
    """The 1 mm MNI152 2009a T1 and its CSF / grey / white-matter labels."""
    return study_layers(mni_study(step=1))
