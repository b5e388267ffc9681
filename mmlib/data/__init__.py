"""mmlib.data: find studies (layouts), curate them once (curate) into a crop store (store),
sample multi-modal crops (sampler), check them (qc); the embedded cohort lives in ``phantom``,
the shared work stores of the scale presets in ``ensure``.

This module is the room's face: it only re-exports. Names are imported lazily so that
``import mmlib.data`` stays cheap (no torch until a dataset is used, no cohort until one is
asked for); :mod:`mmlib.data.ensure` imports only the standard library.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmlib.data.ensure import STORE_REGISTER, STORE_SPACING, STORE_WORKERS, ensure_store

_LAZY = {
    "Study": "mmlib.data.layouts",
    "discover": "mmlib.data.layouts",
    "detect_layout": "mmlib.data.layouts",
    "find_studies": "mmlib.data.layouts",
    "source_counts": "mmlib.data.layouts",
    "export_datalist": "mmlib.data.layouts",
    "LAYOUTS": "mmlib.data.layouts",
    "curate_study": "mmlib.data.curate",
    "CurationError": "mmlib.data.curate",
    "Store": "mmlib.data.store",
    "assign_split": "mmlib.data.store",
    "read_split_file": "mmlib.data.store",
    "PretrainDataset": "mmlib.data.sampler",
    "LabelledDataset": "mmlib.data.labelled",
}

__all__ = [*_LAZY, "STORE_REGISTER", "STORE_SPACING", "STORE_WORKERS", "ensure_store"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmlib.data' has no attribute {name!r}")
