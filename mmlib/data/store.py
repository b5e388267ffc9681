"""The curated store: pre-processed arrays for random crops, and a manifest of studies.

Format (one folder)::

    STORE/
      store.json                 format, version, spacing, dtype
      manifest.json              all finished rows, rewritten atomically after each curation run
      studies/<study>/
        <modality>.npy           float16 (X, Y, Z), C order, RAS, isotropic, cropped, in [0, 1]
        label.npy                uint8 (X, Y, Z) segmentation (only when the study has one)
        meta.json                the manifest row and the study's QC record
      reports/                   curation reports (one per shard) and the QC report

Why uncompressed ``.npy``, read as memory maps (:meth:`Store.image`) or, by the pre-training
sampler, with one ``pread`` per x-plane of the crop's rows (:class:`CropReader`): a random 96³
crop of a ~160×200×170 volume reads only the rows of the crop, so the cost of a sample is
proportional to the crop, not to the study; the OS page cache is shared by every DataLoader
worker and every training process on a node; there is nothing to decompress, and reading needs
no locks, so many nodes can read one store on a shared file system at once. Chunked, compressed
formats (zarr/HDF5) would save disk at the cost of decompressing whole chunks per crop and an
extra dependency. ``float16`` halves the disk and page-cache footprint (about 11 MB per 1 mm
scan, ~180 GB for the paper's 16k scans); values lie in [0, 1] after percentile scaling, where
float16's step is at most 2⁻¹¹ ≈ 5·10⁻⁴, far below MRI noise. The sampler returns float32, or
float16 for a consumer that converts on arrival (the pre-training engine does, on the device).

Writes are atomic: a study is written into ``studies/.tmp-<study>-<host>-<pid>/`` and renamed
to ``studies/<study>/`` when complete (a rename within one folder is atomic on POSIX file
systems), so a crash leaves no half-written study visible, and a rerun skips every study whose
folder exists. Readers list ``studies/`` and ignore dot-folders.

Splits are deterministic per study (a hash of the study id: 80 % train, 10 % val, 10 % test),
recorded in the manifest, and can be overridden by a split file (JSON ``{study: split}`` or
``{"train": [ids], ...}``, or a CSV/TSV with ``study`` and ``split`` columns).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

FORMAT = "mmlib-store"
VERSION = 1
DTYPE = np.float16
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

MANIFEST_COLUMNS = [
    "study",
    "source",
    "modalities",
    "shape",
    "spacing",
    "affine",
    "center_world",
    "label",
    "attrs",
    "split",
    "task",
]


def study_dirname(study: str) -> str:
    """The folder name of a study id (characters outside ``[A-Za-z0-9._-]`` become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", study)
    if not name or name.startswith("."):
        name = "_" + name
    return name


def assign_split(study: str, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> str:
    """The deterministic split of a study id: a SHA-1 of the id mapped to [0, 1).

    Args:
        study: the study id.
        fractions: train, val, test fractions (summing to 1). Defaults to (0.8, 0.1, 0.1).

    Returns:
        ``"train"``, ``"val"`` or ``"test"``; the same id always gets the same split.
    """
    u = int(hashlib.sha1(study.encode()).hexdigest()[:12], 16) / float(1 << 48)
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def read_split_file(path: str | Path) -> dict[str, str]:
    """Read a split file into ``{study: split}``.

    Accepted: JSON ``{study: split}``, JSON ``{"train": [ids], "val": [...], "test": [...]}``
    (also ``training``/``validation``/``testing``, entries may be dicts with ``study``), or a
    CSV/TSV with ``study`` and ``split`` columns.

    Raises:
        ValueError: When the file has none of these shapes or names an unknown split.
    """
    path = Path(path)
    names = {"training": "train", "validation": "val", "testing": "test"}
    out: dict[str, str] = {}
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a split file is a JSON object")
        for key, value in data.items():
            if isinstance(value, list):
                split = names.get(str(key), str(key))  # JSON keys are str already
                for entry in value:
                    sid = entry["study"] if isinstance(entry, dict) else str(entry)
                    out[sid] = split
            else:
                out[key] = names.get(str(value), str(value))
    else:
        df = pd.read_csv(path, sep=None, engine="python")
        if not {"study", "split"} <= set(df.columns):
            raise ValueError(f"{path}: a CSV split file needs 'study' and 'split' columns")
        out = {str(s): names.get(str(v), str(v)) for s, v in zip(df["study"], df["split"])}
    bad = sorted({v for v in out.values() if v not in SPLITS})
    if bad:
        raise ValueError(f"{path}: unknown split name(s) {bad}; use {', '.join(SPLITS)}")
    return out


# ------------------------------------------------------------------------------------ write


def init_store(root: str | Path, spacing: float, register: str = "none") -> Path:
    """Create (or reopen) a store folder for ``spacing`` mm and a registration mode.

    ``store.json`` records ``register`` (``none``, ``rigid`` or ``affine``; a store written
    before registration existed has none recorded and reads as ``none``).

    Raises:
        ValueError: When the folder is a store of another spacing or registration, or a
            non-empty folder that is not a store.
    """
    root = Path(root)
    meta_path = root / "store.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if abs(float(meta["spacing"]) - float(spacing)) > 1e-6:
            raise ValueError(
                f"{root}: existing store has spacing {meta['spacing']} mm, not "
                f"{spacing}; use another --out or the same --spacing"
            )
        if meta.get("register", "none") != register:
            raise ValueError(
                f"{root}: existing store was curated with --register "
                f"{meta.get('register', 'none')}, not {register}; use another --out or the "
                "same --register"
            )
        return root
    if root.exists() and any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise ValueError(f"{root}: folder exists and is not an mmlib store; choose an empty --out")
    (root / "studies").mkdir(parents=True, exist_ok=True)
    _atomic_write_text(
        meta_path,
        json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "spacing": float(spacing),
                "register": register,
                "dtype": np.dtype(DTYPE).name,
            },
            indent=1,
        ),
    )
    return root


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def is_done(root: str | Path, study: str) -> bool:
    """True when ``study`` is completely written in the store at ``root``."""
    return (Path(root) / "studies" / study_dirname(study) / "meta.json").is_file()


