"""Modality subsets and missing-channel fill (template vs zeros), through ``Templates.crop``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmlib.modalities import MODALITY_INDEX
from mmlib.proxy.missing import fill_missing, modality_subsets
from mmlib.proxy.templates import Templates, scale_template_crop


def template_crop(volumes, affine, modality, origin, size, spacing, scale=True, scaling="crop"):  # type: ignore[no-untyped-def]
    """The fill's crop: ``Templates.crop`` with trilinear resampling and the given scaling."""
    idx = torch.tensor([m if isinstance(m, int) else MODALITY_INDEX[m] for m in modality])
    t = Templates.from_volumes(volumes, affine, scaling=scaling)
    return t.crop(idx, origin, size, spacing, scale=scale, resample="trilinear")


def test_subsets() -> None:
    s = modality_subsets(["flair", "t1", "t1c", "t2"])
    assert len(s) == 15 and len(set(s)) == 15
    assert s[0] == ("flair", "t1", "t1c", "t2") and all(len(x) == 1 for x in s[-4:])
    assert [len(x) for x in s] == sorted((len(x) for x in s), reverse=True)
    assert modality_subsets(["flair", "dwi", "adc"], min_size=2) == [
        ("flair", "dwi", "adc"),
        ("flair", "dwi"),
        ("flair", "adc"),
        ("dwi", "adc"),
    ]
    with pytest.raises(ValueError, match="repeat"):
        modality_subsets(["t1", "t1"])
    with pytest.raises(ValueError, match="min_size"):
        modality_subsets(["t1"], min_size=2)


def _templates() -> tuple[torch.Tensor, np.ndarray]:
    shape = (20, 22, 24)
    vol = torch.zeros(8, *shape)
    x = torch.arange(shape[0], dtype=torch.float32).view(-1, 1, 1).expand(shape)
    for m in range(8):
        vol[m] = x + 100 * m  # modality m: value = 100 m + x index
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-19.0, -21.0, -23.0]  # centred grid, 2 mm
    return vol, affine


def test_template_crop_locates_anatomy() -> None:
    vol, aff = _templates()
    # crop whose voxel (0,0,0) is template voxel (5, 6, 7); same spacing
    origin = torch.tensor([[-19.0 + 10, -21.0 + 12, -23.0 + 14]])
    c = template_crop(
        vol, aff, ["t2"], origin, (4, 3, 2), torch.tensor([2.0, 2.0, 2.0]), scale=False
    )
    expect = 100 * MODALITY_INDEX["t2"] + 5 + torch.arange(4, dtype=torch.float32)
    assert c.shape == (1, 1, 4, 3, 2)
    assert torch.allclose(c[0, 0, :, 1, 1], expect, atol=1e-4)
    # a 1 mm crop samples half-way between template voxels
    c1 = template_crop(vol, aff, [0], origin, (3, 1, 1), [1.0, 1.0, 1.0], scale=False)
    assert torch.allclose(c1[0, 0, :, 0, 0], torch.tensor([5.0, 5.5, 6.0]), atol=1e-4)
    scaled = template_crop(vol, aff, ["t2"], origin, (4, 3, 2), [2.0, 2.0, 2.0])
    assert float(scaled.detach().min()) == pytest.approx(0, abs=1e-5)
    assert float(scaled.detach().max()) == pytest.approx(1, abs=1e-5)
    # outside the grid: zeros; all-zero template: zeros, not NaN
    far = template_crop(
        torch.zeros(8, 4, 4, 4), aff, ["t1"], origin + 1000, (2, 2, 2), [2.0, 2.0, 2.0]
    )
    assert torch.equal(far, torch.zeros(1, 1, 2, 2, 2))


