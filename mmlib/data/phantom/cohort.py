"""The embedded cohort: named multi-source specs, subjects drawn from them, and
:func:`make_cohort`, which writes a whole cohort deterministically and in parallel.

The default cohort mirrors the BrainMVP pre-training mix (BraTS 2021, BraTS 2023 MEN and SSA,
UCSF-PDGM with DWI/ADC, IXI with T1/T2/PD/MRA) plus the downstream sets (BraTS-PED-like tumour
segmentation, ISLES-like stroke segmentation, MRBrainS-like tissue segmentation, BraTS 2018
HGG/LGG and ADNI-like atrophy classification, a Decathlon Task01 set, and the BraTS 2023 MET,
UPENN-GBM and Vestibular-Schwannoma-SEG segmentation sets in their own layouts). Subject counts
and the simulation factor come from the scale preset (:data:`PRESETS`):

* ``smoke``: factor 4 (4 mm template, every grid shrunk 4×), a few subjects per source;
* ``demo``: factor 2 (2 mm template, grids shrunk 2×), ~50 pre-training studies, 30 PED-like
  subjects, 16-20 per other task;
* ``paper``: factor 1, the exact grids of the real datasets (BraTS 240×240×155 at 1 mm,
  int16), counts at about a tenth of the paper's pre-training mix.

Every preset runs the same code; the tissue contrasts do not depend on the factor.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mmlib.configs.scales import SCALES
from mmlib.data.layouts import ROLES
from mmlib.data.phantom import writers as W
from mmlib.data.phantom.anatomy import Anatomy, load_anatomy
from mmlib.data.phantom.lesions import LESION_KINDS, random_lesion
from mmlib.data.phantom.subject import (
    Rendered,
    Subject,
    grow_vessels,
    random_displacement,
    random_pose,
    render,
)
from mmlib.data.phantom.tissues import jitter_tissues
from mmlib.modalities import MODALITIES

#: Version of the simulator; part of the reuse key, bump when the output changes.
GENERATOR_VERSION = "3"

#: Modalities each layout can hold.
LAYOUT_MODALITIES: dict[str, tuple[str, ...]] = {
    "brats2021": ("flair", "t1", "t1c", "t2"),
    "brats2023": ("flair", "t1", "t1c", "t2"),
    "brats2018": ("flair", "t1", "t1c", "t2"),
    "decathlon": ("flair", "t1", "t1c", "t2"),
    "ucsf_pdgm": ("flair", "t1", "t1c", "t2", "dwi", "adc"),
    "ixi": ("t1", "t2", "mra", "pd"),
    "isles2022": ("flair", "dwi", "adc"),
    "upenn_gbm": ("flair", "t1", "t1c", "t2"),
    "vs_seg": ("t1c", "t2"),
    "pattern": MODALITIES,
    "adhd200": ("t1",),
    "abide": ("t1",),
    "adni": ("t1",),
}
BRATS2023_SUBSETS = ("GLI", "MEN", "SSA", "PED", "MET")
_REGISTERED = {"brats2021", "brats2023", "brats2018", "ucsf_pdgm", "decathlon", "upenn_gbm"}


@dataclass(frozen=True)
class SourceSpec:
    """One simulated source dataset.

    Attributes:
        name: source id in ``cohort.json`` (e.g. ``"brats2021"``).
        folder: folder under the cohort root.
        layout: layout id the curation room reads (``brats2021`` ... ``pattern``).
        role: ``"pretrain"`` or ``"downstream"``.
        task: downstream task name, or None.
        n_subjects: number of subjects (>= 1).
        modalities: canonical modalities written.
        lesion: one of :data:`~mmlib.data.phantom.lesions.LESION_KINDS` or None
            (``"metastasis"``: several per study, ``lesion_ml`` their total).
        lesion_ml: (min, max) volume of the whole lesion (oedema included) in ml.
        subset: BraTS 2023 prefix (GLI, MEN, SSA, PED, MET). Defaults to None.
        classes: study classes drawn in equal proportions (``HGG``/``LGG``, ``NC``/``MCI``).
        class_column: participants.tsv column of the class (``grade``, ``group``).
        hgg_fraction: share of high-grade gliomas when no classes are given.
        paediatric: smaller heads, gliomas biased to the posterior fossa and midline.
        noise: Rician noise std relative to brain signal.
        profile: writer profile (grids, names); defaults to the layout (pattern: required).
        pattern: path pattern with ``{subject}``/``{modality}`` (pattern layout).
        label_pattern: label path pattern with ``{subject}`` (pattern layout).
        labels: what is written as label: ``"lesion"``, ``"tissue"`` or None.
        messy: write the unusable entries a real multi-site table holds (see
            :func:`cls_extras`; classification layouts ``adhd200``, ``abide``, ``adni``).
    """

    name: str
    folder: str
    layout: str
    role: str
    task: str | None
    n_subjects: int
    modalities: tuple[str, ...]
    lesion: str | None = None
    lesion_ml: tuple[float, float] = (20.0, 100.0)
    subset: str | None = None
    classes: tuple[str, ...] = ()
    class_column: str | None = None
    hgg_fraction: float = 0.9
    paediatric: bool = False
    noise: float = 0.03
    profile: str | None = None
    pattern: str | None = None
    label_pattern: str | None = None
    labels: str | None = "lesion"
    messy: bool = False

    @property
    def writer(self) -> str:
        """The writer profile (grids, names, dtype)."""
        return self.profile or self.layout


@dataclass(frozen=True)
class CohortSpec:
    """A whole cohort: a simulation factor and its sources."""

    preset: str
    factor: int
    sources: tuple[SourceSpec, ...] = field(default_factory=tuple)


def _default_sources(n: dict[str, int]) -> tuple[SourceSpec, ...]:
    return (
        SourceSpec(
            "brats2021",
            "BraTS2021",
            "brats2021",
            "pretrain",
            None,
            n["brats2021"],
            ("flair", "t1", "t1c", "t2"),
            "glioma",
            (20.0, 110.0),
        ),
        SourceSpec(
            "brats2023_men",
            "BraTS2023-MEN",
            "brats2023",
            "pretrain",
            None,
            n["men"],
            ("flair", "t1", "t1c", "t2"),
            "meningioma",
            (8.0, 60.0),
            subset="MEN",
        ),
        SourceSpec(
            "brats2023_ssa",
            "BraTS2023-SSA",
            "brats2023",
            "pretrain",
            None,
            n["ssa"],
            ("flair", "t1", "t1c", "t2"),
            "glioma",
            (25.0, 120.0),
            subset="SSA",
            hgg_fraction=0.95,
            noise=0.06,
        ),
        SourceSpec(
            "ucsf_pdgm",
            "UCSF-PDGM",
            "ucsf_pdgm",
            "pretrain",
            None,
            n["ucsf"],
            ("flair", "t1", "t1c", "t2", "dwi", "adc"),
            "glioma",
            (20.0, 110.0),
            hgg_fraction=0.8,
        ),
        SourceSpec(
            "ixi",
            "IXI",
            "ixi",
            "pretrain",
            None,
            n["ixi"],
            ("t1", "t2", "pd", "mra"),
            None,
            labels=None,
        ),
        SourceSpec(
            "brats2023_ped",
            "BraTS2023-PED",
            "brats2023",
            "downstream",
            "brats_ped",
            n["ped"],
            ("flair", "t1", "t1c", "t2"),
            "glioma",
            (15.0, 80.0),
            subset="PED",
            hgg_fraction=0.6,
            paediatric=True,
        ),
        SourceSpec(
            "isles2022",
            "ISLES-2022",
            "isles2022",
            "downstream",
            "isles",
            n["isles"],
            ("dwi", "adc", "flair"),
            "stroke",
            (4.0, 60.0),
        ),
        SourceSpec(
            "mrbrains13",
            "MRBrainS13",
            "pattern",
            "downstream",
            "mrbrains",
            n["mrbrains"],
            ("t1", "flair"),
            None,
            profile="mrbrains",
            pattern="TrainingData/{subject}/{modality}.nii.gz",
            label_pattern="TrainingLabels/{subject}_LabelsForTesting.nii.gz",
            labels="tissue",
        ),
        SourceSpec(
            "brats2018",
            "BraTS2018",
            "brats2018",
            "downstream",
            "hgg_lgg",
            n["brats2018"],
            ("flair", "t1", "t1c", "t2"),
            "glioma",
            (20.0, 110.0),
            classes=("HGG", "LGG"),
            class_column="grade",
        ),
        SourceSpec(
            "adni",
            "ADNI",
            "adni",
            "downstream",
            "adni",
            n["adni"],
            ("t1",),
            None,
            classes=("NC", "MCI"),
            class_column="group",
            labels=None,
            messy=False,
        ),
        SourceSpec(
            "msd_task01",
            "Task01_BrainTumour",
            "decathlon",
            "downstream",
            "msd_brain_tumour",
            n["msd"],
            ("flair", "t1", "t1c", "t2"),
            "glioma",
            (20.0, 110.0),
            hgg_fraction=0.8,
        ),
        # segmentation tasks of issue 16 (BraTS 2023 MET, UPENN-GBM, VS-Seg)
        SourceSpec(
            "brats2023_met",
            "BraTS2023-MET",
            "brats2023",
            "downstream",
            "brats_met",
            n["met"],
            ("flair", "t1", "t1c", "t2"),
            "metastasis",
            (4.0, 45.0),
            subset="MET",
        ),
        SourceSpec(
            "upenn_gbm",
            "UPENN-GBM",
            "upenn_gbm",
            "downstream",
            "upenn_gbm",
            n["upenn"],
            ("flair", "t1", "t1c", "t2"),
            "glioma",
            (30.0, 120.0),
            hgg_fraction=1.0,
        ),
        SourceSpec(
            "vs_seg",
            "Vestibular-Schwannoma-SEG",
            "vs_seg",
            "downstream",
            "vs_seg",
            n["vs"],
            ("t1c", "t2"),
            "schwannoma",
            (0.5, 8.0),
        ),
        SourceSpec(
            "adhd200",
            "ADHD-200",
            "adhd200",
            "downstream",
            "adhd200",
            n["adhd200"],
            ("t1",),
            None,
            classes=("TDC", "ADHD"),
            class_column="diagnosis",
            labels=None,
            messy=False,
        ),
        SourceSpec(
            "abide",
            "ABIDE-I",
            "abide",
            "downstream",
            "abide",
            n["abide"],
            ("t1",),
            None,
            classes=("Control", "Autism"),
            class_column="diagnosis",
            labels=None,
            messy=False,
        ),
    )


_COUNTS: dict[str, dict[str, int]] = {
    "smoke": dict(
        brats2021=3,
        men=2,
        ssa=2,
        ucsf=2,
        ixi=2,
        ped=8,
        isles=5,
        mrbrains=5,
        brats2018=6,
        adni=6,
        msd=2,
        met=4,
        upenn=4,
        vs=4,
        adhd200=6,
        abide=6,
    ),
    # demo: the book's budget on 2 cores. The pre-training sources and the main task (ped) keep
    # their counts; the tasks the book shows with one seed (a demonstration, not a comparison)
    # have a dozen studies or fewer: simulating and registering a study costs ~1-5 s + ~3 s of
    # CPU, and 310 studies took 26 of the book's 30 minutes (2026-12-02)
    "demo": dict(
        brats2021=16,
        men=8,
        ssa=6,
        ucsf=10,
        ixi=12,
        ped=30,
        isles=10,
        mrbrains=10,
        brats2018=16,
        adni=20,
        msd=3,
        met=10,
        upenn=10,
        vs=8,
        adhd200=20,
        abide=20,
    ),
    "paper": dict(
        brats2021=147,
        men=114,
        ssa=8,
        ucsf=50,
        ixi=57,
        ped=99,
        isles=238,
        mrbrains=20,
        brats2018=285,
        adni=200,
        msd=48,
        met=24,
        upenn=13,
        vs=24,
        adhd200=77,
        abide=82,
    ),
}
_FACTORS = {"smoke": 4, "demo": 2, "paper": 1}

#: The named default cohort at each scale preset.
PRESETS: dict[str, CohortSpec] = {
    s: CohortSpec(s, _FACTORS[s], _default_sources(_COUNTS[s])) for s in SCALES
}


def cohort_spec(preset: str) -> CohortSpec:
    """The default cohort of a scale preset.

    Raises:
        ValueError: When the preset is unknown.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown cohort preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def validate_spec(spec: CohortSpec) -> None:
    """Check that a cohort spec can be simulated.

    Raises:
        ValueError: When a source has an unknown layout, role or modality, no subjects, a
            lesion kind that does not exist, or a lesion larger than the brain (one line each,
            naming the source and the field).
    """
    if not isinstance(spec.factor, int) or spec.factor < 1:
        raise ValueError(f"cohort spec: factor should be a positive integer, got {spec.factor!r}")
    if not spec.sources:
        raise ValueError("cohort spec: no sources; add at least one SourceSpec")
    seen: set[str] = set()
    anatomy: Anatomy | None = None
    for src in spec.sources:
        where = f"cohort spec source {src.name!r}"
        if src.name in seen or src.folder in seen:
            raise ValueError(f"{where}: name or folder used twice; give each source its own")
        seen |= {src.name, src.folder}
        if src.layout not in LAYOUT_MODALITIES:
            raise ValueError(
                f"{where}: unknown layout {src.layout!r}; choose one of "
                f"{', '.join(LAYOUT_MODALITIES)}"
            )
        if src.role not in ROLES:
            raise ValueError(f"{where}: role should be pretrain or downstream, got {src.role!r}")
        if not isinstance(src.n_subjects, int) or src.n_subjects < 1:
            raise ValueError(f"{where}: n_subjects should be at least 1, got {src.n_subjects!r}")
        if not src.modalities:
            raise ValueError(f"{where}: no modalities; choose from {', '.join(MODALITIES)}")
        for m in src.modalities:
            if m not in MODALITIES:
                raise ValueError(
                    f"{where}: unknown modality {m!r}; use canonical names "
                    f"({', '.join(MODALITIES)})"
                )
            if m not in LAYOUT_MODALITIES[src.layout]:
                raise ValueError(
                    f"{where}: layout {src.layout} cannot hold {m!r}; it holds "
                    f"{', '.join(LAYOUT_MODALITIES[src.layout])}"
                )
        if src.writer not in W.GRIDS:
            raise ValueError(
                f"{where}: unknown writer profile {src.writer!r}; choose one of "
                f"{', '.join(W.GRIDS)}"
            )
        if src.layout == "pattern" and (
            not src.pattern or "{subject}" not in src.pattern or "{modality}" not in src.pattern
        ):
            raise ValueError(
                f"{where}: a pattern layout needs a pattern with {{subject}} and "
                f"{{modality}}, got {src.pattern!r}"
            )
        if src.layout == "brats2023" and src.subset not in BRATS2023_SUBSETS:
            raise ValueError(
                f"{where}: brats2023 needs subset one of "
                f"{', '.join(BRATS2023_SUBSETS)}, got {src.subset!r}"
            )
        if src.classes and len(src.classes) < 2:
            raise ValueError(f"{where}: classes needs at least two names, got {src.classes!r}")
        if src.lesion is not None:
            if src.lesion not in LESION_KINDS:
                raise ValueError(
                    f"{where}: unknown lesion {src.lesion!r}; choose one of "
                    f"{', '.join(LESION_KINDS)} or None"
                )
            lo, hi = src.lesion_ml
            if not 0 < lo <= hi:
                raise ValueError(
                    f"{where}: lesion_ml should be (min, max) with 0 < min <= max, "
                    f"got {src.lesion_ml!r}"
                )
            anatomy = anatomy or load_anatomy(spec.factor)
            brain = anatomy.brain_volume_ml()
            radius = (3 * hi * 1000 / (4 * np.pi)) ** (1 / 3)
            if hi >= 0.5 * brain or radius > 0.9 * anatomy.max_inscribed_radius_mm():
                raise ValueError(
                    f"{where}: a lesion of up to {hi:g} ml (radius {radius:.0f} mm) is larger "
                    f"than the brain allows ({brain:.0f} ml, largest inscribed radius "
                    f"{anatomy.max_inscribed_radius_mm():.0f} mm); lower lesion_ml"
                )
        elif src.labels == "lesion" and src.layout not in ("ixi", "pattern"):
            raise ValueError(f"{where}: layout {src.layout} writes lesion labels; set a lesion")