def write_study(
    root: str | Path,
    row: Mapping[str, Any],
    images: Mapping[str, np.ndarray],
    label: np.ndarray | None = None,
    qc: Mapping[str, Any] | None = None,
) -> Path:
    """Write one curated study atomically (temporary folder, then rename).

    Args:
        root: the store folder (from :func:`init_store`).
        row: the manifest row (``study`` and the other :data:`MANIFEST_COLUMNS`).
        images: modality -> array (X, Y, Z) in [0, 1]; stored as float16.
        label: segmentation (X, Y, Z), stored as uint8. Defaults to None.
        qc: the study's QC record. Defaults to None.

    Returns:
        The study's folder. When another process finished the same study first, its copy is
        kept and this one discarded.
    """
    studies = Path(root) / "studies"
    final = studies / study_dirname(row["study"])
    tmp = studies / f".tmp-{study_dirname(row['study'])}-{socket.gethostname()}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for mod, arr in images.items():
            np.save(tmp / f"{mod}.npy", np.ascontiguousarray(arr, dtype=DTYPE))
        if label is not None:
            np.save(tmp / "label.npy", np.ascontiguousarray(label, dtype=np.uint8))
        (tmp / "meta.json").write_text(
            json.dumps({"row": dict(row), "qc": dict(qc or {})}, default=_json_default)
        )
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def clean_stale(root: str | Path) -> list[str]:
    """Remove temporary study folders left by crashed writers of *this host* (their process
    is gone); other hosts' folders are left alone. Returns the removed names."""
    studies = Path(root) / "studies"
    host = socket.gethostname()
    removed = []
    for tmp in studies.glob(".tmp-*"):
        head, _, pid = tmp.name.rpartition("-")
        if not head.endswith(f"-{host}") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
        except PermissionError:
            pass
    return removed


def _read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def consolidate(root: str | Path) -> Path:
    """Rewrite ``manifest.json`` from every finished study folder (atomically)."""
    root = Path(root)
    rows = [
        _read_meta(f)["row"]
        for f in sorted((root / "studies").iterdir())
        if not f.name.startswith(".") and (f / "meta.json").is_file()
    ]
    path = root / "manifest.json"
    _atomic_write_text(path, json.dumps(rows, default=_json_default))
    return path


# ------------------------------------------------------------------------------------- read


