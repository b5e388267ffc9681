"""Find the studies of a dataset as the real public datasets lay them out on disk.

A *layout* turns a folder (or a JSON list) into :class:`Study` records: one study id, the
canonical modality names mapped to their files, the label file, and study-level attributes.
Nothing is loaded here; :mod:`mmlib.data.curate` reads the files.

Layout ids (auto-detected by :func:`detect_layout`, or named):

=================  ========================================================================
``brats2021``      ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``
``brats2023``      ``BraTS-{GLI,MEN,SSA,PED,MET}-XXXXX-XXX/...-{t1c,t1n,t2f,t2w,seg}.nii.gz``
``brats2018``      ``{HGG,LGG}/Brats18_*/Brats18_*_{flair,t1,t1ce,t2,seg}.nii.gz`` (grade in attrs)
``ucsf_pdgm``      ``UCSF-PDGM-XXXX[_nifti]/UCSF-PDGM-XXXX_{T1,T1c,T2,FLAIR,DWI,ADC}.nii.gz``
``ixi``            one folder per modality (``IXI-T1/IXI002-Guys-0828-T1.nii.gz``), own grids
``isles2022``      BIDS ``sub-*/ses-*/{dwi,anat}/*_{dwi,adc,FLAIR}.nii.gz``, masks in derivatives/
``upenn_gbm``      ``images_structural/UPENN-GBM-NNNNN_11/…_{T1,T1GD,T2,FLAIR}.nii.gz``, labels in
                   ``images_segm/`` (manual) or ``automated_segm/``, clinical CSV
``vs_seg``         ``vs_gk_N/vs_gk_{t1_refT1,t2_refT2,seg_refT1}.nii.gz`` (VS-Seg as converted)
``decathlon``      ``imagesTr/*.nii.gz`` 4-D + ``dataset.json`` (channel names in ``modality``)
``monai_datalist`` a MONAI datalist JSON (per-modality keys, or ``image`` + ``modalities``)
``brainmvp_json``  the BrainMVP authors' lists: ``{"training": [{"image": [paths]}]}``
``pattern``        a path pattern with ``{subject}`` and ``{modality}`` (+ ``label_pattern``)
``adhd200``        ``<Site>/<ScanDir ID>/session_1/anat_1/mprage.nii.gz`` + phenotypic CSVs
``abide``          ``<SITE>/<SUB_ID>/session_1/anat_1/mprage.nii.gz`` + ``Phenotypic_V1_0b.csv``
``adni``           ``ADNI/<PTID>/<description>/<date>/<image id>/*.nii`` + the collection CSV
=================  ========================================================================

A cohort root holds ``cohort.json`` with ``sources: [{name, path, layout, role, task,
modalities, pattern?, label_pattern?}]``; :func:`discover` reads every source of it. A
BIDS-style ``participants.tsv`` (``participant_id`` + columns) at a source root is merged into
each study's ``attrs``.

Problems found while discovering (an unknown modality suffix, a list entry outside the dataset
root, a duplicate study id) do not stop discovery: they are recorded in ``Study.problems`` and
the curator reports each such study as failed with that one-line reason.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mmlib.modalities import MODALITIES, canonical

LAYOUTS: tuple[str, ...] = (
    "brats2021",
    "brats2023",
    "brats2018",
    "ucsf_pdgm",
    "ixi",
    "isles2022",
    "upenn_gbm",
    "vs_seg",
    "decathlon",
    "monai_datalist",
    "brainmvp_json",
    "pattern",
    "adhd200",
    "abide",
    "adni",
)

NII = (".nii.gz", ".nii")

#: Label values each layout's segmentation may hold (None: any small non-negative integer).
LABEL_VALUES: dict[str, tuple[int, ...] | None] = {
    "brats2021": (0, 1, 2, 4),
    "brats2018": (0, 1, 2, 4),
    "ucsf_pdgm": (0, 1, 2, 4),
    "brats2023": (0, 1, 2, 3),
    "isles2022": (0, 1),
    "upenn_gbm": (0, 1, 2, 4),
    "vs_seg": (0, 1),
    "decathlon": None,
    "ixi": None,
    "monai_datalist": None,
    "brainmvp_json": None,
    "pattern": None,
    "adhd200": None,
    "abide": None,
    "adni": None,
}

# Files that real UCSF-PDGM folders hold besides the six modalities; skipped, not errors.
_UCSF_EXTRAS = re.compile(
    r"_(bias|brain_segmentation|brain_parenchyma_segmentation|SWI|ASL|DTI_.*|.*_bias)$", re.I
)
_SPLIT_KEYS = {
    "training": "train",
    "train": "train",
    "validation": "val",
    "val": "val",
    "testing": "test",
    "test": "test",
}


ROLES = ("pretrain", "downstream")
"""Roles of a study: pre-training samples only ``pretrain`` studies when a store records roles
(and every study when it records none)."""


@dataclass
class ScanRef:
    """One modality's file: a path, and the channel when the file is 4-D (Decathlon)."""

    path: str
    channel: int | None = None


@dataclass
class Study:
    """One study (subject session) as found on disk.

    Attributes:
        study: the study id (unique across the sources curated together).
        source: the source name (cohort.json ``name``, or the folder name).
        layout: the layout id that found it.
        modalities: canonical modality name -> :class:`ScanRef`, in template order.
        label: the segmentation file, or None.
        attrs: study-level attributes (participants.tsv columns, BraTS 2018 grade, subset).
        task: the source's task (cohort.json ``task``), or None.
        role: the source's role (e.g. ``pretrain``, ``downstream``), or None.
        split: a split named by the source itself (datalist section), or None.
        label_values: the label values the layout allows, or None for any.
        problems: one-line reasons this study cannot be curated (empty when fine).
    """

    study: str
    source: str
    layout: str
    modalities: dict[str, ScanRef] = field(default_factory=dict)
    label: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    role: str | None = None
    split: str | None = None
    label_values: tuple[int, ...] | None = None
    problems: list[str] = field(default_factory=list)

    def add(self, modality_name: str, path: str | Path, channel: int | None = None) -> None:
        """Map ``modality_name`` (any alias) to a file; an unknown name becomes a problem."""
        try:
            mod = canonical(modality_name, source=str(path))
        except ValueError as err:
            self.problems.append(str(err).split(";")[0] + f" (known: {', '.join(MODALITIES)})")
            return
        if mod in self.modalities:
            self.problems.append(f"{path}: modality {mod} appears twice in study {self.study}")
            return
        self.modalities[mod] = ScanRef(str(path), channel)

    def sort(self) -> Study:
        """Order ``modalities`` in template order; returns self."""
        self.modalities = {m: self.modalities[m] for m in MODALITIES if m in self.modalities}
        return self


def _strip_nii(name: str) -> str | None:
    for ext in NII:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def _nii_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and _strip_nii(p.name) is not None
    )


def read_participants(root: Path) -> dict[str, dict[str, Any]]:
    """Read a BIDS ``participants.tsv`` at ``root`` into ``{participant_id: {column: value}}``.

    Values that look numeric become numbers; ``n/a`` and empty cells are dropped. Keys are
    stored both as written and without a ``sub-`` prefix, so either id form matches.
    """
    path = root / "participants.tsv"
    if not path.is_file():
        return {}
    table: dict[str, dict[str, Any]] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames is None or "participant_id" not in reader.fieldnames:
            raise ValueError(f"{path}: a participants.tsv needs a participant_id column")
        for row in reader:
            pid = row.pop("participant_id").strip()
            attrs = {k: _parse_value(v) for k, v in row.items() if k and v not in (None, "", "n/a")}
            table[pid] = attrs
            table.setdefault(pid.removeprefix("sub-"), attrs)
    return table


