"""Export a fine-tuned segmentation model as a MONAI Bundle that MONAI's own runner executes.

:func:`export_bundle` (the ``mmlib export`` command) writes::

    BUNDLE/
      configs/metadata.json    MONAI bundle metadata: versions, task, network_data_format
      configs/inference.json   a MONAI workflow: load, RAS, spacing, scale, sliding windows,
                               invert to the study's grid, labels, save
      configs/mmlib.json       what ``mmlib predict`` needs to use the bundle (task, spacing,
                               fill, window, checkpoint identity)
      models/model.ts          the network as TorchScript (traced at the window size, saved with
                               MONAI's save_net_with_metadata: the configs ride inside)
      models/templates.safetensors   the learned templates (template fill; mmlib predict only)
      docs/README.md           how to run it

and is run by ``python -m monai.bundle run --config_file BUNDLE/configs/inference.json
--bundle_root BUNDLE --dataset_dir STUDIES --output_dir OUT`` (or with ``--datalist`` a list of
``{"image": [files in channel order]}``). ``STUDIES`` holds one folder per study with one file
per modality, found by the file-name suffixes in ``suffixes`` (BraTS 2023 names by default).

The MONAI workflow uses MONAI transforms only (no mmlib needed to run it), so its pre-processing
approximates curation's: reoriented to RAS and resampled to the store spacing (``Spacingd``,
bilinear), each channel scaled so that its 5th-95th percentiles over the head (voxels above 10 %
of the 99th percentile of positive voxels) map to [0, 1], clipped; curation's head mask also
fills holes and keeps the largest component, and curation crops to the head. It needs every
modality: the missing-modality fill is ``mmlib predict``'s (``mmlib predict BUNDLE ...`` uses the
bundle's network with mmlib's exact pre-processing and fill).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmlib.evaluate.inference import input_multiple, window_size
from mmlib.evaluate.predict import (
    BUNDLE_META,
    BUNDLE_MODEL,
    BUNDLE_TEMPLATES,
    file_sha,
    store_register,
    store_spacing,
)
from mmlib.tasks import CONVENTIONS, TaskSpec

#: File-name suffixes (before ``.nii.gz``) of each modality in BraTS 2023 study folders.
BRATS2023_SUFFIXES: dict[str, str] = {
    "flair": "-t2f",
    "t1": "-t1n",
    "t1c": "-t1c",
    "t2": "-t2w",
    "dwi": "_dwi",
    "adc": "_adc",
}


def _labels_expression(spec: TaskSpec) -> str:
    """A MONAI config expression turning thresholded outputs into the task's integer labels."""
    assert spec.regions is not None
    kind = spec.regions.kind
    if kind == "brats":
        et = CONVENTIONS[spec.regions.convention]
        # nested as mmlib.tasks.labels.regions_to_labels: WT -> 2, TC -> 1, ET -> ET label
        return (
            "$lambda x: torch.where(x[2:3] > 0, " + str(et) + ", torch.where("
            "(x[0:1] + x[2:3]) > 0, 1, torch.where((x[0:1] + x[1:2] + x[2:3]) > 0, 2, 0)))"
            ".to(torch.uint8)"
        )
    if kind == "binary":
        return "$lambda x: (x[0:1] > 0).to(torch.uint8)"
    return "$lambda x: x.to(torch.uint8)"  # classes: argmax already gives 0..n


_SCALE_HEAD = (
    "$lambda x: torch.stack([torch.clamp((c - q[0]) / torch.clamp(q[1] - q[0], min=1e-6), 0, 1)"
    " for c, q in ((c, torch.quantile(h[:: max(1, h.numel() // 4000000)].float(),"
    " torch.tensor([0.05, 0.95]))) for c, h in ((c, c[c > 0.1 * torch.quantile("
    "c[c > 0][:: max(1, int((c > 0).sum()) // 4000000)].float(), 0.99)]) for c in x))])"
)
"""Per channel: 5th-95th percentiles over the head (above 10 % of the positive 99th) to [0, 1]."""