def spec_hash(spec: CohortSpec, seed: int) -> str:
    """The reuse key of a cohort: spec, seed, simulator and mmlib versions."""
    from mmlib import __version__

    blob = json.dumps(
        {"spec": asdict(spec), "seed": seed, "generator": GENERATOR_VERSION, "mmlib": __version__},
        sort_keys=True,
        default=list,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- subjects


def subject_rng(seed: int, source: str, index: int, attempt: int = 0) -> np.random.Generator:
    """The generator of one subject: independent of worker count and job order."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(source.encode()), index, attempt])
    )


def study_id(src: SourceSpec, index: int) -> str:
    """The study id a real dataset would give subject ``index`` (1-based)."""
    i = index
    if src.layout == "brats2021":
        return f"BraTS2021_{i:05d}"
    if src.layout == "brats2023":
        return f"BraTS-{src.subset}-{i:05d}-000"
    if src.layout == "brats2018":
        return f"Brats18_SIM_{i:03d}_1"
    if src.layout == "ucsf_pdgm":
        return f"UCSF-PDGM-{i:04d}"
    if src.layout == "ixi":
        site = ("Guys", "HH", "IOP")[i % 3]
        return f"IXI{i:03d}-{site}-{(1000 + 37 * i) % 10000:04d}"
    if src.layout == "isles2022":
        return f"sub-strokecase{i:04d}"
    if src.layout == "decathlon":
        return f"BRATS_{i:03d}"
    if src.layout == "upenn_gbm":
        return f"UPENN-GBM-{i:05d}_11"
    if src.layout == "vs_seg":
        return f"vs_gk_{i}"
    if src.writer == "mrbrains":
        return f"{i}"
    if src.layout in W.CLS_LAYOUTS:
        at = cls_site(src, i)
        if src.layout == "adni":
            return f"{at.code}_S_{i:04d}"
        return f"{at.folder}_{at.id_base + i:07d}"
    return f"sub-{src.name.upper()}{i:03d}"


def participant_id(src: SourceSpec, sid: str) -> str:
    """The ``participant_id`` of a study in its source's participants.tsv."""
    return sid.split("-")[0] if src.layout == "ixi" else sid


def class_of(src: SourceSpec, seed: int, index: int) -> str | None:
    """The class of subject ``index``: equal shares, shuffled per source and seed."""
    if not src.classes or index > src.n_subjects:
        return None
    k = len(src.classes)
    order = np.repeat(np.arange(k), -(-src.n_subjects // k))[: src.n_subjects]
    perm = np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(src.name.encode()), 10**6])
    ).permutation(order)
    return src.classes[int(perm[index - 1])]