@pytest.mark.parametrize("scaling", ["global", "crop"])
def test_fill_missing(scaling: str) -> None:
    vol, aff = _templates()
    image = torch.rand(2, 3, 4, 3, 2)
    present = torch.tensor([[True, False, True], [True, True, True]])
    mods = ["flair", "t1c", "t2"]
    zero = fill_missing(image, present, mods, "zero")
    assert torch.equal(zero[0, 1], torch.zeros(4, 3, 2)) and torch.equal(zero[1], image[1])
    assert torch.equal(zero[0, 0], image[0, 0])
    origin = torch.tensor([[-9.0, -9.0, -9.0], [-9.0, -9.0, -9.0]])
    templates = Templates.from_volumes(vol, aff, scaling=scaling)
    tpl = fill_missing(image, present, mods, "template", templates, origin, [2.0, 2.0, 2.0])
    sp = [2.0, 2.0, 2.0]
    expect = template_crop(vol, aff, ["t1c"], origin[:1], (4, 3, 2), sp, scaling=scaling)[0, 0]
    assert torch.allclose(tpl[0, 1], expect)
    # the one scaling function on the raw crop: whole-template range (global) or the crop's
    raw = template_crop(vol, aff, ["t1c"], origin[:1], (4, 3, 2), sp, scale=False)
    idx = torch.tensor([MODALITY_INDEX["t1c"]])
    assert torch.allclose(tpl[0, 1], scale_template_crop(vol, idx, raw, scaling)[0, 0], atol=1e-6)
    if scaling == "global":  # t1c spans 100 m .. 100 m + 19 in the whole template
        want = (raw.detach()[0, 0] - 100 * MODALITY_INDEX["t1c"]) / 19
        assert torch.allclose(tpl[0, 1], want, atol=1e-5) and float(tpl[0, 1].max()) < 0.5
    else:
        assert float(expect.detach().min()) == pytest.approx(0, abs=1e-5)
        assert float(expect.detach().max()) == pytest.approx(1, abs=1e-5)
    assert torch.equal(tpl[0, 0], image[0, 0]) and torch.equal(tpl[1], image[1])
    with pytest.raises(ValueError, match="needs templates"):
        fill_missing(image, present, mods, "template")
    with pytest.raises(ValueError, match="fill should be"):
        fill_missing(image, present, mods, "mean")


def test_fill_and_view_a_share_one_scaling() -> None:
    """The fill and view A scale by the same rule: inside the grid they agree whatever the
    resampling; half outside it, the voxels outside are zero and the range is the inside's (no
    third rule over the whole crop, zeros included)."""
    vol, aff = _templates()
    vol = vol + 1.0  # no template value is 0, so zeros outside the grid are the padding
    for scaling in ("global", "crop"):
        t = Templates.from_volumes(vol, aff, scaling=scaling)
        assert np.allclose(t.affine, aff) and t.scaling == scaling
        origin = torch.tensor([[-19.0 + 10, -21.0 + 12, -23.0 + 14]])
        sp = torch.tensor([[2.0, 2.0, 2.0]])
        idx = torch.tensor([MODALITY_INDEX["t2"]])
        gather = t.crop(idx, origin, (4, 3, 2), sp, scale=False)
        tri = t.crop(idx, origin, (4, 3, 2), sp, scale=False, resample="trilinear")
        assert torch.allclose(gather, tri, atol=1e-4)
        inside = t.crop(idx, origin, (4, 3, 2), sp)
        whole = t.crop(idx, origin, (4, 3, 2), sp, resample="trilinear")
        assert torch.allclose(inside, whole, atol=1e-5)
        edge = origin - torch.tensor([[20.0, 0.0, 0.0]])  # the first 5 voxels lie outside
        b = t.crop(idx, edge, (12, 1, 1), sp, resample="trilinear")[0, 0, :, 0, 0].detach()
        assert torch.equal(b[:5], torch.zeros(5)) and b[6:].min() > 0
        if scaling == "crop":  # the range of the voxels inside: 0 .. 1 there
            assert float(b[5:].detach().min()) == pytest.approx(0.0, abs=1e-5)
            assert float(b.max()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="unknown template scaling"):
        t.crop(idx, origin, (2, 2, 2), sp, scaling="all")
    with pytest.raises(ValueError, match="resample should be"):
        t.crop(idx, origin, (2, 2, 2), sp, resample="nearest")
