"""Score a folder of predicted label maps against references, as the challenges do.

:func:`score_folder` matches ``PRED/<study>.nii.gz`` to the reference of the same study id and
reports, per study and region, the volumetric Dice and HD95 (mm) of
:mod:`mmlib.evaluate.segmentation`, the lesion-wise metrics of :mod:`mmlib.evaluate.lesions`
(the official BraTS evaluation on panoptica) and whether the reference region is empty.
References are a folder of ``<study>.nii.gz`` label files, or anything ``mmlib curate`` reads
(the label file of each study found by :func:`mmlib.data.layouts.discover`).

Label schemes (:data:`SCHEMES`) turn a label map into the challenge's regions:

=============  =================  =========================================================
scheme         label values       regions (label values)
=============  =================  =========================================================
``brats2021``  0, 1, 2, 4         et (4), tc (1, 4), wt (1, 2, 4), netc (1), snfh (2)
``brats2023``  0, 1, 2, 3         et (3), tc (1, 3), wt (1, 2, 3), netc (1), snfh (2)
``binary``     0, 1               lesion (1)
``tissue``     0, 1, 2, 3         csf (1), gm (2), wm (3)
=============  =================  =========================================================

Bad input costs only its own study, with a one-line reason: a prediction on another grid than
its reference (shape or affine), label values outside the scheme, a prediction whose id matches
no reference. A reference without a prediction is scored as an empty prediction and listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mmlib.evaluate.lesions import LESION_COLUMNS, lesion_scores
from mmlib.evaluate.segmentation import dice, hd95


@dataclass(frozen=True)
class Scheme:
    """A label convention and the regions scored under it.

    Attributes:
        name: the scheme's name.
        values: the label values it defines (0 is background).
        regions: region name -> the label values it unites, in report order.
    """

    name: str
    values: frozenset[int]
    regions: Mapping[str, tuple[int, ...]]

    def masks(self, label: np.ndarray) -> np.ndarray:
        """Region masks ``(R, X, Y, Z)`` bool of a label map ``(X, Y, Z)``."""
        return np.stack([np.isin(label, v) for v in self.regions.values()])


def _brats(name: str, et: int) -> Scheme:
    return Scheme(
        name,
        frozenset({0, 1, 2, et}),
        {"et": (et,), "tc": (1, et), "wt": (1, 2, et), "netc": (1,), "snfh": (2,)},
    )


SCHEMES: dict[str, Scheme] = {
    "brats2021": _brats("brats2021", 4),
    "brats2023": _brats("brats2023", 3),
    "binary": Scheme("binary", frozenset({0, 1}), {"lesion": (1,)}),
    "tissue": Scheme("tissue", frozenset({0, 1, 2, 3}), {"csf": (1,), "gm": (2,), "wm": (3,)}),
}
"""The label schemes (see the module docstring)."""

COLUMNS = (
    "study",
    "region",
    "dice",
    "hd95",
    *LESION_COLUMNS,
    "reference_empty",
    "prediction_missing",
)
"""The columns of :attr:`FolderScores.table`, in order."""

_NII = re.compile(r"(.+)\.nii(\.gz)?$")


@dataclass
class FolderScores:
    """What :func:`score_folder` found.

    Attributes:
        scheme: the scheme scored under.
        table: one row per study and region (:data:`COLUMNS`).
        failed: study id -> one-line reason, for studies that could not be scored.
        missing: studies with a reference but no prediction (scored as empty predictions).
        notes: other one-line remarks (how the scheme was chosen).
    """

    scheme: str
    table: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        """0 when every study was scored, 3 when some failed."""
        return 3 if self.failed else 0


def nifti_files(folder: Path) -> dict[str, Path]:
    """``{study: path}`` of the ``<study>.nii[.gz]`` files directly inside a folder."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        m = _NII.fullmatch(p.name)
        if m and p.is_file():
            out.setdefault(m.group(1), p)
    return out


