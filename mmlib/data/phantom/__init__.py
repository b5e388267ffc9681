"""The embedded cohort: simulated multi-parametric brain MRI on real anatomy (ICBM 2009a),
written in the on-disk layouts of the real public datasets.

Public API:

* :func:`make_cohort` (``mmlib cohort``) writes a cohort for a preset or spec;
* :func:`ensure_cohort` makes (once) the shared cohort of a scale in ``work_dir(scale)``;
* :data:`PRESETS`, :func:`cohort_spec`, :class:`CohortSpec`, :class:`SourceSpec`,
  :func:`validate_spec`: the named cohorts and how to describe others;
* :func:`simulate_study`: one study in memory (images, compartment fractions, labels).

Resolution: ``smoke`` and ``demo`` simulate on a coarser template (4 mm and 2 mm) and write each
source's grid shrunk by the same factor (voxel size × f, shape ÷ f), keeping orientation,
dtype, naming and layout; ``paper`` writes the exact grids (BraTS 240×240×155 at 1 mm, int16).
See :mod:`mmlib.data.phantom.tissues` for the physics and :mod:`mmlib.data.phantom.writers` for
the layouts.
"""

from __future__ import annotations

from mmlib.data.phantom.cohort import (
    PRESETS,
    CohortSpec,
    SourceSpec,
    cohort_spec,
    ensure_cohort,
    make_cohort,
    only,
    simulate_study,
    spec_hash,
    study_id,
    validate_spec,
    with_counts,
)

__all__ = [
    "PRESETS",
    "CohortSpec",
    "SourceSpec",
    "cohort_spec",
    "ensure_cohort",
    "make_cohort",
    "only",
    "simulate_study",
    "spec_hash",
    "study_id",
    "validate_spec",
    "with_counts",
]