class Store:
    """Read a curated store (read-only, lock-free, safe in many processes).

    Args:
        root: the store folder.
        split_file: a split file that overrides the manifest's splits (see
            :func:`read_split_file`). Defaults to None.

    Raises:
        FileNotFoundError: When ``root`` is not a store.

    Examples::

        >>> store = Store(ensure_store("smoke"))                       # doctest: +SKIP
        >>> sid = store.studies(split="train")[0]                      # doctest: +SKIP
        >>> store.image(sid, "t1").shape                               # doctest: +SKIP
    """

    def __init__(self, root: str | Path, split_file: str | Path | None = None) -> None:
        self.root = Path(root)
        meta_path = self.root / "store.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{self.root}: not an mmlib store (no store.json); create "
                "one with `mmlib curate --out STORE SOURCE...`"
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.spacing = float(self.meta["spacing"])
        self.register = str(self.meta.get("register", "none"))
        self.split_file = split_file
        self.refresh()

    def refresh(self) -> None:
        """Re-read the manifest (new studies written since opening become visible)."""
        cached: dict[str, dict[str, Any]] = {}
        if (self.root / "manifest.json").is_file():
            for row in json.loads((self.root / "manifest.json").read_text()):
                cached[study_dirname(row["study"])] = row
        rows = []
        for folder in sorted((self.root / "studies").iterdir()):
            if folder.name.startswith(".") or not (folder / "meta.json").is_file():
                continue
            rows.append(cached.get(folder.name) or _read_meta(folder)["row"])
        df = pd.DataFrame(rows, columns=None if rows else MANIFEST_COLUMNS)
        for col in MANIFEST_COLUMNS:
            if col not in df.columns:
                df[col] = None
        if self.split_file is not None and len(df):
            override = read_split_file(self.split_file)
            df["split"] = [override.get(s, sp) for s, sp in zip(df["study"], df["split"])]
        self.manifest: pd.DataFrame = df.set_index("study", drop=False)
        self.manifest.index.name = None
        self._dirs = {s: self.root / "studies" / study_dirname(s) for s in self.manifest["study"]}

    def __len__(self) -> int:
        return len(self.manifest)

    def __contains__(self, study: object) -> bool:
        return study in self._dirs

    def studies(
        self, source: str | None = None, split: str | None = None, task: str | None = None
    ) -> list[str]:
        """Study ids, optionally filtered by source, split and task (sorted)."""
        df = self.manifest
        for col, value in (("source", source), ("split", split), ("task", task)):
            if value is not None:
                df = df[df[col] == value]
        return sorted(df["study"].tolist())

    def _dir(self, study: str) -> Path:
        try:
            return self._dirs[study]
        except KeyError:
            raise KeyError(f"{self.root}: no study {study!r} in the store") from None

    def row(self, study: str) -> dict[str, Any]:
        """The manifest row of a study as a dict."""
        self._dir(study)
        # pandas types the keys as Hashable; the manifest's columns are str
        return cast("dict[str, Any]", self.manifest.loc[study].to_dict())

    def image_path(self, study: str, modality: str) -> Path:
        """The ``.npy`` file of one modality.

        Raises:
            KeyError: When the study or the modality is not in the store.
        """
        path = self._dir(study) / f"{modality}.npy"
        if not path.is_file():
            have = self.row(study)["modalities"]
            raise KeyError(f"{study}: no modality {modality!r} (has {', '.join(have)})")
        return path

    def image(self, study: str, modality: str) -> np.ndarray:
        """One modality as a read-only memory map, (X, Y, Z) float16 in [0, 1].

        Raises:
            KeyError: When the study or the modality is not in the store.
        """
        return np.load(self.image_path(study, modality), mmap_mode="r")

    def label(self, study: str) -> np.ndarray | None:
        """The segmentation (X, Y, Z) uint8 as a memory map, or None when the study has none."""
        path = self._dir(study) / "label.npy"
        return np.load(path, mmap_mode="r") if path.is_file() else None

    def qc(self, study: str) -> dict[str, Any]:
        """The QC record written at curation (per-modality statistics, warnings)."""
        return _read_meta(self._dir(study)).get("qc", {})

    def affine(self, study: str) -> np.ndarray:
        """The 4×4 voxel-to-world (RAS mm) affine of the study's arrays."""
        return np.asarray(self.row(study)["affine"], dtype=np.float64)

    def transform(self, study: str) -> np.ndarray:
        """The 4×4 map from the study's native world (RAS mm) to the store's world: the
        registration to the template (MNI mm), identity for an unregistered study."""
        value = self.row(study).get("transform")
        return np.asarray(value, np.float64) if isinstance(value, list) else np.eye(4)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, studies={len(self)}, spacing={self.spacing})"