# ------------------------------------------------- multi-site T1 classification sources
#
# ADHD-200, ABIDE I and ADNI are T1-only, multi-site sets whose class is a diagnosis from a
# phenotypic table. The simulated group difference is a small, documented change of the
# atrophy parameters of :class:`mmlib.data.phantom.subject.Subject` (ventricle_shift in mm,
# thinning as the fraction of cortical GM turned into CSF), drawn per subject from
# overlapping ranges (:data:`GROUP_EFFECTS`); the sites differ in scanner grid, T1 relaxation
# (field strength), noise and bias field (:data:`SITES`). Nothing is tuned to a network.


@dataclass(frozen=True)
class Site:
    """One acquisition site of a multi-site source.

    Attributes:
        name: the site as the phenotypic table writes it (ADHD-200 ``Site`` is a code).
        folder: the site's folder (ADHD-200, ABIDE) or PTID site number (ADNI).
        code: the table's site code (ADHD-200 phenotypic key; ADNI site number).
        id_base: subject ids of the site start after this number.
        grid: key of :data:`mmlib.data.phantom.writers.SITE_GRIDS`.
        noise: Rician noise relative to brain signal.
        bias: log-amplitude of the bias field.
        t1_scale: factor on every tissue's T1 (1.5 T sites have shorter T1 than 3 T ones).
    """

    name: str
    folder: str
    code: str
    id_base: int
    grid: str
    noise: float
    bias: float
    t1_scale: float


