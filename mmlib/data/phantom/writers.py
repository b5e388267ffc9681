"""Writers that reproduce each public dataset's on-disk conventions.

Each layout fixes, per modality, a grid (shape, voxel size, orientation, obliquity), a dtype and
a file name, and where the label goes. Grids are the real datasets' at the ``paper`` preset;
``smoke`` and ``demo`` write the same grid *shrunk* by the preset's factor ``f`` (voxel size ×
f, shape ÷ f, same field of view, orientation, dtype, naming and layout).

=============  ==========================================================================
layout         files (grid at paper scale)
=============  ==========================================================================
brats2021      ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``;
               240×240×155, 1 mm, LPS, int16 (seg uint8, labels 1 NCR, 2 ED, 4 ET)
brats2023      ``BraTS-{GLI,MEN,SSA,PED,MET}-XXXXX-000/…-{t1c,t1n,t2f,t2w,seg}.nii.gz``;
               same grid, labels 1 NCR, 2 ED, 3 ET
brats2018      ``{HGG,LGG}/Brats18_SIM_XXX_1/Brats18_SIM_XXX_1_{flair,t1,t1ce,t2,seg}.nii.gz``;
               same grid, labels 1/2/4
ucsf_pdgm      ``UCSF-PDGM-XXXX_nifti/UCSF-PDGM-XXXX_{T1,T1c,T2,FLAIR,DWI,ADC}.nii.gz``,
               ``_tumor_segmentation`` (1/2/4), ``_brain_segmentation`` (mask); 240×240×155,
               1 mm, LPS, float32
ixi            ``IXI-{T1,T2,PD,MRA}/IXINNN-{Guys,HH,IOP}-NNNN-{T1,T2,PD,MRA}.nii.gz``, each on
               its own grid: T1 sagittal 256×256×150 at 0.94×0.94×1.2 mm (PSR), T2/PD axial
               256×256×130 at 0.94×0.94×1.2 mm (LPS), MRA axial slab 512×512×100 at
               0.47×0.47×0.8 mm (LPS); int16; not skull-stripped
isles2022      BIDS ``sub-strokecaseNNNN/ses-0001/dwi/…_{dwi,adc}.nii.gz`` (2 mm, 112×112×73,
               RAS), ``anat/…_FLAIR.nii.gz`` (oblique 6°, 0.9×0.9×5 mm, 256×256×30), JSON
               sidecars, ``derivatives/sub-…/ses-0001/…_msk.nii.gz`` on the DWI grid; float32
decathlon      ``imagesTr/BRATS_NNN.nii.gz`` 4-D (240×240×155×4; FLAIR, T1w, T1gd, T2w), RAS,
               float32; ``labelsTr/BRATS_NNN.nii.gz`` (1 oedema, 2 non-enhancing, 3 enhancing);
               ``dataset.json``
upenn_gbm      ``images_structural/UPENN-GBM-NNNNN_11/…_11_{T1,T1GD,T2,FLAIR}.nii.gz``,
               ``automated_segm/…_automated_approx_segm.nii.gz`` (every study) and
               ``images_segm/…_segm.nii.gz`` (the manually revised subset), labels 1/2/4;
               BraTS grid (SRI24, 240×240×155, 1 mm, LPS), skull-stripped, int16;
               ``UPENN-GBM_clinical_info_v2.1.csv`` (ID, Gender, Age_at_scan_years)
vs_seg         ``vs_gk_N/vs_gk_{t1_refT1,t2_refT2,seg_refT1,seg_refT2}.nii.gz`` (the NIfTI that
               the dataset's own conversion script writes without ``--register``): ceT1
               512×512×120 at 0.41×0.41×1.5 mm, hrT2 slab 384×384×80 at 0.5×0.5×1.0 mm
               around the internal acoustic canals; LPS, int16, not skull-stripped; tumour 1
pattern        a path pattern with ``{subject}`` and ``{modality}`` (MRBrainS-like tissue set:
               240×240×48 at 0.96×0.96×3 mm)
adhd200        ``<Site>/<7-digit ScanDir ID>/session_1/anat_1/mprage.nii.gz`` and
               ``<Site>/<Site>_phenotypic.csv``; each site its own scanner grid
               (:data:`SITE_GRIDS`), int16, not skull-stripped
abide          ``<SITE>/<7-digit SUB_ID>/session_1/anat_1/mprage.nii.gz`` and
               ``Phenotypic_V1_0b.csv`` at the root; site grids, int16
adni           ``ADNI/<PTID>/MPRAGE/<date>_<time>.0/I<image>/ADNI_<PTID>_MR_MPRAGE_…_I<image>.nii``
               (uncompressed) and the collection CSV beside ``ADNI/``; sagittal 1.2×1×1 mm
=============  ==========================================================================

Files are written byte-deterministically (gzip with ``mtime=0`` and no file name) to a
temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

_AXES = {
    "R": (0, 1.0),
    "L": (0, -1.0),
    "A": (1, 1.0),
    "P": (1, -1.0),
    "S": (2, 1.0),
    "I": (2, -1.0),
}


@dataclass(frozen=True)
class Grid:
    """A voxel grid as a dataset writes it.

    Attributes:
        shape: voxels per axis.
        spacing: mm per voxel per axis.
        axcodes: direction of increasing index per axis (nibabel codes, e.g. ``"LPS"``).
        center: world mm of the grid's centre.
        tilt_deg: obliquity, a rotation about the left-right axis. Defaults to 0.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axcodes: str
    center: tuple[float, float, float] = (0.0, -18.0, 12.0)
    tilt_deg: float = 0.0

    def shrink(self, factor: int) -> Grid:
        """The same field of view with voxels ``factor`` times larger."""
        if factor == 1:
            return self
        shape = tuple(max(1, int(round(s / factor))) for s in self.shape)
        spacing = tuple(sp * so / sn for sp, so, sn in zip(self.spacing, self.shape, shape))
        return replace(self, shape=shape, spacing=spacing)  # type: ignore[arg-type]

    def affine(self, shift: np.ndarray | None = None) -> np.ndarray:
        """(4, 4) voxel -> world mm; ``shift`` (mm) moves the grid centre."""
        m = np.zeros((3, 3))
        for i, code in enumerate(self.axcodes):
            axis, sign = _AXES[code]
            m[axis, i] = sign * self.spacing[i]
        t = np.radians(self.tilt_deg)
        rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
        m = rx @ m
        center = np.asarray(self.center, dtype=float) + (0 if shift is None else shift)
        aff = np.eye(4)
        aff[:3, :3] = m
        aff[:3, 3] = center - m @ ((np.asarray(self.shape) - 1) / 2.0)
        return aff


