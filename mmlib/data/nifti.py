"""Why a NIfTI file cannot be read: size checks and one-line reasons for the reports.

A header that claims a volume far larger than its file holds (a truncated download, a header
rewritten by hand) makes nibabel raise ``MemoryError`` with an empty message, or ``OSError``;
:func:`size_problem` says instead what is wrong: the file, the shape and data type the header
claims, and the bytes that shape needs against the bytes the file holds. :func:`reason` turns any
exception into a one-line reason that is never a bare exception name.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

_CHUNK = 1 << 20


def _data_bytes(path: Path, offset: int, need: int) -> int:
    """Bytes of voxel data the file holds after ``offset`` (counted up to ``need``)."""
    if path.name.endswith(".gz"):
        total = 0
        try:
            with gzip.open(path, "rb") as fh:
                while total < offset + need:
                    chunk = fh.read(_CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
        except (OSError, EOFError, zlib.error):
            pass  # a truncated gzip stream: what was decompressed is what the file holds
        return max(0, total - offset)
    return max(0, path.stat().st_size - offset)


def size_problem(path: str | Path) -> str | None:
    """What is wrong with a NIfTI whose header claims more voxel data than the file holds.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        A one-line reason naming the file, the header's shape and data type, and the bytes
        expected against the bytes present, or None when the sizes agree (or the header itself
        cannot be read: then nibabel's own error is the better reason).

    Examples::

        >>> size_problem("BraTS2021_00000_t1.nii.gz")      # doctest: +SKIP
        'BraTS2021_00000_t1.nii.gz: the header claims shape (2000, 2000, 2000) of float32, ...'
    """
    path = Path(path)
    try:
        header: Any = nib.load(str(path)).header
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        offset = int(header.get("vox_offset", 0)) if "vox_offset" in header else 0
    except Exception:
        return None
    need = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    have = _data_bytes(path, offset, need)
    if have >= need:
        return None
    return (
        f"{path}: truncated or corrupt: the header claims shape {shape} of {dtype} "
        f"({need:,} bytes of voxel data) but the file holds {have:,} bytes (download or "
        "export it again)"
    )


def reason(err: BaseException) -> str:
    """The first line of an exception's message, with its type; never a bare type name.

    An exception without a message (``MemoryError()``, ``KeyError()``) is described by what
    its type means, so that a report line says something a person can act on.
    """
    text = str(err).strip()
    first = text.splitlines()[0][:160] if text else ""
    if first:
        return f"{type(err).__name__}: {first}"
    if isinstance(err, MemoryError):
        return "MemoryError: out of memory (a header claiming a huge volume, or too little RAM)"
    return f"{type(err).__name__}: raised without a message (an unforeseen input; please report it)"