#: Sites per classification layout; subject ``i`` (1-based) is at site ``(i - 1) % 4``.
#: ADHD-200 site codes follow its phenotypic key (1 Peking, 2 Brown, 3 KKI, 5 NYU, 6 OHSU);
#: ids lie in each site's range of the real release. The last ADHD-200 site (Brown, whose
#: diagnoses were never released) holds only the study with a pending diagnosis.
SITES: dict[str, tuple[Site, ...]] = {
    "adhd200": (
        Site("1", "Peking_1", "1", 1050000, "sag_1.2mm", 0.035, 0.20, 1.00),
        Site("3", "KKI", "3", 1018000, "sag_1mm", 0.025, 0.15, 1.05),
        Site("5", "NYU", "5", 10000, "axial_1.3mm", 0.030, 0.25, 0.97),
        Site("6", "OHSU", "6", 1084000, "cor_1.5mm", 0.045, 0.20, 1.00),
        Site("2", "Brown", "2", 26000, "sag_1mm", 0.030, 0.15, 1.02),
    ),
    "abide": (
        Site("CALTECH", "CALTECH", "CALTECH", 51455, "sag_1mm", 0.030, 0.15, 1.00),
        Site("NYU", "NYU", "NYU", 50951, "sag_1.2mm", 0.025, 0.20, 1.04),
        Site("PITT", "PITT", "PITT", 50001, "axial_1.3mm", 0.040, 0.25, 0.97),
        Site("USM", "USM", "USM", 50432, "cor_1.5mm", 0.035, 0.15, 1.02),
    ),
    "adni": (
        Site("002", "002", "002", 0, "sag_1.2mm", 0.030, 0.20, 0.85),
        Site("011", "011", "011", 0, "sag_1mm", 0.025, 0.15, 1.00),
        Site("023", "023", "023", 0, "cor_1.5mm", 0.045, 0.25, 0.85),
        Site("127", "127", "127", 0, "axial_1.3mm", 0.030, 0.20, 1.00),
    ),
}

#: Per class: uniform ranges of (ventricle_shift mm, cortical thinning fraction). ``NC``/``MCI``
#: is the ADNI-like atrophy effect of earlier versions (large: the classes barely overlap);
#: ``TDC``/``ADHD`` differ by a small cortical thinning (+0.06 on average, ranges overlap;
#: the direction of the reduced cortical thickness reported for ADHD, e.g. Shaw et al. 2007,
#: much larger here than real effect sizes); ``Control``/``Autism`` by slightly larger lateral
#: ventricles (+0.6 mm on average, overlapping; ENIGMA-ASD, van Rooij et al. 2018, reports
#: larger ventricles in autism, with small effect sizes).
GROUP_EFFECTS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "MCI": ((3.0, 5.0), (0.3, 0.45)),
    "NC": ((0.0, 0.8), (0.0, 0.08)),
    "ADHD": ((0.0, 1.0), (0.06, 0.20)),
    "TDC": ((0.0, 1.0), (0.0, 0.14)),
    "Autism": ((0.6, 2.0), (0.0, 0.10)),
    "Control": ((0.0, 1.4), (0.0, 0.10)),
}


def cls_extras(src: SourceSpec) -> dict[int, str]:
    """The unusable entries a messy classification source writes after its ``n_subjects``
    studies: index -> kind (``pending``: images, diagnosis "pending"; ``not_in_table``:
    images, no table row; ``no_images``: a table row, no images; ``other_group``: images of a
    group outside the task, ADNI ``AD``)."""
    if not src.messy or src.layout not in W.CLS_LAYOUTS:
        return {}
    n = src.n_subjects
    kinds = {
        "adhd200": ("pending", "no_images"),
        "abide": ("not_in_table", "no_images"),
        "adni": ("not_in_table", "other_group"),
    }[src.layout]
    return {n + 1: kinds[0], n + 2: kinds[1]}


def cls_site(src: SourceSpec, index: int) -> Site:
    """The site of study ``index`` of a classification source."""
    sites = SITES[src.layout]
    if src.layout == "adhd200":
        if cls_extras(src).get(index) == "pending":
            return sites[-1]
        sites = sites[:-1]
    return sites[(index - 1) % len(sites)]


def cls_attrs(
    src: SourceSpec, index: int, site: Site, cls: str | None, rng: np.random.Generator
) -> dict[str, Any]:
    """The table values of a classification study: site, ids, age, diagnosis codes (``cls``:
    the study's class, None for an extra of :func:`cls_extras`)."""
    extra = cls_extras(src).get(index)
    out: dict[str, Any] = {"site": site.name, "site_folder": site.folder}
    if src.layout == "adni":
        day = int(rng.integers(0, 3 * 365))
        date = np.datetime64("2006-01-02") + np.timedelta64(day, "D")
        out["age"] = round(float(rng.uniform(58, 90)), 1)
        out["image_id"] = 10000 + 37 * index
        out["acq_time"] = f"{date}_{8 + index % 9:02d}_{(7 * index) % 60:02d}_30"
        mci = str(rng.choice(["MCI", "EMCI", "LMCI"]))
        out["adni_group"] = "AD" if extra == "other_group" else "CN" if cls == "NC" else mci
        return out
    out["scan_id"] = f"{site.id_base + index:07d}"
    lo, hi = (7.0, 21.0) if src.layout == "adhd200" else (7.0, 40.0)
    out["age"] = round(float(rng.uniform(lo, hi)), 2)
    if src.layout == "adhd200":
        subtype = int(rng.choice([1, 2, 3]))
        out["dx"] = "pending" if extra == "pending" else subtype if cls == "ADHD" else 0
    else:
        out["dx_group"] = 1 if cls == "Autism" else 2
    return out