BRATS_GRID = Grid((240, 240, 155), (1.0, 1.0, 1.0), "LPS")
MSD_GRID = Grid((240, 240, 155), (1.0, 1.0, 1.0), "RAS")

#: Per layout: modality -> grid (paper scale). ``"*"`` applies to every modality.
GRIDS: dict[str, dict[str, Grid]] = {
    "brats2021": {"*": BRATS_GRID},
    "brats2023": {"*": BRATS_GRID},
    "brats2018": {"*": BRATS_GRID},
    "ucsf_pdgm": {"*": BRATS_GRID},
    "decathlon": {"*": MSD_GRID},
    "ixi": {
        "t1": Grid((256, 256, 150), (0.9375, 0.9375, 1.2), "PSR", (0.0, -18.0, 5.0)),
        "t2": Grid((256, 256, 130), (0.9375, 0.9375, 1.2), "LPS", (0.0, -18.0, 5.0)),
        "pd": Grid((256, 256, 130), (0.9375, 0.9375, 1.2), "LPS", (0.0, -18.0, 5.0)),
        "mra": Grid((512, 512, 100), (0.46875, 0.46875, 0.8), "LPS", (0.0, -10.0, -5.0)),
    },
    "isles2022": {
        "dwi": Grid((112, 112, 73), (2.0, 2.0, 2.0), "RAS", (0.0, -18.0, 10.0)),
        "adc": Grid((112, 112, 73), (2.0, 2.0, 2.0), "RAS", (0.0, -18.0, 10.0)),
        "flair": Grid((256, 256, 30), (0.9, 0.9, 5.0), "RAS", (0.0, -18.0, 14.0), tilt_deg=6.0),
    },
    "mrbrains": {"*": Grid((240, 240, 48), (0.958, 0.958, 3.0), "LAS", (0.0, -18.0, 14.0))},
    "adni": {"*": Grid((170, 256, 256), (1.2, 1.0, 1.0), "RAS", (0.0, -18.0, 5.0))},
    "upenn_gbm": {"*": BRATS_GRID},
    "vs_seg": {
        "t1c": Grid((512, 512, 120), (0.41, 0.41, 1.5), "LPS", (0.0, -18.0, -5.0)),
        "t2": Grid((384, 384, 80), (0.5, 0.5, 1.0), "LPS", (0.0, -30.0, -36.0)),
    },
    "adhd200": {"*": Grid((176, 256, 256), (1.0, 1.0, 1.0), "RPI", (0.0, -18.0, 5.0))},
    "abide": {"*": Grid((176, 256, 256), (1.0, 1.0, 1.0), "RPI", (0.0, -18.0, 5.0))},
}

