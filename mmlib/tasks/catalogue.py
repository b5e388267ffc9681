"""The downstream tasks: which studies, which input modalities, what is predicted.

A :class:`TaskSpec` names a task, the kind (segmentation or classification), the input
modalities in channel order, and either the regions (segmentation) or the study attribute and
classes (classification). Studies are found in a store's manifest by its ``task`` column (the
cohort's ``cohort.json`` task names, or a curated real dataset tagged the same way).

The tasks of the embedded cohort mirror the paper's downstream sets:

==============  ===============  =======================  ================================
name            kind             modalities               target
==============  ===============  =======================  ================================
``brats_ped``   segmentation     flair, t1, t1c, t2       TC, WT, ET (BraTS 2023 labels)
``isles``       segmentation     flair, dwi, adc          stroke lesion
``mrbrains``    segmentation     the source's (t1, flair) CSF, GM, WM (labels 1, 2, 3)
``hgg_lgg``     classification   flair, t1, t1c, t2       attrs ``grade``: LGG, HGG
``brats_met``   segmentation     flair, t1, t1c, t2       TC, WT, ET (labels NETC 1, SNFH 2,
                                                          ET 3; several lesions per study)
``upenn_gbm``   segmentation     flair, t1, t1c, t2       TC, WT, ET (labels 1, 2, 4)
``vs_seg``      segmentation     t1c, t2                  tumour (label 1)
``adni``        classification   t1                       attrs ``group``: NC, MCI (alias
                                                          ``atrophy``)
``adhd200``     classification   t1                       attrs ``diagnosis``: TDC, ADHD
``abide``       classification   t1                       attrs ``diagnosis``: Control, Autism
==============  ===============  =======================  ================================

The BraTS conventions of ``brats_met`` (ET = 3) and ``upenn_gbm`` (ET = 4) are fixed, not
detected: their datasets document them, and a label map that breaks them is refused. The three
T1-only classification tasks are multi-site (ADHD-200, ABIDE I, ADNI); their layout readers
(:mod:`mmlib.data.layouts`) map each dataset's diagnosis codes to these classes, the
second class being the positive one of AUC and F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from mmlib.modalities import canonical
from mmlib.tasks.regions import RegionSpec, detect_convention


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task.

    Attributes:
        name: task name (the manifest's ``task`` value, or one of ``aliases``).
        kind: ``"segmentation"`` or ``"classification"``.
        modalities: input modalities in channel order; empty: those every study of the task has.
        regions: what a segmentation network predicts (segmentation only).
        attr: the study attribute holding the class (classification only).
        classes: class names in index order; empty: the sorted values found.
        aliases: other manifest ``task`` values that mean this task.
    """

    name: str
    kind: str
    modalities: tuple[str, ...] = ()
    regions: RegionSpec | None = None
    attr: str | None = None
    classes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in {"segmentation", "classification"}:
            raise ValueError(
                f"task {self.name!r}: kind should be segmentation or classification, "
                f"got {self.kind!r}"
            )
        if self.kind == "segmentation" and self.regions is None:
            raise ValueError(f"task {self.name!r}: a segmentation task needs regions")
        if self.kind == "classification" and not self.attr:
            raise ValueError(
                f"task {self.name!r}: a classification task needs attr (the class column)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON) of the spec."""
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "modalities": list(self.modalities),
            "attr": self.attr,
            "classes": list(self.classes),
        }
        if self.regions is not None:
            d["regions"] = {
                "names": list(self.regions.names),
                "kind": self.regions.kind,
                "convention": self.regions.convention,
            }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """The spec written by :meth:`to_dict` (e.g. ``results.json``'s ``spec`` of a run)."""
        regions = None
        if d.get("regions"):
            r = d["regions"]
            regions = RegionSpec(tuple(r["names"]), r["kind"], r["convention"])
        return cls(
            d["name"],
            d["kind"],
            tuple(d["modalities"]),
            regions,
            d.get("attr"),
            tuple(d.get("classes") or ()),
        )