def make_subject(
    src: SourceSpec, index: int, seed: int, anatomy: Anatomy, attempt: int = 0
) -> tuple[Subject, np.random.Generator]:
    """Draw one subject of a source (pose, warp, atrophy, vessels, lesions, attributes).

    Returns:
        The subject and its generator, positioned for the rendering draws.
    """
    rng = subject_rng(seed, src.name, index, attempt)
    cls = class_of(src, seed, index)
    registered = src.layout in _REGISTERED
    scale = rng.uniform(0.82, 0.92) if src.paediatric else rng.uniform(0.94, 1.06)
    pose = random_pose(rng, 2.0 if registered else 7.0, 2.0 if registered else 6.0, scale)
    disp, disp_aff = random_displacement(rng, anatomy, amplitude_mm=1.5)
    age = float(rng.uniform(5, 17)) if src.paediatric else float(rng.uniform(20, 85))
    attrs: dict[str, Any] = {"age": round(age, 1), "sex": str(rng.choice(["F", "M"]))}
    if cls in GROUP_EFFECTS:
        (v_lo, v_hi), (t_lo, t_hi) = GROUP_EFFECTS[cls]
        vshift, thin = rng.uniform(v_lo, v_hi), rng.uniform(t_lo, t_hi)
    else:
        vshift, thin = 0.0, rng.uniform(0.0, 0.1)
    if src.class_column and cls is not None:
        attrs[src.class_column] = cls
    tissues = jitter_tissues(rng)
    if src.layout in W.CLS_LAYOUTS:
        site = cls_site(src, index)
        tissues = {k: replace(t, t1=t.t1 * site.t1_scale) for k, t in tissues.items()}
        attrs.update(cls_attrs(src, index, site, cls, rng))
    vessels = grow_vessels(rng, anatomy)
    lesions = []
    if src.lesion is not None:
        lo, hi = src.lesion_ml
        span = (lo * 1.2, hi / 1.2) if hi / lo > 1.6 else (lo, hi)
        volume = float(np.exp(rng.uniform(np.log(span[0]), np.log(span[1]))))
        template_volume = volume / scale**3
        if src.lesion == "glioma":
            grade = (
                cls
                if src.class_column == "grade"
                else ("HGG" if rng.random() < src.hgg_fraction else "LGG")
            )
            lesions.append(
                random_lesion(
                    "glioma", rng, anatomy, template_volume, grade=grade, paediatric=src.paediatric
                )
            )
            attrs.setdefault("grade", grade)
        elif src.lesion == "meningioma":
            lesions.append(random_lesion("meningioma", rng, anatomy, template_volume))
        elif src.lesion == "metastasis":
            n_les = int(rng.integers(2, 6))
            for share in rng.dirichlet(np.full(n_les, 1.5)):
                lesions.append(
                    random_lesion("metastasis", rng, anatomy, max(template_volume * share, 0.4))
                )
            attrs["n_lesions"] = n_les
        elif src.lesion == "schwannoma":
            lesions.append(random_lesion("schwannoma", rng, anatomy, template_volume))
            attrs["side"] = "left" if lesions[-1].center[0] < 0 else "right"
        else:
            hours = float(np.exp(rng.uniform(np.log(1.0), np.log(120.0))))
            lesions.append(random_lesion("stroke", rng, anatomy, template_volume, age_hours=hours))
            attrs["age_hours"] = round(hours, 1)
        attrs["lesion"] = src.lesion
        attrs["target_lesion_ml"] = round(volume, 2)
    subject = Subject(
        pose,
        disp,
        disp_aff,
        float(vshift),
        float(thin),
        lesions,
        tissues,
        vessels,
        vessels.splat(anatomy),
        attrs,
    )
    return subject, rng


def grid_groups(
    src: SourceSpec, factor: int, index: int | None = None
) -> list[tuple[W.Grid, tuple[str, ...]]]:
    """Modalities grouped by the grid they are written on (one render per group); a study of a
    multi-site source (``index`` given) is written on its site's scanner grid."""
    groups: list[tuple[W.Grid, list[str]]] = []
    site = cls_site(src, index) if index is not None and src.layout in W.CLS_LAYOUTS else None
    for m in src.modalities:
        g = W.SITE_GRIDS[site.grid].shrink(factor) if site else W.grid_for(src.writer, m, factor)
        for grid, mods in groups:
            if grid == g:
                mods.append(m)
                break
        else:
            groups.append((g, [m]))
    return [(g, tuple(m)) for g, m in groups]


#: Draws of a subject whose lesion, as rendered, falls outside the configured volume range.
MAX_ATTEMPTS = 4


def simulate_study(
    src: SourceSpec, index: int, seed: int, factor: int
) -> tuple[dict[str, Any], list[tuple[W.Grid, np.ndarray, Rendered]]]:
    """Simulate one study in memory: its attributes and, per grid, the render.

    Images are scanner-scaled (not yet cast to the on-disk dtype) and skull-stripped where
    the layout is. A subject whose rendered lesion volume misses ``src.lesion_ml`` is drawn
    again (deterministically, up to :data:`MAX_ATTEMPTS` times). Returns
    ``(attrs, [(grid, affine, rendered)])``.
    """
    _subject, attrs, out = _simulate(src, index, seed, factor)
    return attrs, out


def true_subject(src: SourceSpec, index: int, seed: int, factor: int) -> Subject:
    """The subject that study ``index`` of a source was drawn as (the draw the cohort kept).

    Its ``pose`` and :func:`mmlib.data.phantom.subject.pull_back` are the truth that
    registration is measured against (:mod:`mmlib.data.alignment`): world mm -> template
    (ICBM 2009a, MNI) mm. A source without lesions keeps its first draw; one with lesions is
    simulated again to know which draw was kept.
    """
    if src.lesion is None:
        return make_subject(src, index, seed, load_anatomy(factor), 0)[0]
    return _simulate(src, index, seed, factor)[0]


def _simulate(
    src: SourceSpec, index: int, seed: int, factor: int
) -> tuple[Subject, dict[str, Any], list[tuple[W.Grid, np.ndarray, Rendered]]]:
    from threadpoolctl import threadpool_limits

    # One BLAS thread wherever a study is simulated (a worker, the cohort's own process, a
    # notebook). Speed: a forked worker inherits the parent's OpenBLAS, started with a thread
    # per core (the environment is read only then), and the (N, 3) @ (3, 3) coordinate maps'
    # spin-waiting threads took the other worker's core: the demo cohort took 275 s on 2 cores,
    # 136 s like this, its 834 files bit-identical. Bytes: the threaded path changed the last
    # bit of 9 voxels of a smoke study, so they would depend on the caller's pools and cores.
    with threadpool_limits(1):
        return _simulate_one_thread(src, index, seed, factor)


