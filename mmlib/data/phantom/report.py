"""Tables and summaries of the embedded cohort for the book (notebook 01) and for QC.

Nothing here plots: these functions return numbers, data frames and text that a notebook
shows or plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.spatialimages import SpatialImage

from mmlib.data.phantom.subject import Rendered
from mmlib.data.phantom.tissues import COMPARTMENTS, SEQUENCES, TISSUES, Tissue, signal_table

#: Compartments shown in per-tissue tables, in display order.
SHOWN = (
    "csf",
    "gm",
    "wm",
    "oedema",
    "enhancing",
    "necrosis",
    "nonenhancing",
    "meningioma",
    "stroke",
    "vessel",
    "scalp",
)


def signal_frame(
    tissues: dict[str, Tissue] | None = None, modalities: tuple[str, ...] = tuple(SEQUENCES)
) -> pd.DataFrame:
    """Noise-free signal of each compartment per modality, relative to white matter.

    Returns:
        A frame indexed by compartment (:data:`SHOWN`) with one column per modality (the ADC
        column holds the ADC itself in 1e-3 mm²/s).
    """
    tissues = tissues or TISSUES
    cols = {}
    wm = COMPARTMENTS.index("wm")
    for m in modalities:
        if SEQUENCES[m].kind == "adc":
            cols[m] = [tissues[c].adc for c in SHOWN]
            continue
        s, _ = signal_table(tissues, m)
        cols[m] = [float(s[COMPARTMENTS.index(c)] / s[wm]) for c in SHOWN]
    return pd.DataFrame(cols, index=list(SHOWN)).round(3)


def tissue_samples(
    r: Rendered, modality: str, threshold: float = 0.8, names: tuple[str, ...] = SHOWN
) -> dict[str, np.ndarray]:
    """Intensities of a rendered modality in (nearly) pure voxels of each compartment."""
    img = r.images[modality]
    out = {}
    for name in names:
        mask = r.fraction(name) >= (threshold if name not in ("vessel",) else 0.5)
        if mask.sum() >= 5:
            out[name] = img[mask]
    return out


def contrast_summary(r: Rendered) -> dict[str, float]:
    """The contrasts the cohort promises, as ratios of medians in pure voxels.

    Keys (when the modality and compartment are present): ``t1_wm_gm``, ``t1_gm_csf``,
    ``t2_csf_gm``, ``t2_gm_wm``, ``flair_csf_wm``, ``flair_oedema_wm``, ``t1c_enh_wm``,
    ``t1_enh_wm``, ``dwi_stroke_normal``, ``adc_stroke_normal``, ``mra_vessel_tissue``.
    """
    med: dict[tuple[str, str], float] = {}
    for m in r.images:
        for name, v in tissue_samples(r, m).items():
            med[(m, name)] = float(np.median(v))

    def ratio(key: str, m: str, a: str, b: str) -> None:
        if (m, a) in med and (m, b) in med and med[(m, b)] > 0:
            out[key] = round(med[(m, a)] / med[(m, b)], 3)

    out: dict[str, float] = {}
    ratio("t1_wm_gm", "t1", "wm", "gm")
    ratio("t1_gm_csf", "t1", "gm", "csf")
    ratio("t2_csf_gm", "t2", "csf", "gm")
    ratio("t2_gm_wm", "t2", "gm", "wm")
    ratio("flair_csf_wm", "flair", "csf", "wm")
    ratio("flair_oedema_wm", "flair", "oedema", "wm")
    ratio("t1c_enh_wm", "t1c", "enhancing", "wm")
    ratio("t1_enh_wm", "t1", "enhancing", "wm")
    ratio("dwi_stroke_normal", "dwi", "stroke", "wm")
    ratio("adc_stroke_normal", "adc", "stroke", "wm")
    ratio("mra_vessel_tissue", "mra", "vessel", "wm")
    return out


def read_cohort_json(root: Path) -> dict[str, Any]:
    """The cohort root's ``cohort.json``."""
    return json.loads((Path(root) / "cohort.json").read_text())


def source_table(root: Path) -> pd.DataFrame:
    """One row per source: layout, role, task, subjects, modalities, and the first image's
    shape, voxel size, orientation and dtype as written on disk."""
    root = Path(root)
    rows = []
    for e in read_cohort_json(root)["sources"]:
        files = sorted(
            p
            for p in (root / e["path"]).rglob("*.nii.gz")
            if "derivatives" not in p.parts
            and "labels" not in p.as_posix().lower()
            and not p.name.endswith(
                ("_seg.nii.gz", "-seg.nii.gz", "_segmentation.nii.gz", "_msk.nii.gz")
            )
        )
        first = cast(SpatialImage, nib.load(files[0])) if files else None
        rows.append(
            {
                "source": e["name"],
                "layout": e["layout"],
                "role": e["role"],
                "task": e["task"],
                "subjects": e["n_subjects"],
                "modalities": ",".join(e["modalities"]),
                "first file": files[0].relative_to(root / e["path"]).as_posix() if files else "",
                "shape": tuple(int(s) for s in first.shape) if first else None,
                "voxel mm": tuple(round(float(v), 2) for v in nib.affines.voxel_sizes(first.affine))
                if first
                else None,
                "orientation": "".join(nib.aff2axcodes(first.affine)) if first else "",
                "dtype": str(first.get_data_dtype()) if first else "",
            }
        )
    return pd.DataFrame(rows).set_index("source")