def _parse_value(text: str) -> Any:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _apply_participants(
    studies: list[Study], root: Path, id_of: Callable[[Study], str] | None = None
) -> None:
    table = read_participants(root)
    if not table:
        return
    for st in studies:
        key = id_of(st) if id_of else st.study
        row = table.get(key) or table.get(key.removeprefix("sub-"))
        if row:
            st.attrs.update(row)


# --------------------------------------------------------------------------- folder layouts


def _per_study_folders(root: Path, dir_re: re.Pattern[str]) -> list[Path]:
    """Study folders matching ``dir_re`` directly under root or one level deeper."""
    found = [p for p in root.iterdir() if p.is_dir() and dir_re.fullmatch(p.name)]
    if not found:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found += [p for p in sub.iterdir() if p.is_dir() and dir_re.fullmatch(p.name)]
    return sorted(found)


def _folder_layout(
    root: Path,
    source: str,
    layout: str,
    dir_re: str,
    sep: str,
    label_suffixes: Sequence[str],
    skip: re.Pattern[str] | None = None,
    id_of_dir: Callable[[str], str] | None = None,
) -> list[Study]:
    studies = []
    for folder in _per_study_folders(root, re.compile(dir_re)):
        sid = id_of_dir(folder.name) if id_of_dir else folder.name
        st = Study(sid, source, layout, label_values=LABEL_VALUES[layout])
        for f in _nii_files(folder):
            stem = _strip_nii(f.name)
            assert stem is not None
            suffix = stem[len(sid) + 1 :] if stem.startswith(sid + sep) else stem.rsplit(sep, 1)[-1]
            if suffix.lower() in label_suffixes:
                st.label = str(f)
            elif skip is not None and skip.search(sep + suffix):
                continue
            else:
                st.add(suffix, f)
        if not st.modalities and not st.problems:
            st.problems.append(f"{folder}: no image files found")
        studies.append(st.sort())
    return studies


def find_brats2021(root: Path, source: str) -> list[Study]:
    """BraTS 2021: ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``."""
    studies = _folder_layout(root, source, "brats2021", r"BraTS2021_\d+", "_", ("seg",))
    _apply_participants(studies, root)
    return studies


def find_brats2023(root: Path, source: str) -> list[Study]:
    """BraTS 2023 GLI/MEN/SSA/PED/MET: ``BraTS-GLI-XXXXX-XXX/...-{t1c,t1n,t2f,t2w,seg}``.

    The subset (``GLI``, ``MEN``, ...) goes into ``attrs["subset"]``. The study folders may sit
    one level down (``ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData/BraTS-MET-00001-000/``).
    Labels are 1, 2, 3 in every subset; for MET they are named NETC (non-enhancing tumour
    core), SNFH (surrounding non-enhancing FLAIR hyperintensity) and ET (enhancing tumour)
    (Moawad et al., "The Brain Tumor Segmentation - Metastases (BraTS-METS) Challenge 2023",
    arXiv:2306.00838, data description: Synapse syn51156910).
    """
    studies = _folder_layout(root, source, "brats2023", r"BraTS-[A-Z]+-\d+-\d+", "-", ("seg",))
    for st in studies:
        st.attrs["subset"] = st.study.split("-")[1]
    _apply_participants(studies, root)
    return studies


def find_brats2018(root: Path, source: str) -> list[Study]:
    """BraTS 2018: ``HGG/`` and ``LGG/`` folders of ``Brats18_*`` studies; grade into attrs."""
    studies: list[Study] = []
    for grade in ("HGG", "LGG"):
        if (root / grade).is_dir():
            found = _folder_layout(root / grade, source, "brats2018", r"Brats18_.+", "_", ("seg",))
            for st in found:
                st.attrs["grade"] = grade
            studies += found
    _apply_participants(studies, root)
    return studies


def find_ucsf_pdgm(root: Path, source: str) -> list[Study]:
    """UCSF-PDGM: ``UCSF-PDGM-XXXX_nifti/UCSF-PDGM-XXXX_{T1,T1c,T2,FLAIR,DWI,ADC}.nii.gz``.

    ``*_tumor_segmentation`` is the label; bias-field, DTI, SWI, ASL and brain masks are skipped.
    """
    studies = _folder_layout(
        root,
        source,
        "ucsf_pdgm",
        r"UCSF-PDGM-\d+(_nifti)?",
        "_",
        ("tumor_segmentation",),
        skip=_UCSF_EXTRAS,
        id_of_dir=lambda name: name.removesuffix("_nifti"),
    )
    _apply_participants(studies, root)
    return studies


def find_ixi(root: Path, source: str) -> list[Study]:
    """IXI: one folder per modality (``IXI-T1/``, ``T2/``, ...), ``IXI002-Guys-0828-T1.nii.gz``.

    Each modality keeps its own grid; the curator resamples onto a common one. Folders of
    other series (``IXI-DTI``) are skipped.
    """
    by_id: dict[str, Study] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if "dti" in folder.name.lower():
            continue
        for f in _nii_files(folder):
            stem = _strip_nii(f.name)
            assert stem is not None
            sid, _, suffix = stem.rpartition("-")
            if not sid:
                continue
            st = by_id.setdefault(sid, Study(sid, source, "ixi"))
            st.add(suffix, f)
    studies = [by_id[k].sort() for k in sorted(by_id)]
    _apply_participants(studies, root, id_of=lambda s: s.study.split("-")[0])
    return studies


def find_isles2022(root: Path, source: str) -> list[Study]:
    """ISLES 2022 (BIDS): ``sub-*/ses-*/dwi/*_{dwi,adc}.nii.gz``, ``anat/*_FLAIR.nii.gz``.

    Subjects may sit under ``rawdata/``; masks are ``derivatives/sub-*/ses-*/*_msk.nii.gz``.
    The study id is the subject id (``sub-strokecase0001``), with ``_ses-*`` appended when a
    subject has more than one session.
    """
    raw = root / "rawdata" if (root / "rawdata").is_dir() else root
    studies = []
    for sub in sorted(p for p in raw.iterdir() if p.is_dir() and p.name.startswith("sub-")):
        sessions = sorted(p for p in sub.iterdir() if p.is_dir() and p.name.startswith("ses-"))
        for ses in sessions or [sub]:
            sid = sub.name if len(sessions) <= 1 else f"{sub.name}_{ses.name}"
            st = Study(sid, source, "isles2022", label_values=LABEL_VALUES["isles2022"])
            st.attrs["participant_id"] = sub.name
            for f in sorted(ses.rglob("*")):
                stem = _strip_nii(f.name)
                if stem is None or not f.is_file() or f.name.startswith("."):
                    continue
                st.add(stem.rsplit("_", 1)[-1], f)
            deriv = root / "derivatives"
            masks = sorted(deriv.rglob(f"{sub.name}*_msk.nii*")) if deriv.is_dir() else []
            if len(sessions) > 1:
                masks = [m for m in masks if ses.name in m.as_posix()]
            if masks:
                st.label = str(masks[0])
            studies.append(st.sort())
    _apply_participants(studies, root, id_of=lambda s: s.attrs["participant_id"])
    return studies


# ------------------------------------------------- UPENN-GBM and VS-Seg (issue 16, segmentation)