def _simulate_one_thread(
    src: SourceSpec, index: int, seed: int, factor: int
) -> tuple[Subject, dict[str, Any], list[tuple[W.Grid, np.ndarray, Rendered]]]:
    anatomy = load_anatomy(factor)
    for attempt in range(MAX_ATTEMPTS):
        subject, rng = make_subject(src, index, seed, anatomy, attempt)
        groups = grid_groups(src, factor, index)
        noise, bias = src.noise, 0.15 if src.noise < 0.05 else 0.25
        if src.layout in W.CLS_LAYOUTS:
            noise, bias = cls_site(src, index).noise, cls_site(src, index).bias
        renders = []
        for grid, mods in groups:
            aff = grid.affine()
            renders.append(
                (
                    grid,
                    aff,
                    render(
                        subject,
                        anatomy,
                        aff,
                        grid.shape,
                        mods,
                        rng,
                        noise=noise,
                        bias=bias,
                    ),
                )
            )
        if src.lesion is None:
            break
        grid, aff, r = next((g for g in renders if "dwi" in g[2].images), renders[0])
        vol = float((r.lesion_label() > 0).sum() * abs(np.linalg.det(aff[:3, :3])) / 1000)
        if src.lesion_ml[0] <= vol <= src.lesion_ml[1]:
            break
    out = []
    float_out = W.DTYPES[src.writer] == "float32"
    for grid, aff, r in renders:
        mods = tuple(r.images)
        for m in mods:
            img = r.images[m]
            if m != "adc":
                ref = float(np.median(img[r.brain])) if r.brain.any() else 1.0
                level = (
                    np.exp(rng.uniform(np.log(0.3), np.log(3.0)))
                    if float_out
                    else np.exp(rng.uniform(np.log(300.0), np.log(1500.0)))
                )
                img = img * (level / max(ref, 1e-6))
            if W.SKULL_STRIPPED[src.writer]:
                img = img * r.brain
            r.images[m] = img.astype(np.float32)
        out.append((grid, aff, r))
    return subject, dict(subject.attrs), out


def _job(src: SourceSpec, index: int, seed: int, factor: int, root: str) -> dict[str, Any]:
    """Simulate and write one study; returns its participants row (also saved as a marker)."""
    base = Path(root)
    tmp = base / ".tmp"
    sid = study_id(src, index)
    attrs, renders = simulate_study(src, index, seed, factor)
    paths, label_path = W.study_paths(
        src.layout, src.writer, sid, src.modalities, attrs, src.pattern, src.label_pattern
    )
    sroot = base / src.folder
    dtype = W.DTYPES[src.writer]
    label_written = False
    if src.layout == "decathlon":
        ((grid, aff, r),) = renders
        data = np.stack(
            [
                r.images[m] if m in r.images else np.zeros(grid.shape, np.float32)
                for m in W.DECATHLON_CHANNELS
            ],
            axis=-1,
        )
        W.write_nifti(sroot / paths[src.modalities[0]], W.to_dtype(data, dtype), aff, tmp)
    else:
        for _grid, aff, r in renders:
            for m, img in r.images.items():
                W.write_nifti(sroot / paths[m], W.to_dtype(img, dtype), aff, tmp)
                if src.layout == "isles2022":
                    sc = str(paths[m]).replace(".nii.gz", ".json")
                    W.write_json(sroot / sc, W.sidecar(m), tmp)
    for _grid, aff, r in renders:
        if label_written or label_path is None or src.labels is None:
            break
        if src.layout == "isles2022" and "dwi" not in r.images:
            continue
        if src.labels == "tissue":
            lab = r.tissue_label()
        else:
            lab = W.map_labels(r.lesion_label(), src.writer)
        W.write_nifti(sroot / label_path, lab, aff, tmp)
        attrs["lesion_ml" if src.labels == "lesion" else "brain_ml"] = round(
            float((lab > 0).sum() * abs(np.linalg.det(aff[:3, :3])) / 1000.0), 2
        )
        if src.layout == "ucsf_pdgm":
            W.write_nifti(
                sroot / label_path.replace("tumor_segmentation", "brain_segmentation"),
                r.brain.astype(np.uint8),
                aff,
                tmp,
            )
        label_written = True
        _extra_labels(src, index, sid, renders, lab, aff, sroot, tmp)
    row = {"participant_id": participant_id(src, sid), **attrs}
    marker = tmp / "done" / src.name / f"{sid}.json"
    W.write_json(marker, {"study": sid, "row": row}, tmp)
    return {"source": src.name, "study": sid, "row": row}


def upenn_manual(index: int) -> bool:
    """Whether UPENN-GBM study ``index`` has a manually revised segmentation (a third here; 147
    of the 611 baseline scans of the real collection have one)."""
    return index % 3 == 1


def _extra_labels(
    src: SourceSpec,
    index: int,
    sid: str,
    renders: list[tuple[W.Grid, np.ndarray, Rendered]],
    lab: np.ndarray,
    aff: np.ndarray,
    sroot: Path,
    tmp: Path,
) -> None:
    """The second segmentation files some layouts hold: UPENN-GBM's manually revised
    ``images_segm/`` (a subset), VS-Seg's tumour on the T2 grid (``vs_gk_seg_refT2``)."""
    if src.layout == "upenn_gbm" and upenn_manual(index):
        W.write_nifti(sroot / f"images_segm/{sid}_segm.nii.gz", lab, aff, tmp)
    if src.layout == "vs_seg":
        for _grid, aff2, r in renders:
            if "t2" in r.images:
                seg = W.map_labels(r.lesion_label(), src.writer)
                W.write_nifti(sroot / f"{sid}/vs_gk_seg_refT2.nii.gz", seg, aff2, tmp)


def _resolve(preset: str | CohortSpec) -> CohortSpec:
    return preset if isinstance(preset, CohortSpec) else cohort_spec(preset)


