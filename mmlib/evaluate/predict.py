"""Prediction on new studies: a fine-tuned model's answer on each study's own native grid.

:func:`predict` (the ``mmlib predict`` command) reads any source that ``mmlib curate`` reads
(:func:`mmlib.data.layouts.discover`), and for each study:

1. pre-processes it in memory exactly as curation does (:func:`mmlib.data.curate.curate_study`:
   RAS, the model's store spacing, crop to the head, 5th-95th percentile scaling; no store);
2. fills the modalities the model needs but the study lacks (the run's test-time fill,
   :func:`mmlib.proxy.missing.fill_missing`: its learned template or zeros), and says so;
3. runs sliding-window inference (:func:`mmlib.evaluate.inference.predict_volume`);
4. takes the logits back to the study's native grid (shape, affine and orientation of the
   reference image: crop, resampling, RAS reorientation and, for a model trained on a store
   registered to the template (``mmlib curate --register``), the registration (the inverse of
   the row's ``transform``) undone by one trilinear resampling of the logits at the native
   voxel centres), thresholds them there and writes integer labels in
   the dataset's own convention (:func:`mmlib.tasks.labels.regions_to_labels`) to
   ``out/<study>.nii.gz``, atomically (temporary file, then rename).

The reference image is the task's reference modality (:data:`REFERENCE_MODALITY`, e.g. DWI for
ISLES, whose FLAIR lies on another grid), else the first of the task's modalities the study has.
Classification runs write ``out/predictions.csv`` (study, predicted class, one probability
column per class). ``out/predict.json`` records the run, its checkpoint identity, the versions,
and per study the output, the time, and what was filled. A study that cannot be predicted gets a
one-line reason and the others are still written (exit status 3 of the command).

RUN_DIR is a fine-tuning run folder (``mmlib finetune``) or a bundle exported by
:func:`mmlib.evaluate.export.export_bundle` (``configs/mmlib.json`` and ``models/model.ts``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mmlib.data.curate import CurationError, curate_study, resample
from mmlib.data.layouts import Study, discover
from mmlib.data.nifti import reason
from mmlib.evaluate.inference import predict_volume, window_size
from mmlib.proxy.missing import fill_missing
from mmlib.proxy.templates import Templates
from mmlib.runs import write_text_atomic
from mmlib.tasks import TaskSpec
from mmlib.tasks.labels import dataset_convention, regions_to_labels

EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED = 0, 2, 3

REFERENCE_MODALITY: dict[str, str] = {"isles": "dwi"}
"""The modality whose grid a task's outputs are written on, when the study has it (ISLES
lesion masks lie on the DWI grid). Other tasks: the first of their modalities a study has."""

BUNDLE_META = "configs/mmlib.json"
BUNDLE_MODEL = "models/model.ts"
BUNDLE_TEMPLATES = "models/templates.safetensors"


class PredictionError(Exception):
    """A study cannot be predicted; the message is the one-line reason for the report."""


class _Multiple(nn.Module):
    """A TorchScript network with the input multiple that sliding windows must respect."""

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.input_multiple = int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z) -> (B, out, X, Y, Z)``."""
        out: torch.Tensor = self.net(x)
        return out


@dataclass
class Model:
    """A fine-tuned model ready to predict.

    Attributes:
        net: the network in eval mode, on ``device``.
        spec: the resolved task (modalities in channel order, regions or classes).
        templates: the learned templates for template fill, or None.
        fill: the run's test-time fill of absent modalities (``template`` or ``zero``).
        spacing: the isotropic spacing (mm) of the store it was trained on.
        roi: sliding-window size, or ``"full"``.
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        input_size: ``(X, Y, Z)`` a classifier's input is resampled to (classification).
        source: the run folder or bundle it came from.
        identity: what the model is (run, checkpoint identity, weight hash).
        device: where it runs.
        register: the registration of its store to the template (``none``, ``rigid``,
            ``affine``), which prediction repeats and inverts.
    """

    net: nn.Module
    spec: TaskSpec
    templates: Templates | None
    fill: str
    spacing: float
    roi: list[int] | str
    sw_batch_size: int = 4
    overlap: float = 0.25
    input_size: list[int] | None = None
    source: str = ""
    identity: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    register: str = "none"


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def store_spacing(cfg: dict[str, Any]) -> float:
    """The isotropic spacing (mm) of the store a fine-tuning config trains on."""
    root = cfg["data"].get("store")
    if root:
        meta = Path(root) / "store.json"
        if meta.is_file():
            return float(json.loads(meta.read_text())["spacing"])
    from mmlib.data.ensure import STORE_SPACING

    return float(STORE_SPACING[cfg["scale"]])