def layout_tree(root: Path, source: str, max_items: int = 2) -> str:
    """A ``tree``-like listing of one source: the first ``max_items`` entries of each folder."""
    base = Path(root) / source

    def walk(folder: Path, prefix: str) -> list[str]:
        items = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        lines = []
        for i, p in enumerate(items[:max_items] + ([] if len(items) <= max_items else [None])):
            if p is None:
                lines.append(f"{prefix}└── … ({len(items) - max_items} more)")
                break
            last = i == len(items) - 1 or (i == max_items - 1 and len(items) <= max_items)
            branch, slash = ("└── " if last else "├── "), ("/" if p.is_dir() else "")
            lines.append(f"{prefix}{branch}{p.name}{slash}")
            if p.is_dir():
                lines += walk(p, prefix + ("    " if last else "│   "))
        return lines

    return "\n".join([f"{source}/"] + walk(base, ""))


def participants(root: Path, source_path: str) -> pd.DataFrame:
    """A source's ``participants.tsv`` as a frame; for a source without one (ADHD-200, ABIDE,
    ADNI keep their own phenotypic tables) the study attributes its layout reader finds
    (``participant_id`` = study id)."""
    folder = Path(root) / source_path
    if (folder / "participants.tsv").is_file():
        return pd.read_csv(folder / "participants.tsv", sep="\t")
    from mmlib.data.layouts import find_studies

    rows = [{"participant_id": st.study, **st.attrs} for st in find_studies(folder)]
    return pd.DataFrame(rows)


def lesion_slice(label: np.ndarray, axis: int = 2) -> int:
    """Index of the slice (along ``axis``) with the most lesion voxels (middle if none)."""
    area = (label > 0).sum(axis=tuple(a for a in range(3) if a != axis))
    return int(np.argmax(area)) if area.any() else label.shape[axis] // 2


def to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder/flip a (X, Y, Z[, C]) array's axes so that they run R, A, S (for display)."""
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt("RAS")
    )
    return nib.orientations.apply_orientation(array, ornt)


def axial(volume_ras: np.ndarray, z: int | None = None) -> np.ndarray:
    """An axial slice of a RAS volume, oriented for ``imshow`` (anterior up, neurological
    convention: the patient's left on the left)."""
    z = volume_ras.shape[2] // 2 if z is None else z
    return np.rot90(volume_ras[:, :, z])


def study_files(root: Path, src: Any, index: int) -> tuple[dict[str, Path], Path | None]:
    """Absolute paths of study ``index`` (1-based) of a source spec: ``({modality: path},
    label)``; BraTS 2018's grade folder is found on disk."""
    from mmlib.data.phantom import writers as W
    from mmlib.data.phantom.cohort import study_id

    base = Path(root) / src.folder
    sid = study_id(src, index)
    attrs = {}
    if src.layout == "brats2018":
        attrs["grade"] = "HGG" if (base / "HGG" / sid).is_dir() else "LGG"
    if src.layout == "adni":  # the date folder is random: find it
        return {"t1": next(iter(sorted(base.glob(f"ADNI/{sid}/*/*/*/*.nii"))))}, None
    if src.layout in W.CLS_LAYOUTS:
        from mmlib.data.phantom.cohort import cls_site

        site = cls_site(src, index)
        attrs = {"site_folder": site.folder, "scan_id": f"{site.id_base + index:07d}"}
    paths, label = W.study_paths(
        src.layout, src.writer, sid, src.modalities, attrs, src.pattern, src.label_pattern
    )
    return {m: base / p for m, p in paths.items()}, (base / label if label else None)


def ras_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) along R, A, S after :func:`to_ras` (for ``imshow`` aspect ratios)."""
    ornt = nib.orientations.io_orientation(affine)
    sizes = nib.affines.voxel_sizes(affine)
    out = np.zeros(3)
    for axis, (target, _) in enumerate(ornt):
        out[int(target)] = sizes[axis]
    return out


def load_source_study(
    root: Path, src: Any, index: int, modality: str
) -> tuple[nib.Nifti1Image, np.ndarray | None]:
    """One modality of study ``index`` (1-based) of a source, and its label array (None if none).

    Args:
        root: the cohort folder.
        src: a source spec of :func:`mmlib.data.phantom.cohort_spec`.
        index: the study's 1-based index within the source.
        modality: a canonical modality the source writes.

    Raises:
        KeyError: When the source does not write ``modality``.
    """
    paths, label = study_files(root, src, index)
    if modality not in paths:
        raise KeyError(f"{src.name} study {index} has no {modality}; it has {', '.join(paths)}")
    image = cast(nib.Nifti1Image, nib.load(paths[modality]))  # the simulator writes NIfTI-1
    return image, (np.asarray(cast(SpatialImage, nib.load(label)).dataobj) if label else None)