#: Scanner grids of the classification sites (paper scale): sites differ in voxel size and
#: orientation, one of the site effects of multi-site T1 sets (ADHD-200, ABIDE, ADNI).
SITE_GRIDS: dict[str, Grid] = {
    "sag_1mm": Grid((176, 256, 256), (1.0, 1.0, 1.0), "RPI", (0.0, -18.0, 5.0)),
    "sag_1.2mm": Grid((160, 240, 256), (1.2, 1.0, 1.0), "LAS", (0.0, -18.0, 5.0)),
    "axial_1.3mm": Grid((192, 224, 128), (1.0, 1.0, 1.3), "LPS", (0.0, -18.0, 8.0)),
    "cor_1.5mm": Grid((256, 124, 256), (1.0, 1.5, 1.0), "LIP", (0.0, -18.0, 5.0)),
}

#: Whether a layout's images are skull-stripped (zero outside the brain).
SKULL_STRIPPED: dict[str, bool] = {
    "brats2021": True,
    "brats2023": True,
    "brats2018": True,
    "ucsf_pdgm": True,
    "decathlon": True,
    "ixi": False,
    "isles2022": False,
    "mrbrains": False,
    "adni": False,
    "upenn_gbm": True,
    "vs_seg": False,
    "adhd200": False,
    "abide": False,
}

#: On-disk dtype of images per layout.
DTYPES: dict[str, str] = {
    "brats2021": "int16",
    "brats2023": "int16",
    "brats2018": "int16",
    "ucsf_pdgm": "float32",
    "decathlon": "float32",
    "ixi": "int16",
    "isles2022": "float32",
    "mrbrains": "float32",
    "adni": "int16",
    "upenn_gbm": "int16",
    "vs_seg": "int16",
    "adhd200": "int16",
    "abide": "int16",
}

#: File-name alias of each canonical modality per layout.
NAMES: dict[str, dict[str, str]] = {
    "brats2021": {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"},
    "brats2018": {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"},
    "brats2023": {"t1c": "t1c", "t1": "t1n", "flair": "t2f", "t2": "t2w"},
    "ucsf_pdgm": {
        "t1": "T1",
        "t1c": "T1c",
        "t2": "T2",
        "flair": "FLAIR",
        "dwi": "DWI",
        "adc": "ADC",
    },
    "ixi": {"t1": "T1", "t2": "T2", "pd": "PD", "mra": "MRA"},
    "isles2022": {"dwi": "dwi", "adc": "adc", "flair": "FLAIR"},
    "decathlon": {"flair": "FLAIR", "t1": "T1w", "t1c": "t1gd", "t2": "T2w"},
    "mrbrains": {"t1": "T1", "flair": "T2_FLAIR"},
    "upenn_gbm": {"t1": "T1", "t1c": "T1GD", "t2": "T2", "flair": "FLAIR"},
    "vs_seg": {"t1c": "t1_refT1", "t2": "t2_refT2"},
    "adni": {"t1": "MPRAGE"},
    "adhd200": {"t1": "mprage"},
    "abide": {"t1": "mprage"},
}

#: Generic lesion codes (1 core, 2 oedema, 3 enhancing) -> each layout's label values.
LABEL_MAPS: dict[str, dict[int, int]] = {
    "brats2021": {1: 1, 2: 2, 3: 4},
    "brats2018": {1: 1, 2: 2, 3: 4},
    "ucsf_pdgm": {1: 1, 2: 2, 3: 4},
    "brats2023": {1: 1, 2: 2, 3: 3},
    "decathlon": {1: 2, 2: 1, 3: 3},
    "isles2022": {1: 1, 2: 1, 3: 1},
    "upenn_gbm": {1: 1, 2: 2, 3: 4},
    "vs_seg": {1: 1, 2: 1, 3: 1},
}

DECATHLON_CHANNELS: tuple[str, ...] = ("flair", "t1", "t1c", "t2")


def grid_for(profile: str, modality: str, factor: int) -> Grid:
    """The grid a layout profile writes a modality on, shrunk by ``factor``."""
    grids = GRIDS[profile]
    return (grids.get(modality) or grids["*"]).shrink(factor)


def map_labels(codes: np.ndarray, profile: str) -> np.ndarray:
    """Generic lesion codes to a layout's label values (uint8)."""
    out = np.zeros_like(codes, dtype=np.uint8)
    for src, dst in LABEL_MAPS[profile].items():
        out[codes == src] = dst
    return out


def to_dtype(image: np.ndarray, dtype: str) -> np.ndarray:
    """Cast scanner-scaled intensities to the on-disk dtype (rounded and clipped for ints)."""
    if dtype == "int16":
        return np.clip(np.rint(image), 0, 32767).astype(np.int16)
    if dtype == "uint8":
        return image.astype(np.uint8)
    return image.astype(np.float32)


def nifti_bytes(data: np.ndarray, affine: np.ndarray, compress: bool = True) -> bytes:
    """A NIfTI-1 file as bytes (gzip-compressed unless ``compress`` is False), identical for
    identical inputs."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw


def atomic_write(path: Path, payload: bytes, tmp_dir: Path) -> None:
    """Write bytes to ``tmp_dir`` and rename them to ``path`` (same file system)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, tmp_dir: Path) -> None:
    """Write one NIfTI file atomically and deterministically (``.nii``: uncompressed)."""
    atomic_write(path, nifti_bytes(data, affine, compress=path.name.endswith(".gz")), tmp_dir)


def write_json(path: Path, obj: Any, tmp_dir: Path) -> None:
    """Write a JSON file atomically (sorted keys, 2-space indent)."""
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), tmp_dir)