def inference_config(
    spec: TaskSpec, spacing: float, roi: list[int], sw_batch_size: int, overlap: float
) -> dict[str, Any]:
    """The bundle's ``configs/inference.json`` for a segmentation task.

    Args:
        spec: the resolved task (modalities in channel order, regions).
        spacing: isotropic spacing (mm) of the store the model was trained on.
        roi: the sliding-window size the network was traced at.
        sw_batch_size: windows per forward pass.
        overlap: window overlap.

    Returns:
        A MONAI bundle config (JSON-ready).
    """
    assert spec.regions is not None
    post_act: dict[str, Any]
    if spec.regions.sigmoid:
        post_act = {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5}
        activation = {"_target_": "Activationsd", "keys": "pred", "sigmoid": True}
    else:
        post_act = {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}
        activation = {"_target_": "Activationsd", "keys": "pred", "softmax": True}
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "modalities": list(spec.modalities),
        "suffixes": [BRATS2023_SUFFIXES.get(m, "_" + m) for m in spec.modalities],
        "datalist": (
            "$[{'image': [sorted(glob.glob(os.path.join(d, '*' + s + '.nii*')))[0] "
            "for s in @suffixes]} for d in sorted(glob.glob(os.path.join(@dataset_dir,"
            " '*'))) if os.path.isdir(d)]"
        ),
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {
                    "_target_": "Spacingd",
                    "keys": "image",
                    "pixdim": [spacing] * 3,
                    "mode": "bilinear",
                },
                {"_target_": "Lambdad", "keys": "image", "func": _SCALE_HEAD},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(roi),
            "sw_batch_size": sw_batch_size,
            "overlap": overlap,
            "mode": "gaussian",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                activation,
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                post_act,
                {"_target_": "Lambdad", "keys": "pred", "func": _labels_expression(spec)},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$torch.uint8",
                    "resample": False,
                    "separate_folder": False,
                    "print_log": False,
                    "output_name_formatter": (
                        "$lambda meta, saver: {'subject': os.path.basename("
                        "os.path.dirname(str(meta['filename_or_obj']))), "
                        "'idx': None}"
                    ),
                },
            ],
        },
        # a plain loop (no ignite engine needed): windows, then decollate and post-process
        "predict": (
            "$lambda b: monai.data.decollate_batch(dict(b, pred=@inferer("
            "b['image'].to(@device), @network)))"
        ),
        "initialize": [
            "$torch.set_grad_enabled(False)",
            "$monai.utils.set_determinism(seed=0)",
            "$os.makedirs(@output_dir, exist_ok=True)",
        ],
        "run": ["$[[@postprocessing(d) for d in @predict(b)] for b in @dataloader]"],
    }


def _metadata(spec: TaskSpec, roi: list[int], identity: dict[str, Any]) -> dict[str, Any]:
    import monai

    import mmlib

    assert spec.regions is not None
    names = list(spec.regions.names)
    conv = spec.regions.convention if spec.regions.kind == "brats" else None
    labels = (
        {
            "1": "necrotic / non-enhancing core",
            "2": "oedema",
            str(CONVENTIONS[conv]): "enhancing tumour",
        }
        if conv in CONVENTIONS
        else {str(i + 1): n for i, n in enumerate(names)}
    )
    return {
        "schema": (
            "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
            "0.8.1/meta_schema_20220324.json"
        ),
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported by mmlib export"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {
            "nibabel": __import__("nibabel").__version__,
            "mmlib": mmlib.__version__,
        },
        "name": f"mmlib {spec.name} segmentation",
        "task": f"{spec.name}: segmentation of {', '.join(names)}",
        "description": (
            "A network fine-tuned with mmlib (BrainMVP-style multi-modal "
            "pre-training). Inputs: the modalities in channel order, "
            f"{', '.join(spec.modalities)}; all are required by this workflow."
        ),
        "authors": "mmlib",
        "copyright": "see the mmlib licence",
        "label_convention": conv,
        "labels": labels,
        "mmlib_identity": identity,
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": len(spec.modalities),
                    "spatial_shape": list(roi),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(i): m for i, m in enumerate(spec.modalities)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": spec.regions.out_channels,
                    "spatial_shape": list(roi),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": (
                        {str(i): n for i, n in enumerate(names)}
                        if spec.regions.sigmoid
                        else {str(i): n for i, n in enumerate(["background", *names])}
                    ),
                }
            },
        },
    }