def find_references(ref: str | Path) -> dict[str, Path]:
    """``{study: label file}`` of a reference: a folder of ``<study>.nii.gz`` label files, or
    a source ``mmlib curate`` reads (cohort root, dataset folder, JSON list).

    Raises:
        FileNotFoundError: When ``ref`` does not exist.
        ValueError: When no labelled study is found (the message says why).
    """
    from mmlib.data.layouts import discover

    path = Path(ref)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    try:
        studies = discover(path)
    except ValueError as err:
        flat = nifti_files(path) if path.is_dir() else {}
        if flat:
            return flat
        raise ValueError(
            f"{path}: neither a folder of <study>.nii.gz label files nor a "
            f"dataset mmlib curate reads ({err})"
        ) from None
    labelled = {s.study: Path(s.label) for s in studies if s.label}
    if not labelled:
        raise ValueError(f"{path}: {len(studies)} studies found, none with a label file")
    return labelled


def _load(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Integer label map, affine and voxel size (mm) of a NIfTI label file."""
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:
        raise ValueError(
            f"{what} {path.name} cannot be read ({type(err).__name__}: {err})"
        ) from None
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim != 3:
        raise ValueError(f"{what} {path.name} has shape {data.shape}; expected a 3-D label map")
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise ValueError(f"{what} {path.name} holds non-integer values; expected labels")
        data = rounded
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data.astype(np.int64), np.asarray(img.affine, float), (zooms[0], zooms[1], zooms[2])


def _check_values(label: np.ndarray, scheme: Scheme, what: str) -> None:
    extra = sorted(set(np.unique(label).tolist()) - scheme.values)
    if extra:
        raise ValueError(
            f"{what} holds label values {extra} outside the {scheme.name} scheme "
            f"({', '.join(map(str, sorted(scheme.values)))}); pass the right "
            "--scheme or fix the labels"
        )


def _check_grid(
    p_shape: tuple[int, ...],
    p_affine: np.ndarray,
    r_shape: tuple[int, ...],
    r_affine: np.ndarray,
    name: str,
) -> None:
    if p_shape != r_shape:
        why = f"shape {p_shape} vs the reference's {r_shape}"
    elif not np.allclose(p_affine, r_affine, atol=1e-3):
        worst = float(np.abs(p_affine - r_affine).max())
        why = f"affine differs from the reference's by up to {worst:.3g}"
    else:
        return
    raise ValueError(
        f"prediction {name} is on another grid than its reference ({why}); write "
        "predictions on the reference image's grid"
    )


def detect_scheme(values: Iterable[int]) -> tuple[str, str]:
    """The scheme that label values suggest, and a note saying how it was chosen.

    Raises:
        ValueError: When the values fit no scheme (both 3 and 4, or values above 4).
    """
    present = {int(v) for v in values}
    if present <= {0, 1}:
        return "binary", "scheme binary (references hold only 0 and 1)"
    if 4 in present and present <= SCHEMES["brats2021"].values:
        return "brats2021", "scheme brats2021 (references hold label 4: enhancing tumour)"
    if present <= SCHEMES["brats2023"].values:
        return "brats2023", (
            "scheme brats2023 (references hold labels within 0-3; pass "
            "--scheme tissue for CSF/GM/WM labels)"
        )
    raise ValueError(
        f"reference label values {sorted(present)} fit no scheme; pass --scheme "
        f"({', '.join(SCHEMES)})"
    )


def score_pair(
    pred: np.ndarray | None,
    ref: np.ndarray,
    scheme: Scheme,
    spacing: tuple[float, float, float],
    study: str,
) -> list[dict[str, Any]]:
    """The rows of one study: Dice, HD95, lesion-wise metrics per region.

    Args:
        pred: predicted label map ``(X, Y, Z)``, or None (scored as an empty prediction).
        ref: reference label map ``(X, Y, Z)``.
        scheme: the label scheme.
        spacing: voxel size in mm.
        study: the study id.

    Returns:
        One dict per region with the keys of :data:`COLUMNS`.
    """
    r = scheme.masks(ref)
    p = scheme.masks(pred) if pred is not None else np.zeros_like(r)
    pt, rt = torch.from_numpy(p[None]), torch.from_numpy(r[None])
    d = dice(pt, rt)[0]
    h = hd95(pt, rt, spacing)[0]
    rows = []
    for i, name in enumerate(scheme.regions):
        rows.append(
            {
                "study": study,
                "region": name,
                "dice": float(d[i]),
                "hd95": float(h[i]),
                **lesion_scores(p[i], r[i], spacing),
                "reference_empty": int(not r[i].any()),
                "prediction_missing": int(pred is None),
            }
        )
    return rows


def score_folder(
    pred_dir: str | Path, ref: str | Path, scheme: str | None = None, progress: bool = False
) -> FolderScores:
    """Score every prediction in ``pred_dir`` against its reference (see the module docstring).

    Args:
        pred_dir: folder of ``<study>.nii.gz`` predicted label maps.
        ref: folder of ``<study>.nii.gz`` reference label maps, or a source ``mmlib curate``
            reads.
        scheme: one of :data:`SCHEMES`; None tells it from the reference label values.
            Defaults to None.
        progress: show a progress bar. Defaults to False.

    Returns:
        The per-study-and-region table, the failed studies with their reasons, the studies
        without a prediction, and notes.

    Raises:
        FileNotFoundError: When ``pred_dir`` or ``ref`` does not exist.
        ValueError: When the scheme is unknown, no reference is found, or (without a scheme)
            the reference labels fit none.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: no such folder of predictions")
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    refs = find_references(ref)
    preds = nifti_files(pred_dir)
    out = FolderScores(scheme or "", pd.DataFrame(columns=list(COLUMNS)))
    for sid in sorted(set(preds) - set(refs)):
        out.failed[sid] = f"{preds[sid].name}: study id {sid!r} matches no reference in {ref}"
    loaded: dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]] = {}
    if scheme is None:
        seen: set[int] = set()
        for sid, path in refs.items():
            try:
                loaded[sid] = _load(path, "reference")
            except ValueError as err:
                out.failed[sid] = str(err)
                continue
            seen |= set(np.unique(loaded[sid][0]).tolist())
        scheme, note = detect_scheme(seen)
        out.notes.append(note)
        out.scheme = scheme
    sch = SCHEMES[scheme]
    rows: list[dict[str, Any]] = []
    for sid in tqdm(sorted(refs), desc="evaluate", disable=not progress, leave=False):
        if sid in out.failed:
            continue
        try:
            label, affine, spacing = (
                loaded.pop(sid) if sid in loaded else _load(refs[sid], "reference")
            )
            _check_values(label, sch, f"reference {refs[sid].name}")
            pred = None
            if sid in preds:
                pred, p_affine, _ = _load(preds[sid], "prediction")
                _check_grid(pred.shape, p_affine, label.shape, affine, preds[sid].name)
                _check_values(pred, sch, f"prediction {preds[sid].name}")
            else:
                out.missing.append(sid)
            rows += score_pair(pred, label, sch, spacing, sid)
        except ValueError as err:
            out.failed[sid] = str(err)
    if rows:
        out.table = pd.DataFrame(rows, columns=list(COLUMNS))
    return out


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over studies per region (NaN lesion scores skipped, as the official parser).

    Args:
        table: :attr:`FolderScores.table`.

    Returns:
        One row per region: ``region``, ``n``, ``reference_empty`` (count), and ``<metric>``
        as ``"mean ± sd"`` text for dice, hd95, lesion_dice, lesion_f1; ``tp``, ``fp``, ``fn``
        summed.
    """
    out = []
    for region, grp in table.groupby("region", sort=False):
        row: dict[str, Any] = {
            "region": region,
            "n": len(grp),
            "reference_empty": int(grp["reference_empty"].sum()),
        }
        for col in ("dice", "hd95", "lesion_dice", "lesion_f1"):
            v = grp[col].astype(float)
            row[col] = f"{v.mean():.3f} ± {v.std(ddof=0):.3f}" if v.notna().any() else "n/a"
        row.update({c: int(grp[c].sum()) for c in ("tp", "fp", "fn")})
        out.append(row)
    return pd.DataFrame(out)