def store_register(cfg: dict[str, Any]) -> str:
    """The registration mode (``none``, ``rigid``, ``affine``) of the store a fine-tuning
    config trains on (its ``store.json``; else the scale's shared store)."""
    root = cfg["data"].get("store")
    if root:
        meta = Path(root) / "store.json"
        if meta.is_file():
            return str(json.loads(meta.read_text()).get("register", "none"))
    from mmlib.data.ensure import STORE_REGISTER

    return STORE_REGISTER[cfg["scale"]]


def is_bundle(path: str | Path) -> bool:
    """Whether a folder is a bundle exported by ``mmlib export``."""
    return (Path(path) / BUNDLE_META).is_file() and (Path(path) / BUNDLE_MODEL).is_file()


def load_model(run_dir: str | Path, device: str = "auto") -> Model:
    """Load a fine-tuning run folder or an exported bundle for prediction.

    Args:
        run_dir: a trained run folder (``model.safetensors``, ``config.json``, ...) or a bundle.
        device: ``auto`` (CUDA when available) or a torch device. Defaults to "auto".

    Returns:
        The model, on the device, in eval mode.

    Raises:
        FileNotFoundError: When the folder is neither a trained run nor a bundle.
    """
    from mmlib.engine.finetune import resolve_device

    run_dir = Path(run_dir)
    dev = resolve_device(device)
    if is_bundle(run_dir):
        meta = json.loads((run_dir / BUNDLE_META).read_text())
        ts = torch.jit.load(str(run_dir / BUNDLE_MODEL), map_location=dev)
        net: nn.Module = _Multiple(ts, int(meta["input_multiple"])).eval()
        templates = None
        if (run_dir / BUNDLE_TEMPLATES).is_file():
            from safetensors import safe_open
            from safetensors.torch import load_file

            tens = load_file(str(run_dir / BUNDLE_TEMPLATES))
            with safe_open(str(run_dir / BUNDLE_TEMPLATES), "pt") as f:
                info = f.metadata() or {}
            # the rule the templates were trained with (bundles without it: per-crop scaling)
            templates = Templates.from_volumes(
                tens["volumes"], tens["affine"].numpy(), scaling=info.get("scaling", "crop")
            )
        return Model(
            net,
            TaskSpec.from_dict(meta["spec"]),
            templates,
            str(meta["fill"]),
            float(meta["spacing"]),
            meta["roi"],
            int(meta["sw_batch_size"]),
            float(meta["overlap"]),
            meta.get("input_size"),
            str(run_dir.resolve()),
            {
                **meta["identity"],
                "bundle": str(run_dir.resolve()),
                "bundle_weights": file_sha(run_dir / BUNDLE_MODEL),
            },
            dev,
            str(meta.get("register", "none")),
        )
    from mmlib.evaluate.scoring import load_network

    net, spec, templates, cfg = load_network(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    identity = json.loads((run_dir / "identity.json").read_text())
    identity["model_weights"] = file_sha(run_dir / "model.safetensors")
    identity["run"] = str(run_dir.resolve())
    fill = str(results.get("fill", "zero"))
    return Model(
        net.to(dev).eval(),
        spec,
        templates,
        fill,
        store_spacing(cfg),
        window_size(cfg),
        int(cfg["eval"]["sw_batch_size"]),
        float(cfg["eval"]["overlap"]),
        [int(s) for s in cfg["data"]["input_size"]],
        str(run_dir.resolve()),
        identity,
        dev,
        store_register(cfg),
    )


# ----------------------------------------------------------------------------- one study


@dataclass
class Prepared:
    """A study pre-processed in memory for a model, and its native output grid.

    Attributes:
        study: the study id.
        image: ``(C, X, Y, Z)`` float32 on the curated grid, channels in the task's order
            (zeros where absent, filled later).
        present: ``(C,)`` bool.
        affine: the curated grid's voxel-to-world matrix (diagonal, RAS; in template (MNI)
            mm when the model's store is registered).
        center_world: world position of the head's centre (template space origin).
        native_shape: the reference image's shape.
        native_affine: the reference image's affine.
        native_header: the reference image's header (kept for the output's qform/sform).
        reference: the reference modality.
        convention: the dataset's BraTS label convention (None for other tasks).
        notes: what was done that a reader should know (filled, dropped modalities).
        transform: ``(4, 4)`` native world -> the curated grid's world (the registration to
            the template; identity when unregistered).
    """

    study: str
    image: np.ndarray
    present: np.ndarray
    affine: np.ndarray
    center_world: np.ndarray
    native_shape: tuple[int, int, int]
    native_affine: np.ndarray
    native_header: Any
    reference: str
    convention: str | None
    notes: list[str]
    transform: np.ndarray = field(default_factory=lambda: np.eye(4))


def prepare_study(study: Study, model: Model, margin: int = 2) -> Prepared:
    """Pre-process one study for a model, in memory (see the module docstring).

    Raises:
        PredictionError: With a one-line reason when the study cannot be predicted.
    """
    spec = model.spec
    if study.problems:
        raise PredictionError(study.problems[0])
    have = [m for m in spec.modalities if m in study.modalities]
    if not have:
        raise PredictionError(
            f"{study.study}: none of the modalities the model needs "
            f"({', '.join(spec.modalities)}); found "
            f"{', '.join(study.modalities) or 'none'}"
        )
    notes = []
    extra = [m for m in study.modalities if m not in spec.modalities]
    if extra:
        notes.append(f"not used by the model: {', '.join(extra)}")
    missing = [m for m in spec.modalities if m not in study.modalities]
    if missing:
        notes.append(
            f"missing {', '.join(missing)}: filled with {model.fill}"
            + (" template" if model.fill == "template" else "s")
        )
    sub = dataclasses.replace(
        study, modalities={m: study.modalities[m] for m in have}, label=None, problems=[]
    )
    try:
        cur = curate_study(sub, model.spacing, margin, model.register)
    except CurationError as err:
        raise PredictionError(str(err).splitlines()[0]) from None
    reference = REFERENCE_MODALITY.get(spec.name)
    reference = reference if reference in have else have[0]
    ref = study.modalities[reference]
    img: Any = nib.load(ref.path)
    shape = tuple(int(s) for s in img.shape[:3])
    conv = None
    if spec.regions is not None and spec.regions.kind == "brats":
        conv = dataset_convention(study.label_values, spec.regions.convention)
    first = cur.images[have[0]]
    image = np.stack(
        [cur.images[m] if m in cur.images else np.zeros_like(first) for m in spec.modalities]
    ).astype(np.float32)
    present = np.array([m in cur.images for m in spec.modalities])
    return Prepared(
        study.study,
        image,
        present,
        np.asarray(cur.row["affine"], np.float64),
        np.asarray(cur.row["center_world"], np.float64),
        shape,  # type: ignore[arg-type]
        np.asarray(img.affine, np.float64),
        img.header,
        reference,
        conv,
        notes,
        np.asarray(cur.row["transform"], np.float64),
    )


def to_native(
    volume: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    native_affine: np.ndarray,
    order: Literal[0, 1] = 1,
) -> np.ndarray:
    """Take channels on the curated grid back to a native grid (crop, spacing, RAS undone).

    Args:
        volume: ``(K, X, Y, Z)`` on the curated grid.
        affine: the curated grid's voxel-to-world matrix.
        shape: the native ``(X, Y, Z)``.
        native_affine: the native voxel-to-world matrix (any orientation, oblique allowed).
        order: 1 (trilinear, logits) or 0 (nearest, labels). Defaults to 1.

    Returns:
        ``(K, *shape)``, zeros outside the curated field of view.
    """
    return np.stack([resample(v, affine, shape, native_affine, order=order) for v in volume])


def native_labels(logits: np.ndarray, prep: Prepared, spec: TaskSpec) -> np.ndarray:
    """Labels on the native grid from logits ``(out, X, Y, Z)`` on the curated grid.

    The logits are resampled (trilinear, zeros outside the crop: below the sigmoid threshold,
    and background for softmax classes) and thresholded on the native grid, so that an upsampled
    prediction has smooth boundaries; then regions become the dataset's labels.

    Returns:
        uint8 ``prep.native_shape``.
    """
    assert spec.regions is not None
    # curated voxel -> native world: through the inverse of the registration (if any)
    to_native_world = np.linalg.inv(prep.transform) @ prep.affine
    native = to_native(
        logits.astype(np.float32), to_native_world, prep.native_shape, prep.native_affine, order=1
    )
    masks = spec.regions.predict(torch.from_numpy(native)[None])[0].numpy().astype(bool)
    return regions_to_labels(masks, spec.regions, prep.convention)


def write_labels(labels: np.ndarray, prep: Prepared, path: Path) -> Path:
    """Write labels on the reference image's grid (its affine, qform and sform), atomically."""
    img = nib.Nifti1Image(labels.astype(np.uint8), prep.native_affine)
    hdr = prep.native_header
    if isinstance(hdr, nib.Nifti1Header):
        img.set_qform(hdr.get_qform(), int(hdr["qform_code"]) or 1)
        img.set_sform(hdr.get_sform(), int(hdr["sform_code"]) or 1)
        img.header.set_xyzt_units(*hdr.get_xyzt_units())
    img.header.set_data_dtype(np.uint8)
    tmp = path.parent / f".{path.name.removesuffix('.nii.gz')}.{os.getpid()}.tmp.nii.gz"
    nib.save(img, str(tmp))
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _origin(prep: Prepared) -> torch.Tensor:
    return torch.tensor(prep.affine[:3, 3] - prep.center_world, dtype=torch.float32)[None]


def _fill(
    model: Model,
    image: torch.Tensor,
    present: torch.Tensor,
    prep: Prepared,
    spacing: Sequence[float],
) -> torch.Tensor:
    if bool(present.all()):
        return image
    fill = model.fill
    if fill == "template" and model.templates is None:
        prep.notes.append("template fill asked but the model has no templates: zeros")
        fill = "zero"
    return fill_missing(
        image,
        present,
        model.spec.modalities,
        fill,
        model.templates,
        _origin(prep),
        torch.tensor([list(spacing)], dtype=torch.float32),
    )


def predict_prepared(model: Model, prep: Prepared) -> np.ndarray:
    """Segmentation labels on the native grid (uint8), or class probabilities ``(K,)``."""
    image = torch.from_numpy(prep.image)[None].to(model.device)
    present = torch.from_numpy(prep.present)[None]
    spacing = np.abs(np.diag(prep.affine)[:3])
    if model.spec.kind == "classification":
        assert model.input_size is not None
        src = np.asarray(image.shape[2:], dtype=np.float64)
        size = np.asarray(model.input_size, dtype=np.float64)
        image = F.interpolate(
            image, size=tuple(model.input_size), mode="trilinear", align_corners=True
        )
        spacing = spacing * (src - 1) / (size - 1)
        image = _fill(model, image, present, prep, spacing.tolist())
        with torch.no_grad():
            return torch.softmax(model.net(image), dim=1)[0].cpu().numpy()
    image = _fill(model, image, present, prep, spacing.tolist())
    logits = predict_volume(model.net, image, model.roi, model.sw_batch_size, model.overlap)
    return native_labels(logits[0].float().cpu().numpy(), prep, model.spec)


# ------------------------------------------------------------------------------ many


@dataclass
class PredictReport:
    """What one prediction run did.

    Attributes:
        out: the output folder.
        written: study -> output file.
        failed: study (or source) -> one-line reason.
        notes: study -> what was filled or dropped.
        seconds: study -> seconds (pre-processing, inference, writing).
    """

    out: str
    written: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0

    @property
    def status(self) -> int:
        """0 when every study was written, 3 when some failed."""
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def summary(self) -> str:
        """One line: counts, time per study."""
        per = np.mean(list(self.seconds.values())) if self.seconds else 0.0
        return (
            f"predicted {len(self.written)}, failed {len(self.failed)} in "
            f"{self.total_seconds:.1f} s ({per:.2f} s per study) -> {self.out}"
        )


def discover_sources(sources: Sequence[str | Path]) -> tuple[list[Study], dict[str, str]]:
    """Studies of each source, and a one-line reason for each source that yields none."""
    studies: list[Study] = []
    failed: dict[str, str] = {}
    for src in sources:
        try:
            found = discover(src)
        except (OSError, ValueError) as err:
            failed[str(src)] = f"{src}: {str(err).splitlines()[0]}"
            continue
        if not found:
            failed[str(src)] = f"{src}: no study found (a dataset folder, study folder or list)"
        studies += found
    return studies, failed


def _versions() -> dict[str, str]:
    import monai

    import mmlib

    return {
        "mmlib": mmlib.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "nibabel": nib.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _prepared(
    studies: Sequence[Study], model: Model, workers: int
) -> Iterator[tuple[Study, Prepared | str, float]]:
    """Pre-process studies ahead of inference in ``workers`` threads (NumPy, SciPy and zlib
    release the GIL), yielding them in order."""

    def one(st: Study) -> tuple[Study, Prepared | str, float]:
        t0 = time.perf_counter()
        try:
            return st, prepare_study(st, model), time.perf_counter() - t0
        except PredictionError as err:
            return st, str(err), 0.0
        except Exception as err:
            return st, f"{st.study}: {reason(err)}", 0.0

    if workers <= 1:
        for st in studies:
            yield one(st)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, st) for st in studies]
        for fut in futures:
            yield fut.result()