UPENN_MODALITIES: dict[str, str] = {"T1": "t1", "T1GD": "t1c", "T2": "t2", "FLAIR": "flair"}
"""UPENN-GBM's structural series suffixes -> canonical modalities."""
_UPENN_ID = re.compile(r"UPENN-GBM-\d{5}_\d{2}")


def find_upenn_gbm(root: Path, source: str) -> list[Study]:
    """UPENN-GBM as TCIA distributes its NIfTI files (the ``NIfTI-files/`` folder, or a folder
    holding it)::

        images_structural/UPENN-GBM-00001_11/UPENN-GBM-00001_11_{T1,T1GD,T2,FLAIR}.nii.gz
        images_segm/UPENN-GBM-00001_11_segm.nii.gz                      (manually revised)
        automated_segm/UPENN-GBM-00001_11_automated_approx_segm.nii.gz  (automatic)
        UPENN-GBM_clinical_info_v*.csv                                  (one row per ``ID``)

    The scan id's last two digits are the time point (``11`` pre-operative, ``21`` a
    follow-up). Images are skull-stripped and co-registered to the SRI24 atlas at 1 mm; labels
    are 1 necrotic core, 2 oedema, 4 enhancing tumour. The manual segmentation is preferred;
    ``attrs["segmentation"]`` says which one was taken. ``images_structural_unstripped/``,
    ``images_DTI/`` and ``images_DSC/`` are not read. Source: Bakas et al., "The University of
    Pennsylvania glioblastoma (UPenn-GBM) cohort", Sci Data 9:453 (2022),
    doi:10.1038/s41597-022-01560-7; TCIA collection doi:10.7937/TCIA.709X-DN49.

    Problems (one study each): a scan without either segmentation (follow-ups have none), a
    segmentation without its ``images_structural/`` folder, a clinical row without images,
    a file of a series other than the four.
    """
    base = root / "NIfTI-files" if (root / "NIfTI-files").is_dir() else root
    structural = base / "images_structural"
    if not structural.is_dir():
        raise ValueError(
            f"{root}: no images_structural/ folder; point at UPENN-GBM's NIfTI-files/ folder"
        )
    manual_dir, auto_dir = base / "images_segm", base / "automated_segm"

    def segs(folder: Path, suffix: str) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        out = {}
        for f in _nii_files(folder):
            stem = _strip_nii(f.name) or ""
            if stem.endswith(suffix):
                out[stem[: -len(suffix)]] = f
        return out

    manual, auto = segs(manual_dir, "_segm"), segs(auto_dir, "_automated_approx_segm")
    studies: dict[str, Study] = {}
    for folder in sorted(p for p in structural.iterdir() if p.is_dir()):
        if not _UPENN_ID.fullmatch(folder.name):
            continue
        sid = folder.name
        st = Study(sid, source, "upenn_gbm", label_values=LABEL_VALUES["upenn_gbm"])
        st.attrs["timepoint"] = sid[-2:]
        for f in _nii_files(folder):
            suffix = (_strip_nii(f.name) or "").removeprefix(sid + "_")
            if suffix in UPENN_MODALITIES:
                st.add(UPENN_MODALITIES[suffix], f)
            else:
                st.problems.append(
                    f"{f}: not one of UPENN-GBM's structural series ({', '.join(UPENN_MODALITIES)})"
                )
        if sid in manual:
            st.label, st.attrs["segmentation"] = str(manual[sid]), "manual"
        elif sid in auto:
            st.label, st.attrs["segmentation"] = str(auto[sid]), "automated"
        else:
            st.problems.append(
                f"{folder}: no segmentation in images_segm/ or automated_segm/ "
                f"(follow-up scans have none)"
            )
        if not st.modalities:
            st.problems.append(f"{folder}: no image files found")
        studies[sid] = st.sort()
    for sid, path in sorted({**auto, **manual}.items()):
        if sid not in studies:
            studies[sid] = Study(
                sid,
                source,
                "upenn_gbm",
                label=str(path),
                problems=[f"{path}: segmentation without images (no images_structural/{sid}/)"],
            )
    for table in sorted(base.glob("UPENN-GBM_clinical_info*.csv")):
        with table.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "ID" not in reader.fieldnames:
                raise ValueError(f"{table}: UPENN-GBM's clinical table needs an ID column")
            for row in reader:
                sid = (row.pop("ID") or "").strip()
                attrs = {k: _parse_value(v) for k, v in row.items() if k and v not in ("", None)}
                if sid in studies:
                    studies[sid].attrs.update(attrs)
                elif sid:
                    studies[sid] = Study(
                        sid,
                        source,
                        "upenn_gbm",
                        attrs=attrs,
                        problems=[f"{table}: {sid} is in the clinical table but has no images"],
                    )
    return [studies[k] for k in sorted(studies)]


_VS_SERIES: dict[str, str] = {
    "t1_refT1": "t1c",
    "t1_refT2": "t1c",
    "t2_refT2": "t2",
    "t2_refT1": "t2",
}
"""VS-Seg file stems (after ``vs_gk_``) -> canonical modality: its T1 is contrast-enhanced."""


def find_vs_seg(root: Path, source: str) -> list[Study]:
    """Vestibular-Schwannoma-SEG (TCIA, doi:10.7937/TCIA.9YTJ-5Q73) as NIfTI.

    TCIA distributes DICOM images with the tumour as contours; the dataset's own scripts
    (KCL-BMEIS/VS_Seg, ``preprocessing/README.md`` and ``data_conversion.py``) convert them,
    one folder per patient::

        vs_gk_1/vs_gk_t1_refT1.nii.gz    contrast-enhanced T1 (ceT1) on its own grid
        vs_gk_1/vs_gk_t2_refT2.nii.gz    high-resolution T2 on its own grid
        vs_gk_1/vs_gk_seg_refT1.nii.gz   tumour (1) on the T1 grid; ..._refT2 on the T2 grid

    With ``--register T1`` (``T2``) the other image is resampled and named ``_refT1``
    (``_refT2``) and only that segmentation is written. The T1 segmentation is preferred.
    ``vs_gk_struc*`` files (other structures, ``--export_all_structures``) are skipped. Grids:
    Shapey et al., Sci Data 8:286 (2021), doi:10.1038/s41597-021-01064-w.

    Raises:
        ValueError: When the folder holds the unconverted DICOM folders (``vs_gk_N_t1``).
    """
    folders = _per_study_folders(root, re.compile(r"vs_gk_\d+"))
    if not folders and _per_study_folders(root, re.compile(r"vs_gk_\d+_t[12]")):
        raise ValueError(
            f"{root}: VS-Seg DICOM folders (vs_gk_N_t1/_t2) are not NIfTI; convert them with "
            "the dataset's preprocessing/data_conversion.py (KCL-BMEIS/VS_Seg) first"
        )
    studies = []
    for folder in sorted(folders, key=lambda p: int(p.name.rsplit("_", 1)[1])):
        st = Study(folder.name, source, "vs_seg", label_values=LABEL_VALUES["vs_seg"])
        seg: dict[str, Path] = {}
        for f in _nii_files(folder):
            stem = (_strip_nii(f.name) or "").removeprefix("vs_gk_")
            if stem in _VS_SERIES:
                st.add(_VS_SERIES[stem], f)
            elif stem in ("seg_refT1", "seg_refT2"):
                seg[stem] = f
            elif not stem.startswith("struc"):
                st.problems.append(
                    f"{f}: not a VS-Seg file (vs_gk_{{t1,t2,seg}}_ref{{T1,T2}}.nii.gz)"
                )
        if seg:
            st.label = str(seg.get("seg_refT1", seg.get("seg_refT2")))
        else:
            st.problems.append(f"{folder}: no tumour segmentation (vs_gk_seg_refT1.nii.gz)")
        if not st.modalities:
            st.problems.append(f"{folder}: no image files found")
        studies.append(st.sort())
    _apply_participants(studies, root)
    return studies