def make_cohort(preset: str | CohortSpec, out: Path | str, seed: int = 0, workers: int = 1) -> Path:
    """Write a simulated cohort (or reuse a finished one) and return its root.

    The root holds one folder per source in that dataset's own layout, a BIDS
    ``participants.tsv`` per source, ``cohort.json`` describing the sources, and ``DONE``
    (the spec hash), written last. Files appear atomically; an interrupted run resumes
    where it stopped (finished studies are kept).

    Args:
        preset: ``"smoke"``, ``"demo"``, ``"paper"`` or a :class:`CohortSpec`.
        out: the cohort root.
        seed: the cohort's seed: same seed, same bytes. Defaults to 0.
        workers: processes that simulate studies in parallel. Defaults to 1.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: When the spec is impossible (see :func:`validate_spec`), ``workers`` < 1,
            or ``out`` holds something else (another cohort, or files that are not a cohort).

    Examples::

        >>> root = make_cohort("smoke", "/tmp/cohort", workers=2)   # doctest: +SKIP
        >>> json.loads((root / "cohort.json").read_text())["preset"]  # doctest: +SKIP
        'smoke'
    """
    spec = _resolve(preset)
    validate_spec(spec)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"make_cohort: workers should be a positive integer, got {workers!r}")
    root = Path(out)
    key = spec_hash(spec, seed)
    if (root / "DONE").is_file() and (root / "DONE").read_text().strip() == key:
        return root
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as lock:
        _lock(lock)  # another process making the same cohort: wait for it, then reuse
        return _make_locked(spec, root, key, seed, workers)


def _lock(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)


def _make_locked(spec: CohortSpec, root: Path, key: str, seed: int, workers: int) -> Path:
    done, progress = root / "DONE", root / ".tmp" / "PROGRESS"
    if done.is_file():
        if done.read_text().strip() == key:
            return root
        raise ValueError(
            f"{root}: holds a finished cohort made with another spec or seed; "
            f"choose another --out or delete that folder"
        )
    if any(p.name not in (".lock", ".tmp") for p in root.iterdir()):
        if not (progress.is_file() and progress.read_text().strip() == key):
            raise ValueError(
                f"{root}: folder is not empty and is not an unfinished cohort of "
                f"this spec; choose an empty or new --out"
            )
    (root / ".tmp").mkdir(parents=True, exist_ok=True)
    progress.write_text(key + "\n")
    load_anatomy(spec.factor)

    rows: dict[str, dict[str, dict[str, Any]]] = {s.name: {} for s in spec.sources}
    jobs = []
    for src in spec.sources:
        extras = [i for i, kind in cls_extras(src).items() if kind != "no_images"]
        for i in [*range(1, src.n_subjects + 1), *extras]:
            sid = study_id(src, i)
            marker = root / ".tmp" / "done" / src.name / f"{sid}.json"
            if marker.is_file():
                rows[src.name][sid] = json.loads(marker.read_text())["row"]
            else:
                jobs.append((src, i))
    total = (
        sum(s.n_subjects for s in spec.sources)
        + len(jobs)
        - sum(1 for src, i in jobs if i <= src.n_subjects)
    )
    bar = tqdm(total=total, initial=total - len(jobs), desc=f"cohort {spec.preset}", unit="study")
    if workers == 1 or len(jobs) <= 1:
        for src, i in jobs:
            res = _job(src, i, seed, spec.factor, str(root))
            rows[res["source"]][res["study"]] = res["row"]
            bar.update()
    else:
        ctx = get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker
        ) as pool:
            futures = [pool.submit(_job, src, i, seed, spec.factor, str(root)) for src, i in jobs]
            for fut in as_completed(futures):
                res = fut.result()
                rows[res["source"]][res["study"]] = res["row"]
                bar.update()
    bar.close()
    _write_tables(spec, seed, root, rows)
    shutil.rmtree(root / ".tmp", ignore_errors=True)
    tmp = root / f".DONE.{os.getpid()}"
    tmp.write_text(key + "\n")
    os.replace(tmp, done)
    return root