def write_participants(root: Path, rows: list[dict[str, Any]], tmp_dir: Path) -> None:
    """A BIDS ``participants.tsv`` (``participant_id`` first, ``n/a`` for missing values)."""
    cols = ["participant_id"]
    for row in rows:
        cols += [k for k in row if k not in cols]
    lines = ["\t".join(cols)]
    for row in sorted(rows, key=lambda r: str(r["participant_id"])):
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("n/a" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)))
        lines.append("\t".join(cells))
    atomic_write(root / "participants.tsv", ("\n".join(lines) + "\n").encode(), tmp_dir)


UPENN_CLINICAL = "UPENN-GBM_clinical_info_v2.1.csv"
"""The clinical side table of UPENN-GBM (one row per scan ``ID``, e.g. ``UPENN-GBM-00001_11``)."""


def write_upenn_clinical(root: Path, rows: list[dict[str, Any]], tmp_dir: Path) -> None:
    """UPENN-GBM's clinical CSV with the columns the cohort knows: ``ID``, ``Gender``,
    ``Age_at_scan_years`` (the real table has survival, IDH1, MGMT, KPS and more)."""
    lines = ["ID,Gender,Age_at_scan_years"]
    for row in sorted(rows, key=lambda r: str(r["participant_id"])):
        lines.append(f"{row['participant_id']},{row.get('sex', '')},{row.get('age', '')}")
    atomic_write(root / UPENN_CLINICAL, ("\n".join(lines) + "\n").encode(), tmp_dir)


def study_paths(
    layout: str,
    profile: str,
    sid: str,
    modalities: tuple[str, ...],
    attrs: dict[str, Any],
    pattern: str | None = None,
    label_pattern: str | None = None,
) -> tuple[dict[str, str], str | None]:
    """Relative paths (from the source root) of a study's images and label.

    Returns:
        ``({modality: path}, label_path or None)``; for ``decathlon`` every modality maps to
        the one 4-D file.
    """
    names = NAMES[profile]
    if layout in ("brats2021", "brats2018"):
        folder = f"{attrs['grade']}/{sid}" if layout == "brats2018" else sid
        return (
            {m: f"{folder}/{sid}_{names[m]}.nii.gz" for m in modalities},
            f"{folder}/{sid}_seg.nii.gz",
        )
    if layout == "brats2023":
        return {m: f"{sid}/{sid}-{names[m]}.nii.gz" for m in modalities}, f"{sid}/{sid}-seg.nii.gz"
    if layout == "ucsf_pdgm":
        folder = f"{sid}_nifti"
        return (
            {m: f"{folder}/{sid}_{names[m]}.nii.gz" for m in modalities},
            f"{folder}/{sid}_tumor_segmentation.nii.gz",
        )
    if layout == "ixi":
        return {m: f"IXI-{names[m]}/{sid}-{names[m]}.nii.gz" for m in modalities}, None
    if layout == "isles2022":
        base = f"{sid}/ses-0001"
        stem = f"{sid}_ses-0001"
        kinds = {"dwi": "dwi", "adc": "dwi", "flair": "anat"}
        return (
            {m: f"{base}/{kinds[m]}/{stem}_{names[m]}.nii.gz" for m in modalities},
            f"derivatives/{sid}/ses-0001/{stem}_msk.nii.gz",
        )
    if layout == "decathlon":
        return dict.fromkeys(modalities, f"imagesTr/{sid}.nii.gz"), f"labelsTr/{sid}.nii.gz"
    if layout == "upenn_gbm":
        return (
            {m: f"images_structural/{sid}/{sid}_{names[m]}.nii.gz" for m in modalities},
            f"automated_segm/{sid}_automated_approx_segm.nii.gz",
        )
    if layout == "vs_seg":
        return (
            {m: f"{sid}/vs_gk_{names[m]}.nii.gz" for m in modalities},
            f"{sid}/vs_gk_seg_refT1.nii.gz",
        )
    if layout in CLS_LAYOUTS:
        return {m: cls_study_path(layout, sid, attrs) for m in modalities}, None
    if layout == "pattern":
        assert pattern is not None
        paths = {m: pattern.format(subject=sid, modality=names[m]) for m in modalities}
        return paths, (label_pattern.format(subject=sid) if label_pattern else None)
    raise ValueError(f"unknown layout {layout!r}")