class CropReader:
    """Reads crops of C-order ``.npy`` volumes with ``os.pread``, straight into a tensor.

    Per crop and volume: one ``pread`` per x-plane of the crop's rows (``Y_crop`` rows of the
    full ``Z`` extent, contiguous in the file) into a reused scratch buffer, then one
    vectorised ``torch`` copy of the crop's ``Z`` range that also converts float16 to the
    output's dtype. No memory map stays open, so a worker's private memory does not grow
    with the pages it has read (a map would count every page it touched), no file handle is
    kept, and nothing is allocated per crop once the scratch buffer has grown. The kernel
    copies only the crop's rows from the page cache (about ``Z / Z_crop`` times the crop's
    bytes). One reader per process; not thread-safe (one scratch buffer).

    Examples::

        >>> out = torch.zeros(96, 96, 96)                                # doctest: +SKIP
        >>> CropReader().read(store.image_path(sid, "t1"), (10, 20, 30), out)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._headers: dict[Path, tuple[int, tuple[int, ...], np.dtype]] = {}
        self._scratch = np.empty(0, dtype=np.uint8)

    def header(self, path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
        """``(data offset, shape, dtype)`` of a C-order ``.npy`` file (cached per path).

        Raises:
            ValueError: When the file is Fortran-ordered or holds objects.
        """
        hit = self._headers.get(path)
        if hit is not None:
            return hit
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(
                    f"{path}: .npy format {version} is not read by CropReader; "
                    "rewrite the file with np.save"
                )
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
        if fortran or dtype.hasobject:
            raise ValueError(
                f"{path}: CropReader reads C-order numeric .npy files; rewrite it "
                "with np.save(path, np.ascontiguousarray(array))"
            )
        self._headers[path] = hit = (offset, tuple(int(n) for n in shape), dtype)
        return hit

    def read(self, path: Path, start: Any, out: torch.Tensor) -> torch.Tensor:
        """Fill ``out`` (X, Y, Z) with ``volume[start : start + out.shape]``, zero outside.

        The same values as :func:`mmlib.data.sampler.read_crop` (which reads through a memory
        map), converted to ``out.dtype``; ``start`` may be negative or reach past the volume.

        Args:
            path: a 3-D C-order ``.npy`` file.
            start: crop start (3,) in voxels.
            out: ``(X, Y, Z)`` tensor written in place (a view into a batch is fine).

        Returns:
            ``out``.
        """
        import torch

        offset, shape, dtype = self.header(path)
        if len(shape) != 3 or out.dim() != 3:
            raise ValueError(
                f"{path}: CropReader reads 3-D crops, got volume {shape} and "
                f"output {tuple(out.shape)}"
            )
        src, dst = [], []
        for s, c, n in zip(start, out.shape, shape):
            a, b = max(0, int(s)), min(n, int(s) + int(c))
            src.append((a, b))
            dst.append(slice(a - int(s), b - int(s)))
        inside = all(b > a for a, b in src)
        covered = inside and all(d.start == 0 and d.stop == c for d, c in zip(dst, out.shape))
        if not covered:  # the box leaves the volume: zeros around what is read
            out.zero_()
        if not inside:
            return out
        (x0, x1), (y0, y1), (z0, z1) = src
        ny, nz = shape[1], shape[2]
        row = (y1 - y0) * nz * dtype.itemsize
        need = (x1 - x0) * row
        if self._scratch.nbytes < need:
            self._scratch = np.empty(need, dtype=np.uint8)
        buf = self._scratch[:need]
        fd = os.open(path, os.O_RDONLY)
        try:
            for i, x in enumerate(range(x0, x1)):
                pos = offset + ((x * ny + y0) * nz) * dtype.itemsize
                got = os.preadv(fd, [buf[i * row : (i + 1) * row].data], pos)
                if got != row:
                    raise OSError(
                        f"{path}: short read ({got} of {row} bytes at {pos}); the "
                        "file is truncated, curate the study again"
                    )
        finally:
            os.close(fd)
        planes = buf.view(dtype).reshape(x1 - x0, y1 - y0, nz)[:, :, z0:z1]
        out[tuple(dst)].copy_(torch.from_numpy(planes))
        return out
