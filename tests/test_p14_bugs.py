"""Issue 14 bugs: UniFormer's full-resolution decoder width, oversized NIfTI headers."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mmlib.data.curate import CurationError, curate_study
from mmlib.data.layouts import discover
from mmlib.data.nifti import reason, size_problem
from mmlib.models import BACKBONE_PRESETS, SegmentationNet, adapt_in_channels, build_backbone

torch.set_num_threads(1)


@pytest.mark.parametrize("decoder", ["unetr", "unet"])
def test_uniformer_decodes_full_resolution_at_first_width(decoder: str) -> None:
    """The last decoder stage and the head see the first stage's width, not C input channels."""
    size = dict(BACKBONE_PRESETS["smoke"]["uniformer"])
    bb = adapt_in_channels(build_backbone("uniformer", **size), 4)
    width = int(bb.feature_channels[1])
    net = SegmentationNet(bb, 4, 3, decoder=decoder, seed=0).eval()
    assert net.decoder_channels[0] == width > 4
    assert net.head.conv.conv.in_channels == width
    last_up = net.ups[-1]
    convs = [m for m in last_up.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs[-1].out_channels == width
    # the input is projected by a 3x3x3 convolution to that width
    stem = net.proj[0] if decoder == "unetr" else net.input_stem
    first = next(m for m in stem.modules() if isinstance(m, torch.nn.Conv3d))
    assert first.in_channels == 4 and first.out_channels == width
    assert tuple(first.kernel_size) == (3, 3, 3)
    with torch.no_grad():
        assert net(torch.rand(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_unet_decoder_unchanged() -> None:
    """A backbone with strided first features keeps its decoder widths (no extra stem)."""
    bb = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    net = SegmentationNet(bb, 1, 2, decoder="unet", seed=0)
    assert net.decoder_channels == [int(c) for c in bb.feature_channels]
    assert net.input_stem is None


def _oversized(path: Path, shape: tuple[int, int, int]) -> Path:
    """A valid small NIfTI whose header then claims ``shape``."""
    img = nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4))
    raw = img.to_bytes()
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    hdr.set_data_shape(shape)
    data = hdr.binaryblock + raw[348:]
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["t1.nii.gz", "t1.nii"])
@pytest.mark.parametrize("shape", [(2000, 2000, 2000), (200, 200, 200)])
def test_oversized_header_reason(tmp_path: Path, name: str, shape: tuple[int, int, int]) -> None:
    path = _oversized(tmp_path / name, shape)
    text = size_problem(path)
    assert text is not None and str(path) in text and str(shape) in text
    need = int(np.prod(shape)) * 4
    assert f"{need:,}" in text and "bytes" in text and "truncated" in text


def test_oversized_header_in_curation(tmp_path: Path) -> None:
    """Curating a study with such a file names the file, the shape and the byte counts."""
    from test_layouts import make_brats2021

    root = make_brats2021(tmp_path / "b21", n=1)
    sid = "BraTS2021_00000"
    _oversized(root / sid / f"{sid}_t1.nii.gz", (2000, 2000, 2000))
    (study,) = discover(root)
    with pytest.raises(CurationError) as info:
        curate_study(study, spacing=3.0)
    msg = str(info.value)
    assert "IndexError" not in msg and "(2000, 2000, 2000)" in msg and "bytes" in msg
    assert f"{sid}_t1.nii.gz" in msg


def test_reason_is_never_a_bare_exception_name() -> None:
    for err in (MemoryError(), KeyError(), ValueError(""), RuntimeError("x\ny")):
        text = reason(err)
        assert text.split(":", 1)[1].strip(), text
        assert "\n" not in text
    assert reason(RuntimeError("first\nsecond")) == "RuntimeError: first"