TASKS: dict[str, TaskSpec] = {
    "brats_ped": TaskSpec(
        "brats_ped",
        "segmentation",
        ("flair", "t1", "t1c", "t2"),
        RegionSpec(("TC", "WT", "ET"), "brats", "auto"),
        aliases=("ped", "brats2023_ped", "bratsped", "tumour", "tumor", "brain_tumour", "glioma"),
    ),
    "isles": TaskSpec(
        "isles",
        "segmentation",
        ("flair", "dwi", "adc"),
        RegionSpec(("lesion",), "binary"),
        aliases=("isles2022", "isles22", "stroke", "stroke_lesion"),
    ),
    "mrbrains": TaskSpec(
        "mrbrains",
        "segmentation",
        (),
        RegionSpec(("CSF", "GM", "WM"), "classes"),
        aliases=("mrbrains13", "mrbrains18", "tissue", "tissues", "brain_tissue"),
    ),
    "hgg_lgg": TaskSpec(
        "hgg_lgg",
        "classification",
        ("flair", "t1", "t1c", "t2"),
        attr="grade",
        classes=("LGG", "HGG"),
        aliases=("brats2018", "grade", "glioma_grade", "hgglgg", "hgg_vs_lgg"),
    ),
    "adni": TaskSpec(
        "adni",
        "classification",
        ("t1",),
        attr="group",
        classes=("NC", "MCI"),
        aliases=("atrophy", "mci_nc", "mci", "mci_vs_nc", "atrophy_vs_none", "adni_mci_nc"),
    ),
    "adhd200": TaskSpec(
        "adhd200",
        "classification",
        ("t1",),
        attr="diagnosis",
        classes=("TDC", "ADHD"),
        aliases=("adhd", "adhd_200", "adhd_vs_tdc"),
    ),
    "abide": TaskSpec(
        "abide",
        "classification",
        ("t1",),
        attr="diagnosis",
        classes=("Control", "Autism"),
        aliases=("abide1", "abide_i", "abide_1", "autism", "asd", "asd_vs_tc"),
    ),
    "brats_met": TaskSpec(
        "brats_met",
        "segmentation",
        ("flair", "t1", "t1c", "t2"),
        RegionSpec(("TC", "WT", "ET"), "brats", "brats2023"),
        aliases=("met", "mets", "brats2023_met", "bratsmet", "brats_mets", "metastases"),
    ),
    "upenn_gbm": TaskSpec(
        "upenn_gbm",
        "segmentation",
        ("flair", "t1", "t1c", "t2"),
        RegionSpec(("TC", "WT", "ET"), "brats", "brats2021"),
        aliases=("upenn", "upenngbm", "upenn_glioblastoma"),
    ),
    "vs_seg": TaskSpec(
        "vs_seg",
        "segmentation",
        ("t1c", "t2"),
        RegionSpec(("tumour",), "binary"),
        aliases=("vestibular_schwannoma", "vsseg", "schwannoma", "vestibular_schwannoma_seg"),
    ),
}
"""The tasks of the embedded cohort (see the module docstring)."""


def _norm(name: str) -> str:
    """Task names compared case-, dash- and suffix-insensitively
    (``BraTS-PED_seg`` = ``brats_ped``)."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    for suffix in ("_segmentation", "_classification", "_seg", "_cls"):
        key = key.removesuffix(suffix)
    return key


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The task registered as ``name`` or one of its aliases.

    Raises:
        ValueError: When the name is unknown.
    """
    if isinstance(name, TaskSpec):
        return name
    key = _norm(name)
    for spec in TASKS.values():
        if key in {_norm(k) for k in (spec.name, *spec.aliases)}:
            return spec
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")