def find_decathlon(root: Path, source: str) -> list[Study]:
    """Medical Segmentation Decathlon: 4-D ``imagesTr/*.nii.gz`` and ``dataset.json``.

    Channel names come from ``dataset.json`` ``modality`` (``{"0": "FLAIR", "1": "T1w", ...}``);
    each channel becomes one modality. ``training`` entries carry labels, ``test`` ones do not.
    macOS resource files (``._*``) are skipped.
    """
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    channels = meta.get("modality")
    if not isinstance(channels, dict) or not channels:
        raise ValueError(f"{meta_path}: a Decathlon dataset.json needs a 'modality' mapping")
    names = {int(k): v for k, v in channels.items()}
    values = tuple(sorted(int(k) for k in meta.get("labels", {}))) or None
    studies = []
    entries = [(e, "train") for e in meta.get("training", [])]
    entries += [({"image": e} if isinstance(e, str) else e, "test") for e in meta.get("test", [])]
    for entry, split in entries:
        image = _inside(root, entry["image"], meta_path)
        name = Path(entry["image"]).name
        if name.startswith("._"):
            continue
        sid = _strip_nii(name) or name
        st = Study(sid, source, "decathlon", label_values=values, split=None)
        if isinstance(image, str):
            st.problems.append(image)
        else:
            for ch in sorted(names):
                st.add(names[ch], image, channel=ch)
        if entry.get("label"):
            label = _inside(root, entry["label"], meta_path)
            if isinstance(label, str):
                st.problems.append(label)
            else:
                st.label = str(label)
        st.attrs["decathlon_split"] = split
        studies.append(st.sort())
    _apply_participants(studies, root)
    return studies


# ----------------------------------------------------------------------------- JSON layouts


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _inside(root: Path, rel: str, listed_in: Path) -> Path | str:
    """Resolve ``rel`` against ``root``; a path that escapes root is refused (returned as a
    one-line reason instead of a path)."""
    path = (root / rel).resolve() if not os.path.isabs(rel) else Path(rel).resolve()
    base = root.resolve()
    if path != base and base not in path.parents:
        return f"{listed_in}: entry {rel!r} points outside the dataset root {base}; refused"
    return path


def _json_sections(data: Any, path: Path) -> list[tuple[str | None, list[Any]]]:
    if isinstance(data, list):
        return [(None, data)]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of lists (training/validation/...)")
    sections = [
        (k, v)
        for k, v in data.items()
        if isinstance(v, list) and v and all(isinstance(e, (dict, str)) for e in v)
    ]
    if not sections:
        raise ValueError(f"{path}: no list of entries found (expected e.g. 'training': [...])")
    return sections


def _modality_from_filename(name: str) -> str:
    stem = _strip_nii(Path(name).name) or Path(name).name
    return re.split(r"[-_]", stem)[-1]


def _study_id_from_files(paths: Sequence[str]) -> str:
    """The longest common prefix of the file stems less their modality token (or the folder)."""
    stems = [
        re.split(r"[-_](?=[^-_]*$)", _strip_nii(Path(p).name) or Path(p).name)[0] for p in paths
    ]
    prefix = os.path.commonprefix(stems).rstrip("-_")
    return prefix or Path(paths[0]).parent.name


def find_brainmvp_json(path: Path, source: str, root: Path | None = None) -> list[Study]:
    """The BrainMVP authors' per-dataset lists (``jsons/dataset_BraTS2021.json``).

    Format: ``{"training": [{"image": [paths], "label"?: path}], "validation": [...]}``, paths
    relative to the dataset folder (``root``, default the JSON's folder); the modality is the last
    ``-``/``_`` token of each file name, as the authors' loader reads it. Entries outside the
    root are refused.
    """
    base = Path(root) if root is not None else path.parent
    studies = []
    for section, entries in _json_sections(_read_json(path), path):
        for entry in entries:
            images = entry["image"] if isinstance(entry, dict) else entry
            images = [images] if isinstance(images, str) else list(images)
            sid = entry.get("study") if isinstance(entry, dict) else None
            st = Study(
                sid or _study_id_from_files(images),
                source,
                "brainmvp_json",
                split=_SPLIT_KEYS.get(section or ""),
            )
            for rel in images:
                resolved = _inside(base, rel, path)
                if isinstance(resolved, str):
                    st.problems.append(resolved)
                else:
                    st.add(_modality_from_filename(rel), resolved)
            if isinstance(entry, dict) and entry.get("label"):
                resolved = _inside(base, entry["label"], path)
                if isinstance(resolved, str):
                    st.problems.append(resolved)
                else:
                    st.label = str(resolved)
            studies.append(st.sort())
    return studies


def find_monai_datalist(path: Path, source: str, root: Path | None = None) -> list[Study]:
    """A MONAI datalist JSON (as :func:`export_datalist` writes and
    ``monai.data.load_decathlon_datalist`` reads).

    Each entry names its modalities either as keys (``{"flair": p, "t1": p, "label": p}``) or
    as ``image`` (a path or a list) with ``modalities`` (per entry, or top-level). Sections
    ``training``/``validation``/``testing`` become the study's split. Optional ``study``,
    ``source`` and ``attrs`` keys are kept. Paths are relative to ``root`` (default: the JSON's
    folder) and must stay inside it.
    """
    data = _read_json(path)
    base = (
        Path(root)
        if root is not None
        else Path(data.get("base_dir", path.parent) if isinstance(data, dict) else path.parent)
    )
    if not base.is_absolute():
        base = path.parent / base
    top_mods = data.get("modalities") if isinstance(data, dict) else None
    if isinstance(top_mods, dict):
        top_mods = [top_mods[k] for k in sorted(top_mods, key=int)]
    studies = []
    reserved = {"image", "label", "study", "source", "modalities", "attrs", "split", "fold"}
    for section, entries in _json_sections(data, path):
        if section in {"modalities", "labels"}:
            continue
        for i, entry in enumerate(entries):
            entry = {"image": entry} if isinstance(entry, str) else entry
            pairs: list[tuple[str, str]] = []
            if "image" in entry:
                images = [entry["image"]] if isinstance(entry["image"], str) else entry["image"]
                names = entry.get("modalities") or top_mods
                if names is None or len(names) != len(images):
                    names = [_modality_from_filename(p) for p in images]
                pairs = list(zip(names, images))
            else:
                pairs = [
                    (k, v) for k, v in entry.items() if k not in reserved and isinstance(v, str)
                ]
            sid = entry.get("study") or _study_id_from_files([p for _, p in pairs] or [f"entry{i}"])
            st = Study(
                sid,
                entry.get("source", source),
                "monai_datalist",
                split=entry.get("split") or _SPLIT_KEYS.get(section or ""),
                attrs=dict(entry.get("attrs", {})),
            )
            if "fold" in entry:
                st.attrs["fold"] = entry["fold"]
            for name, rel in pairs:
                resolved = _inside(base, rel, path)
                if isinstance(resolved, str):
                    st.problems.append(resolved)
                else:
                    st.add(name, resolved)
            if entry.get("label"):
                resolved = _inside(base, entry["label"], path)
                st.label = None if isinstance(resolved, str) else str(resolved)
                if isinstance(resolved, str):
                    st.problems.append(resolved)
            studies.append(st.sort())
    return studies