def export_bundle(run_dir: str | Path, bundle: str | Path) -> Path:
    """Export a trained segmentation run as a MONAI Bundle (see the module docstring).

    Args:
        run_dir: a trained fine-tuning run folder.
        bundle: the bundle folder to write (replaced when it holds an earlier export).

    Returns:
        The bundle folder.

    Raises:
        FileNotFoundError: When ``run_dir`` is not a trained run.
        ValueError: When the run is a classification run, or ``bundle`` is a non-empty folder
            that is not a bundle.
        RuntimeError: When the TorchScript network disagrees with the network it was traced from.
    """
    from monai.data import save_net_with_metadata
    from safetensors.torch import save_file

    from mmlib.evaluate.scoring import load_network

    run_dir, bundle = Path(run_dir), Path(bundle)
    net, spec, templates, cfg = load_network(run_dir)
    if spec.kind != "segmentation" or spec.regions is None:
        raise ValueError(
            f"{run_dir}: a {spec.kind} run; mmlib export writes segmentation "
            "bundles (use mmlib predict for classification)"
        )
    if bundle.exists() and any(bundle.iterdir()) and not (bundle / BUNDLE_META).is_file():
        raise ValueError(
            f"{bundle}: a non-empty folder that is not an mmlib bundle; choose another --bundle"
        )
    net = net.cpu().eval()
    multiple = input_multiple(net)
    roi_cfg = window_size(cfg)
    if isinstance(roi_cfg, str):  # "full": a traced network runs at one size; use the crop
        crop = cfg["data"]["crop_size"]
        roi_cfg = [int(crop)] * 3 if isinstance(crop, (int, float)) else [int(c) for c in crop]
    roi = [int(np.ceil(r / multiple) * multiple) for r in roi_cfg]
    example = torch.rand(2, len(spec.modalities), *roi, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants
        traced = torch.jit.trace(net, example, check_trace=False)
        check = torch.rand(3, len(spec.modalities), *roi)
        if not torch.allclose(traced(check), net(check), atol=1e-4, rtol=1e-3):
            raise RuntimeError(
                f"{run_dir}: the traced network disagrees with the original; "
                "it cannot be exported as TorchScript"
            )
    tmp = bundle.with_name(f".{bundle.name}.{time.time_ns()}.tmp")
    (tmp / "configs").mkdir(parents=True)
    (tmp / "models").mkdir()
    (tmp / "docs").mkdir()
    results = json.loads((run_dir / "results.json").read_text())
    identity = {
        **json.loads((run_dir / "identity.json").read_text()),
        "run": str(run_dir.resolve()),
        "model_weights": file_sha(run_dir / "model.safetensors"),
    }
    spacing = store_spacing(cfg)
    sw, overlap = int(cfg["eval"]["sw_batch_size"]), float(cfg["eval"]["overlap"])
    infer = inference_config(spec, spacing, roi, sw, overlap)
    meta = _metadata(spec, roi, identity)
    mm = {
        "spec": spec.to_dict(),
        "spacing": spacing,
        # `mmlib predict` on the bundle repeats the store's registration and inverts it (the
        # MONAI workflow of inference.json does not register)
        "register": store_register(cfg),
        "roi": roi,
        "sw_batch_size": sw,
        "overlap": overlap,
        "fill": str(results.get("fill", "zero")),
        "input_multiple": multiple,
        "identity": identity,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (tmp / "configs" / "inference.json").write_text(json.dumps(infer, indent=1))
    (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=1, default=str))
    (tmp / BUNDLE_META).write_text(json.dumps(mm, indent=1, default=str))
    save_net_with_metadata(
        traced,
        str(tmp / "models" / "model"),
        include_config_vals=False,
        meta_values=meta,
        more_extra_files={"inference.json": json.dumps(infer).encode()},
    )
    if templates is not None:
        save_file(
            {
                "volumes": templates.volumes.detach().cpu().contiguous().float(),
                "affine": torch.as_tensor(np.asarray(templates.affine), dtype=torch.float64),
            },
            str(tmp / BUNDLE_TEMPLATES),
            metadata={"scaling": templates.scaling},  # the template scaling of the fill
        )
    (tmp / "docs" / "README.md").write_text(_readme(spec, spacing))
    if bundle.exists():
        shutil.rmtree(bundle)
    tmp.rename(bundle)
    assert (bundle / BUNDLE_MODEL).is_file()
    return bundle


def _readme(spec: TaskSpec, spacing: float) -> str:
    return (
        f"# mmlib {spec.name} segmentation bundle\n\n"
        f"Inputs, in channel order: {', '.join(spec.modalities)}; resampled to {spacing:g} mm."
        "\n\nRun with MONAI's runner (one folder per study under STUDIES):\n\n"
        "    python -m monai.bundle run --config_file configs/inference.json \\\n"
        "        --bundle_root . --dataset_dir STUDIES --output_dir OUT\n\n"
        "or with mmlib's exact pre-processing and missing-modality fill:\n\n"
        "    mmlib predict . STUDIES --out OUT\n"
    )