def _init_worker() -> None:
    """One thread per worker process: the workers already fill the cores (and a forked child
    must not start an OpenMP team of its own); the simulation limits the BLAS pool itself
    (:func:`_simulate`)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def source_entry(src: SourceSpec) -> dict[str, Any]:
    """The ``cohort.json`` entry of a source."""
    entry: dict[str, Any] = {
        "name": src.name,
        "path": src.folder,
        "layout": src.layout,
        "role": src.role,
        "task": src.task,
        "n_subjects": src.n_subjects,
        "modalities": list(src.modalities),
    }
    if src.layout == "pattern":
        entry["pattern"] = src.pattern
        if src.label_pattern:
            entry["label_pattern"] = src.label_pattern
    if src.layout == "brats2023":
        entry["subset"] = src.subset
    if src.labels == "tissue":
        entry["label_values"] = [0, 1, 2, 3]
        entry["label_names"] = {"1": "CSF", "2": "GM", "3": "WM"}
    elif src.labels == "lesion" and src.lesion is not None:
        mapping = W.LABEL_MAPS[src.writer]
        if src.layout == "isles2022":
            entry["label_values"] = [0, 1]
            entry["label_names"] = {"1": "stroke lesion"}
        elif src.layout == "vs_seg":
            entry["label_values"] = [0, 1]
            entry["label_names"] = {"1": "vestibular schwannoma"}
        elif src.lesion == "metastasis":
            entry["label_values"] = [0, 1, 2, 3]
            entry["label_names"] = {
                "1": "non-enhancing tumour core (NETC)",
                "2": "surrounding non-enhancing FLAIR hyperintensity (SNFH)",
                "3": "enhancing tumour (ET)",
            }
        else:
            names = {1: "necrotic / non-enhancing core", 2: "oedema", 3: "enhancing tumour"}
            entry["label_values"] = sorted({0, *mapping.values()})
            entry["label_names"] = {str(mapping[c]): names[c] for c in (1, 2, 3)}
    if src.classes:
        entry["classes"] = list(src.classes)
        entry["class_column"] = src.class_column
    entry["participants"] = CLS_TABLES.get(src.layout, "participants.tsv")
    if cls_extras(src):
        entry["expected_problems"] = {
            study_id(src, i): kind for i, kind in sorted(cls_extras(src).items())
        }
    return entry


def _write_tables(
    spec: CohortSpec, seed: int, root: Path, rows: dict[str, dict[str, dict[str, Any]]]
) -> None:
    from mmlib import __version__

    tmp = root / ".tmp"
    for src in spec.sources:
        sroot = root / src.folder
        table = [rows[src.name][k] for k in sorted(rows[src.name])]
        if src.layout in W.CLS_LAYOUTS:
            _write_cls_tables(src, rows[src.name], sroot, tmp)
        else:
            W.write_participants(sroot, table, tmp)
        if src.layout == "decathlon":
            ids = sorted(rows[src.name])
            W.write_json(
                sroot / "dataset.json",
                {
                    "name": "BRATS",
                    "description": "Simulated gliomas (mmlib embedded cohort)",
                    "reference": "mmlib.data.phantom",
                    "licence": "CC-BY-SA 4.0",
                    "tensorImageSize": "4D",
                    "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                    "labels": {
                        "0": "background",
                        "1": "edema",
                        "2": "non-enhancing tumor",
                        "3": "enhancing tumour",
                    },
                    "numTraining": len(ids),
                    "numTest": 0,
                    "training": [
                        {"image": f"./imagesTr/{i}.nii.gz", "label": f"./labelsTr/{i}.nii.gz"}
                        for i in ids
                    ],
                    "test": [],
                },
                tmp,
            )
        if src.layout == "upenn_gbm":
            W.write_upenn_clinical(sroot, table, tmp)
        if src.layout == "isles2022":
            W.write_json(
                sroot / "dataset_description.json",
                {
                    "Name": "ISLES 2022 (simulated by mmlib)",
                    "BIDSVersion": "1.6.0",
                    "DatasetType": "raw",
                },
                tmp,
            )
    W.write_json(
        root / "cohort.json",
        {
            "preset": spec.preset,
            "seed": seed,
            "mmlib_version": __version__,
            "generator_version": GENERATOR_VERSION,
            "factor": spec.factor,
            "sources": [source_entry(s) for s in spec.sources],
        },
        tmp,
    )


#: The side table of each classification layout (ADHD-200: one per site folder).
CLS_TABLES = {
    "adhd200": "<Site>/<Site>_phenotypic.csv",
    "abide": "Phenotypic_V1_0b.csv",
    "adni": "ADNI_MCI_NC_collection.csv",
}


def _write_cls_tables(
    src: SourceSpec, rows: dict[str, dict[str, Any]], sroot: Path, tmp: Path
) -> None:
    """The phenotypic table(s) of a classification source, in the dataset's own columns and
    codes, with the extras of :func:`cls_extras` (a row without images, images without a row)."""
    by_id = dict(rows)
    for i, kind in cls_extras(src).items():
        sid = study_id(src, i)
        if kind == "not_in_table":
            by_id.pop(sid, None)
        elif kind == "no_images":
            site = cls_site(src, i)
            by_id[sid] = {"participant_id": sid, "site": site.name, "site_folder": site.folder,
                          "scan_id": f"{site.id_base + i:07d}", "age": 12.5, "sex": "M",
                          "dx": 0, "dx_group": 2}  # fmt: skip
    table = [by_id[k] for k in sorted(by_id)]
    if src.layout == "adhd200":
        missing = ("ADHD Measure", "ADHD Index", "Inattentive", "Hyper/Impulsive", "IQ Measure",
                   "Verbal IQ", "Performance IQ", "Full2 IQ", "Full4 IQ", "Med Status")  # fmt: skip
        for folder in sorted({r["site_folder"] for r in table}):
            out = []
            for r in (r for r in table if r["site_folder"] == folder):
                row = dict.fromkeys(missing, -999)
                row.update({"ScanDir ID": int(r["scan_id"]), "Site": r["site"],
                            "Gender": int(r["sex"] == "M"), "Age": r["age"], "Handedness": 1,
                            "DX": r["dx"], "QC_Anatomical_1": 1})  # fmt: skip
                out.append(row)
            W.write_csv(sroot / folder / f"{folder}_phenotypic.csv", W.ADHD200_COLUMNS, out, tmp)
    elif src.layout == "abide":
        out = [{"SITE_ID": r["site"], "SUB_ID": int(r["scan_id"]), "DX_GROUP": r["dx_group"],
                "DSM_IV_TR": int(r["dx_group"] == 1), "AGE_AT_SCAN": r["age"],
                "SEX": 1 if r["sex"] == "M" else 2} for r in table]  # fmt: skip
        W.write_csv(sroot / CLS_TABLES["abide"], W.ABIDE_COLUMNS, out, tmp)
    else:
        rows_out: list[dict[str, Any]] = []
        for r in table:
            y, m, d = str(r["acq_time"]).split("_")[0].split("-")
            rows_out.append({"Image Data ID": f"I{r['image_id']}", "Subject": r["participant_id"],
                        "Group": r["adni_group"], "Sex": r["sex"], "Age": int(r["age"]),
                        "Visit": "sc", "Modality": "MRI", "Description": "MPRAGE",
                        "Type": "Original", "Acq Date": f"{int(m)}/{int(d)}/{y}",
                        "Format": "NiFTI", "Downloaded": ""})  # fmt: skip
        W.write_csv(sroot / CLS_TABLES["adni"], W.ADNI_COLUMNS, rows_out, tmp)


def ensure_cohort(scale: str, workers: int | None = None) -> Path:
    """The shared cohort of a scale in :func:`mmlib.paths.work_dir` (made once, then reused).

    The work folder is mmlib's own: a cohort there that an older simulator or another spec
    made (its ``DONE`` or progress marker holds another key) is replaced, not reused.

    Args:
        scale: ``smoke``, ``demo`` or ``paper``.
        workers: processes; defaults to min(2, CPU count).
    """
    from mmlib.paths import work_dir

    n = workers if workers is not None else max(1, min(2, os.cpu_count() or 1))
    root = work_dir(scale) / "cohort"
    key = spec_hash(cohort_spec(scale), 0)
    markers = [root / "DONE", root / ".tmp" / "PROGRESS"]
    found = [m.read_text().strip() for m in markers if m.is_file()]
    if root.exists() and key not in found and any(p.name != ".lock" for p in root.iterdir()):
        stale = root.with_name(f"cohort.stale-{os.getpid()}")
        os.replace(root, stale)
        shutil.rmtree(stale, ignore_errors=True)
    return make_cohort(scale, root, seed=0, workers=n)


def with_counts(spec: CohortSpec, **counts: int) -> CohortSpec:
    """A copy of a spec with some sources' subject counts changed (by source name)."""
    unknown = set(counts) - {s.name for s in spec.sources}
    if unknown:
        raise ValueError(
            f"with_counts: unknown sources {sorted(unknown)}; the spec has "
            f"{', '.join(s.name for s in spec.sources)}"
        )
    return replace(
        spec,
        sources=tuple(
            replace(s, n_subjects=counts.get(s.name, s.n_subjects)) for s in spec.sources
        ),
    )


def only(spec: CohortSpec, *names: str) -> CohortSpec:
    """A copy of a spec with only the named sources."""
    keep = tuple(s for s in spec.sources if s.name in names)
    missing = set(names) - {s.name for s in keep}
    if missing:
        raise ValueError(f"only: unknown sources {sorted(missing)}")
    return replace(spec, sources=keep)
