"""``mmlib export``: a MONAI Bundle that MONAI's own runner uses to segment studies."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from downstream_fixtures import tiny_store
from test_layouts import make_brats2023

from mmlib.cli import main
from mmlib.engine.finetune import finetune
from mmlib.evaluate.export import export_bundle
from mmlib.evaluate.predict import load_model, predict

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tiny_store(tmp_path_factory.mktemp("store"), n_seg=4, n_cls=4)
    over = {
        "data.store": str(store),
        "run.root": str(tmp_path_factory.mktemp("runs")),
        "train.steps": 2,
        "eval.hd95": False,
    }
    return finetune("smoke", over, progress=False)


@pytest.fixture(scope="module")
def bundle(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("b") / "bundle"
    assert main(["export", str(run), "--bundle", str(out)]) == 0
    return out


def _runner(bundle: Path, studies: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """MONAI's bundle runner in a subprocess: ``python -m monai.bundle run`` (its command line
    needs ``fire``); where fire is missing, the same ``monai.bundle.run`` it dispatches to."""
    args = [
        "--config_file",
        str(bundle / "configs" / "inference.json"),
        "--bundle_root",
        str(bundle),
        "--dataset_dir",
        str(studies),
        "--output_dir",
        str(out),
    ]
    if importlib.util.find_spec("fire") is not None:
        cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    else:
        kw = dict(zip([a.lstrip("-") for a in args[::2]], args[1::2]))
        cmd = [sys.executable, "-c", f"from monai.bundle import run; run(**{kw!r})"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_bundle_layout_and_metadata(bundle: Path) -> None:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    infer = json.loads((bundle / "configs" / "inference.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "network_data_format", "task"):
        assert key in meta
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 4
    assert image["channel_def"] == {"0": "flair", "1": "t1", "2": "t1c", "3": "t2"}
    assert meta["label_convention"] == "brats2023" and meta["labels"]["3"] == "enhancing tumour"
    assert {"network", "preprocessing", "inferer", "postprocessing", "run"} <= set(infer)
    ts = torch.jit.load(str(bundle / "models" / "model.ts"))
    roi = image["spatial_shape"]
    assert ts(torch.zeros(1, 4, *roi)).shape == (1, 3, *roi)


def test_monai_runner_segments_studies_on_their_grid(bundle: Path, tmp_path: Path) -> None:
    studies = make_brats2023(tmp_path / "studies", n=2)
    out = tmp_path / "out"
    proc = _runner(bundle, studies, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for sid in ("BraTS-PED-00000-000", "BraTS-PED-00001-000"):
        ref = nib.load(studies / sid / f"{sid}-t1c.nii.gz")
        seg = nib.load(out / f"{sid}_seg.nii.gz")
        assert seg.shape == ref.shape
        np.testing.assert_allclose(seg.affine, ref.affine, atol=1e-4)
        assert seg.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}


def test_predict_with_the_bundle_equals_predict_with_the_run(
    run: Path, bundle: Path, tmp_path: Path
) -> None:
    """The exported TorchScript network, the templates and the settings are the run's."""
    studies = make_brats2023(tmp_path / "studies", n=2)
    a = predict(run, [studies], tmp_path / "a", device="cpu", progress=False)
    b = predict(bundle, [studies], tmp_path / "b", device="cpu", progress=False)
    assert a.status == b.status == 0 and set(a.written) == set(b.written) and a.written
    for name in a.written.values():
        x = np.asarray(nib.load(tmp_path / "a" / name).dataobj)
        y = np.asarray(nib.load(tmp_path / "b" / name).dataobj)
        assert (x == y).mean() > 0.999
    m = load_model(bundle, "cpu")
    assert m.spec.name == "brats_ped" and m.identity["model_weights"]
    assert json.loads((tmp_path / "b" / "predict.json").read_text())["identity"]["bundle"]


def test_export_refuses_classification_and_non_runs(run: Path, tmp_path: Path) -> None:
    cls = finetune(
        "smoke",
        {
            "data.store": json.loads((run / "config.json").read_text())["data"]["store"],
            "run.root": str(tmp_path),
            "task": "hgg_lgg",
            "train.steps": 1,
        },
        progress=False,
    )
    assert main(["export", str(cls), "--bundle", str(tmp_path / "c")]) == 2
    assert main(["export", str(tmp_path / "nothing"), "--bundle", str(tmp_path / "d")]) == 2
    with pytest.raises(ValueError, match="classification"):
        export_bundle(cls, tmp_path / "e")