# ------------------------------------------------------- multi-site T1 classification sets

CLS_LAYOUTS = ("adhd200", "abide", "adni")

#: The ADHD-200 phenotypic CSV columns (competition release), in file order.
ADHD200_COLUMNS = (
    "ScanDir ID", "Site", "Gender", "Age", "Handedness", "DX", "Secondary Dx ",
    "ADHD Measure", "ADHD Index", "Inattentive", "Hyper/Impulsive", "IQ Measure", "Verbal IQ",
    "Performance IQ", "Full2 IQ", "Full4 IQ", "Med Status", "QC_Rest_1", "QC_Rest_2",
    "QC_Rest_3", "QC_Rest_4", "QC_Anatomical_1", "QC_Anatomical_2",
)  # fmt: skip
#: The leading columns of ABIDE I's ``Phenotypic_V1_0b.csv`` that the reader uses.
ABIDE_COLUMNS = ("SITE_ID", "SUB_ID", "DX_GROUP", "DSM_IV_TR", "AGE_AT_SCAN", "SEX")
#: The columns of an ADNI (LONI IDA) image collection CSV.
ADNI_COLUMNS = (
    "Image Data ID", "Subject", "Group", "Sex", "Age", "Visit", "Modality", "Description",
    "Type", "Acq Date", "Format", "Downloaded",
)  # fmt: skip


def cls_study_path(layout: str, sid: str, attrs: dict[str, Any]) -> str:
    """Relative path of the T1 image of a classification study (see the module table).

    ``attrs`` holds what the path needs: ``site_folder`` and ``scan_id`` (ADHD-200, ABIDE),
    ``image_id`` and ``acq_time`` (ADNI, whose ``sid`` is the PTID).
    """
    if layout in ("adhd200", "abide"):
        return f"{attrs['site_folder']}/{attrs['scan_id']}/session_1/anat_1/mprage.nii.gz"
    stamp = str(attrs["acq_time"])  # "2006-04-18_08_20_30"
    raw = stamp.replace("-", "").replace("_", "") + "123"
    image = attrs["image_id"]
    return (
        f"ADNI/{sid}/MPRAGE/{stamp}.0/I{image}/"
        f"ADNI_{sid}_MR_MPRAGE_br_raw_{raw}_1_S{image - 300}_I{image}.nii"
    )


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]], tmp: Path) -> None:
    """A comma-separated table with a header (empty cells for missing values)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    atomic_write(path, buf.getvalue().encode(), tmp)


def sidecar(modality: str, field_t: float = 3.0) -> dict[str, Any]:
    """A BIDS JSON sidecar for an ISLES-like image (seconds, as BIDS wants)."""
    from mmlib.data.phantom.tissues import SEQUENCES, flair_ti

    seq = SEQUENCES[modality]
    meta: dict[str, Any] = {
        "Manufacturer": "mmlib simulated",
        "MagneticFieldStrength": field_t,
        "RepetitionTime": seq.tr / 1000.0,
        "EchoTime": seq.te / 1000.0,
        "Modality": "MR",
        "GeneratedBy": "mmlib.data.phantom",
    }
    if seq.kind == "ir":
        meta["InversionTime"] = round(flair_ti(seq.tr) / 1000.0, 4)
    if seq.kind in ("dwi", "adc"):
        meta["DiffusionBValue"] = seq.b
    return meta