def predict(
    run_dir: str | Path,
    sources: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> PredictReport:
    """Predict every study of ``sources`` with a fine-tuned model (see the module docstring).

    Args:
        run_dir: a trained fine-tuning run folder or an exported bundle.
        sources: anything ``mmlib curate`` reads (dataset folders, study folders, lists).
        out: the output folder (created).
        device: ``auto`` or a torch device. Defaults to "auto".
        workers: threads pre-processing studies ahead of inference. Defaults to 1.
        progress: show a progress bar. Defaults to True.
        log: where to say what was filled or failed (one line each). Defaults to
            ``tqdm.write``.

    Returns:
        The report (also in ``out/predict.json``).

    Raises:
        FileNotFoundError: When ``run_dir`` is not a trained run or a bundle.
        ValueError: When no source yields a study.
    """
    t_start = time.perf_counter()
    say = log or tqdm.write
    model = load_model(run_dir, device)
    studies, failed = discover_sources(sources)
    if not studies:
        raise ValueError("no study found in " + "; ".join(failed.values() or [str(sources)]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp.nii.gz"):  # left by a killed run
        stale.unlink(missing_ok=True)
    report = PredictReport(str(out), failed=dict(failed))
    for msg in failed.values():
        say(f"FAILED {msg}")
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(studies), desc="predict", unit="study", disable=not progress)
    for st, prep, t_prep in _prepared(studies, model, workers):
        if isinstance(prep, str):
            report.failed[st.study] = prep
            say(f"FAILED {prep}")
            bar.update(1)
            continue
        t0 = time.perf_counter()
        try:
            result = predict_prepared(model, prep)
            if model.spec.kind == "classification":
                rows.append(
                    {
                        "study": st.study,
                        "predicted": model.spec.classes[int(np.argmax(result))],
                        **{f"p_{c}": float(result[j]) for j, c in enumerate(model.spec.classes)},
                    }
                )
                report.written[st.study] = "predictions.csv"
            else:
                path = write_labels(result, prep, out / f"{st.study}.nii.gz")
                report.written[st.study] = path.name
        except Exception as err:
            report.failed[st.study] = f"{st.study}: {reason(err)}"
            say(f"FAILED {report.failed[st.study]}")
            continue
        finally:
            bar.update(1)
        report.seconds[st.study] = round(t_prep + time.perf_counter() - t0, 3)
        if prep.notes:
            report.notes[st.study] = list(prep.notes)
            for note in prep.notes:
                say(f"{st.study}: {note}")
    bar.close()
    if rows:
        import pandas as pd

        write_text_atomic(out / "predictions.csv", pd.DataFrame(rows).to_csv(index=False))
    report.total_seconds = round(time.perf_counter() - t_start, 3)
    record = {
        "run": model.source,
        "task": model.spec.to_dict(),
        "identity": model.identity,
        "fill": model.fill,
        "spacing": model.spacing,
        "roi": model.roi,
        "device": str(model.device),
        "sources": [str(s) for s in sources],
        "versions": _versions(),
        "written": report.written,
        "failed": report.failed,
        "notes": report.notes,
        "seconds": report.seconds,
        "total_seconds": report.total_seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_text_atomic(out / "predict.json", json.dumps(record, indent=1, default=str))
    return report