def find_pattern(
    root: Path,
    source: str,
    pattern: str,
    label_pattern: str | None = None,
    modalities: Sequence[str] | None = None,
) -> list[Study]:
    """A user-described layout: a path pattern relative to ``root`` with ``{subject}`` and
    ``{modality}`` (e.g. ``"{subject}/anat/{subject}_{modality}.nii.gz"``), and optionally
    ``label_pattern`` with ``{subject}``. ``modalities`` restricts the names accepted. The
    study id is the subject, prefixed with ``<source>-`` when it is a bare number (MRBrainS
    numbers its subjects 1, 2, ...); the subject itself is kept in ``attrs["subject"]``.

    Raises:
        ValueError: When the pattern lacks ``{subject}`` or ``{modality}``.
    """
    if "{subject}" not in pattern or "{modality}" not in pattern:
        raise ValueError(f"pattern {pattern!r} must contain both {{subject}} and {{modality}}")
    regex = _pattern_regex(pattern)
    wanted = {canonical(m) for m in modalities} if modalities else None
    by_id: dict[str, Study] = {}
    glob = pattern.replace("{subject}", "*").replace("{modality}", "*")
    for f in sorted(root.glob(glob)):
        m = regex.fullmatch(f.relative_to(root).as_posix())
        if not m or f.name.startswith("."):
            continue
        subject, mod = m.group("subject"), m.group("modality")
        if label_pattern and f == root / label_pattern.replace("{subject}", subject):
            continue
        # bare numbers ("TrainingData/1/T1.nii") are not unique across sources: prefix them
        sid = f"{source}-{subject}" if subject.isdigit() else subject
        st = by_id.setdefault(sid, Study(sid, source, "pattern"))
        st.attrs.setdefault("subject", subject)
        if wanted is not None:
            try:
                if canonical(mod) not in wanted:
                    continue
            except ValueError:
                continue  # a series the source does not list (e.g. a mask): not ours to read
        st.add(mod, f)
    if label_pattern:
        for st in by_id.values():
            label = root / label_pattern.replace("{subject}", st.attrs["subject"])
            if label.is_file():
                st.label = str(label)
    studies = [by_id[k].sort() for k in sorted(by_id)]
    _apply_participants(studies, root, id_of=lambda s: s.attrs["subject"])
    return studies


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, seen = "", set()
    for part in re.split(r"(\{subject\}|\{modality\})", pattern):
        if part in ("{subject}", "{modality}"):
            name = part[1:-1]
            out += f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)"
            seen.add(name)
        else:
            out += re.escape(part)
    return re.compile(out)


# ------------------------------------------------ multi-site T1 sets with a phenotypic table
#
# ADHD-200, ABIDE I and ADNI are distributed as T1 images in per-subject folders plus a table
# that holds the diagnosis. What a reader cannot use (a table row without images, images
# without a usable diagnosis, an unknown site) becomes a study with a one-line problem.