def task_rows(manifest: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    """The manifest rows of a task's studies (matched on the ``task`` column, names or aliases).

    Raises:
        ValueError: When no study belongs to the task; the message lists the tasks present.
    """
    if "task" not in manifest.columns:
        raise ValueError(
            "store manifest has no 'task' column; curate the source with its task "
            "(cohort.json 'task')"
        )
    keys = {_norm(k) for k in (spec.name, *spec.aliases)}
    col = manifest["task"].fillna("").astype(str).map(_norm)
    rows = manifest[col.isin(keys)]
    if rows.empty:
        found = sorted({t for t in manifest["task"].dropna().astype(str) if t})
        raise ValueError(
            f"no study of task {spec.name!r} in the store; tasks present: "
            f"{', '.join(found) or 'none'}"
        )
    return rows


def _modalities_of(row: pd.Series) -> list[str]:
    mods = row["modalities"]
    if isinstance(mods, str):
        mods = [m for m in mods.replace(";", ",").split(",") if m]
    return [canonical(str(m)) for m in mods]


def _attrs_of(row: pd.Series) -> dict[str, Any]:
    attrs = row.get("attrs", {})
    if isinstance(attrs, str):
        import json

        attrs = json.loads(attrs) if attrs else {}
    return dict(attrs or {})


def resolve_task(spec: TaskSpec | str, manifest: pd.DataFrame, store: Any = None) -> TaskSpec:
    """Fill in what a task leaves to the data: modalities, classes, the BraTS convention.

    Args:
        spec: the task or its name.
        manifest: the store's manifest.
        store: the store (only to read labels when the BraTS convention is ``auto``).

    Returns:
        A complete spec: explicit modalities, classes, and convention.

    Raises:
        ValueError: When no modality is shared by all studies, a class attribute is missing,
            or the label convention cannot be detected.
    """
    spec = get_task(spec)
    rows = task_rows(manifest, spec)
    if not spec.modalities:
        common: list[str] | None = None
        for _, row in rows.iterrows():
            mods = _modalities_of(row)
            common = mods if common is None else [m for m in common if m in mods]
        if not common:
            raise ValueError(f"task {spec.name!r}: no modality is shared by all its studies")
        spec = replace(spec, modalities=tuple(common))
    if spec.kind == "classification" and not spec.classes:
        values = []
        for _, row in rows.iterrows():
            attrs = _attrs_of(row)
            if spec.attr not in attrs:
                raise ValueError(
                    f"task {spec.name!r}: study {row['study']} has no attribute {spec.attr!r}"
                )
            values.append(str(attrs[spec.attr]))
        spec = replace(spec, classes=tuple(sorted(set(values))))
    if (
        spec.regions is not None
        and spec.regions.kind == "brats"
        and spec.regions.convention == "auto"
        and store is not None
    ):
        seen: set[int] = set()
        for study in rows["study"]:
            lab = store.label(study)
            if lab is not None:
                seen |= {int(v) for v in np.unique(np.asarray(lab))}
        conv = detect_convention(seen, where=f"task {spec.name!r} labels")
        spec = replace(spec, regions=replace(spec.regions, convention=conv))
    return spec


def class_index(spec: TaskSpec, row: pd.Series) -> int:
    """The class index of a study for a classification task
    (:func:`mmlib.data.labelled.study_class` with the task's attribute and classes).

    Raises:
        ValueError: When the study lacks the attribute or has an unknown class.
    """
    from mmlib.data.labelled import study_class

    assert spec.attr is not None
    return study_class(row, spec.attr, spec.classes)


def split_studies(
    rows: pd.DataFrame,
    seed: int = 0,
    test_fraction: float = 0.3,
    min_test: int = 2,
    strata: dict[str, str] | None = None,
) -> dict[str, list[str]]:
    """Train/val/test study lists of a task.

    The store's ``split`` column is used when it holds at least ``max(min_test,
    test_fraction/2 * n)`` test studies (and, with ``strata``, every class) (a curated real
    dataset with its official split, or a
    split file). Otherwise (the store's generic 80/10/10 hash split leaves small downstream
    sets with one test study or none) the task's studies are split again, deterministically:
    ordered by a hash of the study id, the first ``round(test_fraction * n)`` are test, the rest
    train; ``seed`` is not used for this, so that every run of a task shares one test set.
    With ``strata`` (study -> class, for classification) the re-split is stratified: each class
    with at least two studies gives ``round(test_fraction * n_class)`` (at least one) test
    studies, so that the test set holds every class.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.

    Raises:
        ValueError: When the task has fewer than two studies.
    """
    import hashlib

    studies = sorted(rows["study"].astype(str))
    if len(studies) < 2:
        raise ValueError(f"need at least two studies (train and test), got {len(studies)}")
    split = (
        rows["split"].fillna("train").astype(str)
        if "split" in rows.columns
        else pd.Series("train", rows.index)
    )
    out = {k: sorted(rows.loc[split == k, "study"].astype(str)) for k in ("train", "val", "test")}
    need = max(min(min_test, len(studies) - 1), int(np.ceil(test_fraction / 2 * len(studies))))
    classes_ok = strata is None or {strata.get(s) for s in out["test"]} >= {
        c for c in set(strata.values()) if sum(v == c for v in strata.values()) >= 2
    }
    if len(out["test"]) >= need and out["train"] and classes_ok:
        return out

    def _hash(s: str) -> str:
        return hashlib.sha1(s.encode()).hexdigest()

    if strata:
        test: list[str] = []
        for cls in sorted({strata.get(s, "") for s in studies}):
            members = sorted((s for s in studies if strata.get(s, "") == cls), key=_hash)
            if len(members) >= 2:
                test += members[: max(1, int(round(test_fraction * len(members))))]
        train = [s for s in studies if s not in set(test)]
        return {"train": sorted(train), "val": [], "test": sorted(test)}
    order = sorted(studies, key=_hash)
    n_test = min(len(studies) - 1, max(1, int(round(test_fraction * len(studies)))))
    return {"train": sorted(order[n_test:]), "val": [], "test": sorted(order[:n_test])}


def task_splits(spec: TaskSpec, rows: pd.DataFrame, seed: int = 0) -> dict[str, list[str]]:
    """:func:`split_studies` of a task, stratified by class for classification tasks."""
    strata = None
    if spec.kind == "classification":
        attr = spec.attr
        assert attr is not None  # TaskSpec checks that a classification task names its attr
        strata = {str(r["study"]): str(_attrs_of(r).get(attr, "")) for _, r in rows.iterrows()}
    return split_studies(rows, seed=seed, strata=strata)


def label_subset(
    train: Sequence[str], fraction: float, seed: int = 0, minimum: int = 1
) -> list[str]:
    """The labelled training studies for a label fraction: nested across fractions.

    A fixed permutation of the training studies (``seed``) is cut at ``ceil(fraction * n)``,
    so the 10 % subset is inside the 20 % subset, which is inside 40 %, and every
    initialisation and fine-tuning seed sees the same labelled studies at a given fraction.

    Raises:
        ValueError: When ``fraction`` is not in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction should be in (0, 1], got {fraction}")
    order = np.random.default_rng(seed).permutation(sorted(train)).tolist()
    n = max(minimum, int(np.ceil(fraction * len(order) - 1e-9)))
    return sorted(order[: min(n, len(order))])