#: ADHD-200 ``Site`` codes (ADHD-200 phenotypic key).
ADHD200_SITES = {
    1: "Peking",
    2: "Brown",
    3: "KKI",
    4: "NeuroIMAGE",
    5: "NYU",
    6: "OHSU",
    7: "Pittsburgh",
    8: "WashU",
}
#: ADHD-200 ``DX`` codes (phenotypic key): 0 typically developing, 1-3 ADHD subtypes.
ADHD200_DX = {0: "TDC", 1: "ADHD-Combined", 2: "ADHD-Hyperactive/Impulsive", 3: "ADHD-Inattentive"}
#: ABIDE I ``SITE_ID`` values (the 20 sites of the phenotypic file).
ABIDE_SITES = (
    "CALTECH",
    "CMU",
    "KKI",
    "LEUVEN_1",
    "LEUVEN_2",
    "MAX_MUN",
    "NYU",
    "OHSU",
    "OLIN",
    "PITT",
    "SBL",
    "SDSU",
    "STANFORD",
    "TRINITY",
    "UCLA_1",
    "UCLA_2",
    "UM_1",
    "UM_2",
    "USM",
    "YALE",
)
#: ADNI collection ``Group`` -> the MCI vs NC task's class (other groups are not the task's).
ADNI_GROUPS = {"CN": "NC", "MCI": "MCI", "EMCI": "MCI", "LMCI": "MCI"}
_ADNI_PTID = re.compile(r"\d{3}_S_\d{4}")
_ADNI_T1 = re.compile(r"MP-?RAGE|MPR|SPGR|T1", re.I)


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return [
            {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


def _int_or_none(text: Any) -> int | None:
    try:
        return int(float(str(text)))
    except ValueError:
        return None


def _anat_scans(root: Path, depth: str) -> dict[tuple[str, int], list[Path]]:
    """``{(site folder, subject id): [mprage files]}`` of the FCP/INDI raw layout
    ``<site>/<subject>/session_N/anat_N/mprage*.nii[.gz]`` (``depth``: the glob above it)."""
    found: dict[tuple[str, int], list[Path]] = {}
    for f in sorted(root.glob(f"{depth}*/session_*/anat_*/mprage*.nii*")):
        subject = f.parents[2]
        sid = _int_or_none(subject.name)
        if sid is None or _strip_nii(f.name) is None or f.name.startswith("."):
            continue
        site = subject.parent.name if subject.parent != root else ""
        found.setdefault((site, sid), []).append(f)
    return found


def _number(value: Any) -> Any:
    return None if value in ("", None, "-999", "-9999", "n/a") else _parse_value(str(value))


def find_adhd200(root: Path, source: str) -> list[Study]:
    """ADHD-200 (FCP/INDI raw release): ``<Site>/<ScanDir ID>/session_1/anat_1/mprage.nii.gz``
    and the phenotypic CSVs ``<Site>/<Site>_phenotypic.csv`` (any ``*_phenotypic*.csv`` under
    the root, e.g. the test-set file ``allSubs_testSet_phenotypic_dx.csv``).

    Source: the ADHD-200 release on NITRC / the FCP-INDI S3 bucket
    (http://fcon_1000.projects.nitrc.org/indi/adhd200/, ``s3://fcp-indi/data/Projects/ADHD200/
    RawData/<site>/<id>/session_1/anat_1/mprage.nii.gz``) and its phenotypic key
    (``ADHD-200_PhenotypicKey.pdf``): columns ``ScanDir ID, Site, Gender, Age, Handedness, DX,
    ...``; ``DX`` 0 typically developing (TDC), 1 ADHD-Combined, 2 ADHD-Hyperactive/Impulsive,
    3 ADHD-Inattentive, ``pending`` for the test subjects whose diagnosis was withheld (Brown);
    ``Site`` 1 Peking, 2 Brown, 3 KKI, 4 NeuroIMAGE, 5 NYU, 6 OHSU, 7 Pittsburgh, 8 WashU;
    ``Gender`` 0 female, 1 male; -999 missing.

    The study id is ``<site folder>_<7-digit id>``; ``attrs["diagnosis"]`` is ``TDC`` or
    ``ADHD`` (subtype in ``dx``/``dx_subtype``); the first ``session_*/anat_*`` scan is used.
    Problems: images without a table row or with a pending/unknown ``DX``, an unknown site
    code, a table row without images.
    """
    table: dict[int, tuple[dict[str, str], Path]] = {}
    for csv_path in sorted(root.rglob("*_phenotypic*.csv")):
        for row in _read_csv_rows(csv_path):
            sid = _int_or_none(row.get("ScanDir ID", row.get("ScanDirID", "")))
            if sid is not None and sid not in table:
                table[sid] = (row, csv_path)
    scans = _anat_scans(root, "*/")
    studies = []
    seen: set[int] = set()
    for (site, num), files in sorted(scans.items()):
        seen.add(num)
        st = Study(f"{site}_{num:07d}" if site else f"{num:07d}", source, "adhd200")
        st.add("t1", files[0])
        st.attrs.update({"scan_id": f"{num:07d}", "site_folder": site, "anat_scans": len(files)})
        if num not in table:
            st.problems.append(
                f"{files[0]}: ScanDir ID {num} has no row in a *_phenotypic.csv: no diagnosis"
            )
        else:
            row, csv_path = table[num]
            _adhd200_row(st, row, csv_path)
        studies.append(st.sort())
    for num, (_row, csv_path) in sorted(table.items()):
        if num not in seen:
            site = csv_path.parent.name if csv_path.parent != root else ""
            st = Study(f"{site}_{num:07d}" if site else f"{num:07d}", source, "adhd200")
            st.problems.append(
                f"{csv_path}: ScanDir ID {num} has no image "
                f"({site or '<site>'}/{num:07d}/session_1/anat_1/mprage.nii.gz)"
            )
            studies.append(st)
    return studies


def _adhd200_row(st: Study, row: dict[str, str], csv_path: Path) -> None:
    code = _int_or_none(row.get("Site", ""))
    dx = _int_or_none(row.get("DX", ""))
    st.attrs.update({"age": _number(row.get("Age")), "site_code": code})
    gender = _int_or_none(row.get("Gender", ""))
    if gender in (0, 1):
        st.attrs["sex"] = "M" if gender == 1 else "F"
    if code not in ADHD200_SITES:
        st.problems.append(
            f"{csv_path}: ScanDir ID {st.attrs['scan_id']}: unknown Site code "
            f"{row.get('Site')!r} (known: 1-8, ADHD-200 phenotypic key)"
        )
    else:
        st.attrs["site"] = ADHD200_SITES[code]
    if dx not in ADHD200_DX:
        st.problems.append(
            f"{csv_path}: ScanDir ID {st.attrs['scan_id']}: diagnosis DX is "
            f"{row.get('DX') or 'empty'!r}, not 0-3: no class"
        )
    else:
        st.attrs.update(
            {"dx": dx, "dx_subtype": ADHD200_DX[dx], "diagnosis": "TDC" if dx == 0 else "ADHD"}
        )
    st.attrs = {k: v for k, v in st.attrs.items() if v is not None}


def find_abide(root: Path, source: str) -> list[Study]:
    """ABIDE I (FCP/INDI raw release): ``<SITE>/<SUB_ID>/session_1/anat_1/mprage.nii.gz`` and
    ``Phenotypic_V1_0b.csv`` at the root (any ``Phenotypic*.csv`` with ``SUB_ID``).

    Source: the ABIDE I pages on NITRC (http://fcon_1000.projects.nitrc.org/indi/abide/
    abide_I.html, "ABIDE phenotypic data legend"), the FCP-INDI S3 layout
    ``s3://fcp-indi/data/Projects/ABIDE_Initiative/RawData/<site>/<SUB_ID>/session_1/anat_1/
    mprage.nii.gz`` and the Preprocessed Connectomes Project's ABIDE download page (whose
    ``FILE_ID`` is ``<site>_<zero-padded SUB_ID>``): columns ``SITE_ID, SUB_ID, DX_GROUP,
    DSM_IV_TR, AGE_AT_SCAN, SEX, ...``; ``DX_GROUP`` 1 autism, 2 control; ``SEX`` 1 male,
    2 female; 20 sites (:data:`ABIDE_SITES`).

    The study id is ``<SITE_ID>_<7-digit SUB_ID>``; ``attrs["diagnosis"]`` is ``Autism`` or
    ``Control``. Problems: images without a table row or with a ``DX_GROUP`` other than 1/2,
    a ``SITE_ID`` outside ABIDE I's sites, a table row without images.
    """
    table: dict[int, tuple[dict[str, str], Path]] = {}
    for csv_path in sorted(root.glob("*henotypic*.csv")):
        for row in _read_csv_rows(csv_path):
            sid = _int_or_none(row.get("SUB_ID", ""))
            if sid is not None and sid not in table:
                table[sid] = (row, csv_path)
    scans = _anat_scans(root, "*/")
    scans.update({k: v for k, v in _anat_scans(root, "").items() if k not in scans})
    studies = []
    seen: set[int] = set()
    for (folder, num), files in sorted(scans.items(), key=lambda kv: kv[0][1]):
        seen.add(num)
        row, csv_path = table.get(num, ({}, root))
        site = row.get("SITE_ID") or folder
        st = Study(f"{site}_{num:07d}", source, "abide")
        st.add("t1", files[0])
        st.attrs.update({"sub_id": num, "site_folder": folder, "anat_scans": len(files)})
        if not row:
            st.problems.append(
                f"{files[0]}: SUB_ID {num} has no row in Phenotypic_V1_0b.csv: no diagnosis"
            )
        else:
            _abide_row(st, row, csv_path)
        studies.append(st.sort())
    for num, (row, csv_path) in sorted(table.items()):
        if num not in seen:
            st = Study(f"{row.get('SITE_ID', '')}_{num:07d}", source, "abide")
            st.problems.append(
                f"{csv_path}: SUB_ID {num} has no image "
                f"({row.get('SITE_ID', '<SITE>')}/{num:07d}/session_1/anat_1/mprage.nii.gz)"
            )
            studies.append(st)
    return studies


def _abide_row(st: Study, row: dict[str, str], csv_path: Path) -> None:
    site, dx, sex = row.get("SITE_ID", ""), _int_or_none(row.get("DX_GROUP", "")), row.get("SEX")
    st.attrs.update({"site": site, "age": _number(row.get("AGE_AT_SCAN"))})
    if sex in ("1", "2"):
        st.attrs["sex"] = "M" if sex == "1" else "F"
    if site.upper() not in ABIDE_SITES:
        st.problems.append(
            f"{csv_path}: SUB_ID {st.attrs['sub_id']}: unknown SITE_ID {site!r} "
            f"(ABIDE I sites: {', '.join(ABIDE_SITES)})"
        )
    if dx not in (1, 2):
        st.problems.append(
            f"{csv_path}: SUB_ID {st.attrs['sub_id']}: DX_GROUP is "
            f"{row.get('DX_GROUP') or 'empty'!r}, not 1 (autism) or 2 (control)"
        )
    else:
        st.attrs.update({"dx_group": dx, "diagnosis": "Autism" if dx == 1 else "Control"})
    st.attrs = {k: v for k, v in st.attrs.items() if v is not None}


def find_adni(root: Path, source: str) -> list[Study]:
    """ADNI as downloaded from the LONI IDA: ``ADNI/<PTID>/<description>/<date>/<image id>/
    ADNI_<PTID>_MR_<description>_..._I<image>.nii`` and the image collection's CSV beside the
    ``ADNI`` folder (or inside the root).

    Source: the LONI IDA download of an image collection (https://adni.loni.usc.edu, "Download
    → Image Collections"; the zip unpacks to ``ADNI/<PTID>/<series description>/
    <YYYY-MM-DD_HH_MM_SS.0>/<image id>/``, e.g. ``ADNI/002_S_0295/MPRAGE/
    2006-04-18_08_20_30.0/S13408/ADNI_002_S_0295_MR_MPRAGE_br_raw_..._S13408_I13722.nii``) and
    the collection CSV (columns ``Image Data ID, Subject, Group, Sex, Age, Visit, Modality,
    Description, Type, Acq Date, Format, Downloaded``; ``Group`` CN, SMC, EMCI, MCI, LMCI,
    AD). The site is the PTID's first three digits.

    One study per subject (the PTID): its earliest T1 image (description MPRAGE, MP-RAGE,
    MPR..., SPGR, T1; others are skipped), so that no subject is in two splits.
    ``attrs["group"]`` is ``NC`` (CN) or ``MCI`` (MCI, EMCI, LMCI); the collection's group is
    kept in ``adni_group``. Problems: an image whose id is not in the CSV (no diagnosis), a
    group outside MCI vs NC (AD, SMC), a CSV subject without an image.
    """
    images = root / "ADNI" if (root / "ADNI").is_dir() else root
    table: dict[str, dict[str, str]] = {}
    subjects: set[str] = set()
    for csv_path in sorted({*root.glob("*.csv"), *images.parent.glob("*.csv")}):
        for row in _read_csv_rows(csv_path):
            if "Image Data ID" in row and "Subject" in row:
                table[row["Image Data ID"].upper().lstrip("I")] = {**row, "_csv": csv_path.name}
                subjects.add(row["Subject"])
    found: dict[str, list[tuple[str, str, Path, str]]] = {}
    for f in sorted(images.glob("*/*/*/*/*.nii*")):
        ptid, desc, date, image_dir = f.relative_to(images).parts[:4]
        if not _ADNI_PTID.fullmatch(ptid) or not _ADNI_T1.search(desc) or f.name.startswith("."):
            continue
        m = re.search(r"_I(\d+)\.nii", f.name)
        image = m.group(1) if m else image_dir.lstrip("IS")
        found.setdefault(ptid, []).append((date, image, f, desc))
    studies = []
    for ptid, scans in sorted(found.items()):
        date, image, path, desc = min(
            scans, key=lambda s: (s[0], int(s[1]) if s[1].isdigit() else 0)
        )
        st = Study(ptid, source, "adni")
        st.add("t1", path)
        st.attrs.update(
            {
                "site": ptid[:3],
                "image_id": f"I{image}",
                "description": desc,
                "acq_date": date.split("_")[0],
                "t1_images": len(scans),
            }
        )
        found_row = table.get(image)
        if found_row is None:
            st.problems.append(
                f"{path}: image I{image} of {ptid} is not in the collection CSV: no diagnosis"
            )
        else:
            group = found_row.get("Group", "")
            st.attrs.update(
                {
                    "adni_group": group,
                    "visit": found_row.get("Visit"),
                    "age": _number(found_row.get("Age")),
                    "sex": found_row.get("Sex"),
                }
            )
            if group.upper() in ADNI_GROUPS:
                st.attrs["group"] = ADNI_GROUPS[group.upper()]
            else:
                st.problems.append(
                    f"{path}: {ptid} is in group {group or 'empty'!r} ({found_row['_csv']}), "
                    f"not part of the MCI vs NC task ({', '.join(ADNI_GROUPS)})"
                )
        st.attrs = {k: v for k, v in st.attrs.items() if v not in (None, "")}
        studies.append(st.sort())
    for ptid in sorted(subjects - set(found)):
        st = Study(ptid, source, "adni")
        st.problems.append(
            f"{images}: {ptid} is in the collection CSV but has no T1 image "
            f"under {images.name}/{ptid}/"
        )
        studies.append(st)
    return studies


def _detect_cls_layout(path: Path) -> str | None:
    """``adhd200``, ``abide`` or ``adni`` when a folder looks like that release, else None."""
    if (path / "ADNI").is_dir() or any(
        _ADNI_PTID.fullmatch(p.name) for p in path.iterdir() if p.is_dir()
    ):
        return "adni"
    if any(path.glob("Phenotypic_V1_0b*.csv")):
        return "abide"
    if any(path.glob("*/*_phenotypic.csv")) or any(path.glob("*_phenotypic.csv")):
        return "adhd200"
    return None


# ---------------------------------------------------------------------------------- discover

_FINDERS = {
    "brats2021": find_brats2021,
    "brats2023": find_brats2023,
    "brats2018": find_brats2018,
    "ucsf_pdgm": find_ucsf_pdgm,
    "ixi": find_ixi,
    "isles2022": find_isles2022,
    "upenn_gbm": find_upenn_gbm,
    "vs_seg": find_vs_seg,
    "decathlon": find_decathlon,
    "adhd200": find_adhd200,
    "abide": find_abide,
    "adni": find_adni,
}


def detect_layout(path: str | Path) -> str:
    """Tell the layout id of a dataset folder or JSON list.

    Returns:
        One of :data:`LAYOUTS`, or ``"cohort"`` for a folder with ``cohort.json``.

    Raises:
        ValueError: When no layout fits; the message says how to name one.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix != ".json":
            raise ValueError(f"{path}: expected a dataset folder or a JSON list")
        data = _read_json(path)
        if isinstance(data, dict) and ("modality" in data and "training" in data):
            return "decathlon"
        for _, entries in _json_sections(data, path):
            for e in entries:
                if (
                    isinstance(e, dict)
                    and "image" in e
                    and not isinstance(e["image"], str)
                    and "modalities" not in e
                    and not (isinstance(data, dict) and "modalities" in data)
                ):
                    return "brainmvp_json"
            break
        return "monai_datalist"
    if (path / "cohort.json").is_file():
        return "cohort"
    cls_layout = _detect_cls_layout(path)
    if cls_layout:
        return cls_layout
    if (path / "dataset.json").is_file() and (path / "imagesTr").is_dir():
        return "decathlon"
    if (path / "HGG").is_dir() or (path / "LGG").is_dir():
        return "brats2018"
    if (path / "images_structural").is_dir() or (path / "NIfTI-files/images_structural").is_dir():
        return "upenn_gbm"
    names = [p.name for p in path.iterdir() if p.is_dir()]
    deeper = (
        [
            q.name
            for p in path.iterdir()
            if p.is_dir() and not p.name.startswith(".")
            for q in p.iterdir()
            if q.is_dir()
        ]
        if len(names) <= 3
        else []
    )
    for candidates in (names, deeper):
        if any(re.fullmatch(r"BraTS2021_\d+", n) for n in candidates):
            return "brats2021"
        if any(re.fullmatch(r"BraTS-[A-Z]+-\d+-\d+", n) for n in candidates):
            return "brats2023"
        if any(re.fullmatch(r"UCSF-PDGM-\d+(_nifti)?", n) for n in candidates):
            return "ucsf_pdgm"
        if any(re.fullmatch(r"vs_gk_\d+", n) for n in candidates):
            return "vs_seg"
    subs = [n for n in names if n.startswith("sub-")]
    if subs or (path / "rawdata").is_dir():
        return "isles2022"
    if any(re.fullmatch(r"(IXI-)?(T1|T2|PD|MRA)", n, re.I) for n in names):
        return "ixi"
    raise ValueError(
        f"{path}: cannot tell the layout; name it (one of {', '.join(LAYOUTS)}) or describe it "
        "with a pattern such as '{subject}/{subject}_{modality}.nii.gz'"
    )


def find_studies(
    path: str | Path,
    layout: str | None = None,
    source: str | None = None,
    pattern: str | None = None,
    label_pattern: str | None = None,
    modalities: Sequence[str] | None = None,
    root: str | Path | None = None,
) -> list[Study]:
    """Find the studies of one source.

    Args:
        path: the dataset folder (or JSON list for ``monai_datalist``/``brainmvp_json``).
        layout: a layout id; detected when None. Defaults to None.
        source: the source name; the folder/file stem when None. Defaults to None.
        pattern: the path pattern of the ``pattern`` layout. Defaults to None.
        label_pattern: the label path pattern of the ``pattern`` layout. Defaults to None.
        modalities: canonical modalities to keep (others are dropped). Defaults to None.
        root: the dataset root that JSON-list paths are relative to. Defaults to None.

    Returns:
        The studies, sorted by id.

    Raises:
        ValueError: When the layout is unknown or cannot be detected.
    """
    path = Path(path)
    if pattern is not None and layout is None:
        layout = "pattern"
    layout = layout or detect_layout(path)
    source = source or (path.stem if path.is_file() else path.name)
    if layout == "cohort":
        return discover(path)
    if layout == "pattern":
        if not pattern:
            raise ValueError(
                f"{path}: the pattern layout needs a pattern with {{subject}} and {{modality}}"
            )
        studies = find_pattern(path, source, pattern, label_pattern, modalities)
    elif layout == "brainmvp_json":
        studies = find_brainmvp_json(path, source, Path(root) if root else None)
    elif layout == "monai_datalist":
        studies = find_monai_datalist(path, source, Path(root) if root else None)
    elif layout in _FINDERS:
        if not path.is_dir():
            raise ValueError(f"{path}: layout {layout} expects a folder")
        studies = _FINDERS[layout](path, source)
    else:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if modalities and layout != "pattern":
        keep = {canonical(m) for m in modalities}
        for st in studies:
            st.modalities = {m: r for m, r in st.modalities.items() if m in keep}
    return sorted(studies, key=lambda s: s.study)


def read_cohort(root: str | Path) -> list[dict[str, Any]]:
    """The ``sources`` of a cohort root's ``cohort.json`` (paths made absolute)."""
    root = Path(root)
    meta = _read_json(root / "cohort.json")
    sources = meta.get("sources") if isinstance(meta, dict) else None
    if not isinstance(sources, list) or not sources:
        raise ValueError(f"{root / 'cohort.json'}: needs a non-empty 'sources' list")
    out = []
    for i, src in enumerate(sources):
        if "path" not in src or "name" not in src:
            raise ValueError(f"{root / 'cohort.json'}: source #{i} needs 'name' and 'path'")
        out.append({**src, "path": str((root / src["path"]).resolve())})
    return out


def discover(*paths: str | Path, layout: str | None = None, **options: Any) -> list[Study]:
    """Find every study of one or more sources: cohort roots (with ``cohort.json``), dataset
    folders (layout detected) or JSON lists.

    Study ids must be unique across everything discovered together: a repeated id is kept as a
    study with a problem ("duplicate study id"), so the curator reports it instead of
    overwriting the first.

    Args:
        *paths: the sources.
        layout: force one layout for all paths (not for cohort roots). Defaults to None.
        **options: passed to :func:`find_studies` (``pattern``, ``label_pattern``, ...).

    Returns:
        The studies, in source order then by id.

    Examples::

        >>> studies = discover(work_dir("demo") / "cohort")          # doctest: +SKIP
        >>> source_counts(studies)                                   # doctest: +SKIP
    """
    studies: list[Study] = []
    for path in paths:
        path = Path(path)
        if path.is_dir() and (path / "cohort.json").is_file() and layout is None:
            for src in read_cohort(path):
                found = find_studies(
                    src["path"],
                    src.get("layout"),
                    src["name"],
                    src.get("pattern"),
                    src.get("label_pattern"),
                    src.get("modalities"),
                    src.get("root"),
                )
                for st in found:
                    st.task = src.get("task", st.task)
                    st.role = src.get("role", st.role)
                    if src.get("label_values") is not None:
                        st.label_values = tuple(src["label_values"])
                studies += found
        else:
            studies += find_studies(path, layout, **options)
    seen: dict[str, str] = {}
    for st in studies:
        if st.study in seen:
            st.problems.append(
                f"duplicate study id {st.study} (source {st.source}; already "
                f"in source {seen[st.study]})"
            )
        else:
            seen[st.study] = st.source
    return studies


def source_counts(studies: Iterable[Study]) -> pd.DataFrame:
    """Per-source counts: studies, labelled studies, studies with problems, and per modality.

    Returns:
        A DataFrame indexed by source with columns ``studies, labelled, problems, scans`` and
        one column per canonical modality present.
    """
    rows = []
    for st in studies:
        row = {
            "source": st.source,
            "layout": st.layout,
            "studies": 1,
            "labelled": int(st.label is not None),
            "problems": int(bool(st.problems)),
            "scans": len(st.modalities),
        }
        row.update(dict.fromkeys(st.modalities, 1))
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["layout", "studies", "labelled", "problems", "scans"])
    df = pd.DataFrame(rows).fillna(0)
    mods = [m for m in MODALITIES if m in df.columns]
    out = (
        df.groupby(["source", "layout"], sort=False)[
            ["studies", "labelled", "problems", "scans", *mods]
        ]
        .sum()
        .astype(int)
    )
    return out.reset_index("layout")


def export_datalist(
    studies: Iterable[Study], path: str | Path, splits: dict[str, str] | None = None
) -> Path:
    """Write studies as a MONAI datalist JSON (readable by ``load_decathlon_datalist`` and by
    :func:`find_monai_datalist`).

    Each entry holds ``image`` (list, template order), ``modalities``, one key per modality,
    ``label`` when present, ``study``, ``source`` and ``attrs``. Paths are written relative to
    the JSON's folder when they lie below it, else absolute. Sections: ``training``,
    ``validation``, ``testing`` from ``splits`` (study -> train/val/test) or the study's own
    split (default ``training``). 4-D files (Decathlon channels) cannot be expressed per
    modality and are refused.

    Raises:
        ValueError: When a study's modality lives in a channel of a 4-D file.
    """
    path = Path(path)
    base = path.parent.resolve()

    def rel(p: str) -> str:
        q = Path(p).resolve()
        return q.relative_to(base).as_posix() if base in q.parents else str(q)

    sections: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "testing": []}
    names = {"train": "training", "val": "validation", "test": "testing"}
    for st in studies:
        if any(r.channel is not None for r in st.modalities.values()):
            raise ValueError(
                f"{st.study}: modalities are channels of a 4-D file; a datalist "
                "needs one file per modality (curate it and export the store)"
            )
        entry: dict[str, Any] = {
            "study": st.study,
            "source": st.source,
            "image": [rel(r.path) for r in st.modalities.values()],
            "modalities": list(st.modalities),
        }
        entry.update({m: rel(r.path) for m, r in st.modalities.items()})
        if st.label:
            entry["label"] = rel(st.label)
        if st.attrs:
            entry["attrs"] = st.attrs
        split = (splits or {}).get(st.study) or st.split or "train"
        sections[names.get(split, "training")].append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: v for k, v in sections.items() if v}, indent=1, default=str))
    return path
