"""Modality subsets and missing-channel fill (template vs zeros), through ``Templates.crop``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmlib.modalities import MODALITY_INDEX
from mmlib.proxy.missing import fill_missing, modality_subsets
from mmlib.proxy.templates import Templates


def template_crop(volumes, affine, modality, origin, size, spacing, scale=True):  # type: ignore[no-untyped-def]
    """The fill's crop: ``Templates.crop`` with trilinear resampling and whole-crop scaling."""
    idx = torch.tensor([m if isinstance(m, int) else MODALITY_INDEX[m] for m in modality])
    t = Templates.from_volumes(volumes, affine)
    return t.crop(idx, origin, size, spacing, scale=scale, resample="trilinear", scale_over="crop")


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
    assert scaled.min() == 0 and scaled.max() == 1
    # outside the grid: zeros; all-zero template: zeros, not NaN
    far = template_crop(
        torch.zeros(8, 4, 4, 4), aff, ["t1"], origin + 1000, (2, 2, 2), [2.0, 2.0, 2.0]
    )
    assert torch.equal(far, torch.zeros(1, 1, 2, 2, 2))


def test_fill_missing() -> None:
    vol, aff = _templates()
    image = torch.rand(2, 3, 4, 3, 2)
    present = torch.tensor([[True, False, True], [True, True, True]])
    mods = ["flair", "t1c", "t2"]
    zero = fill_missing(image, present, mods, "zero")
    assert torch.equal(zero[0, 1], torch.zeros(4, 3, 2)) and torch.equal(zero[1], image[1])
    assert torch.equal(zero[0, 0], image[0, 0])
    origin = torch.tensor([[-9.0, -9.0, -9.0], [-9.0, -9.0, -9.0]])
    tpl = fill_missing(
        image, present, mods, "template", Templates.from_volumes(vol, aff), origin, [2.0, 2.0, 2.0]
    )
    expect = template_crop(vol, aff, ["t1c"], origin[:1], (4, 3, 2), [2.0, 2.0, 2.0])[0, 0]
    assert torch.allclose(tpl[0, 1], expect) and expect.max() == 1
    assert torch.equal(tpl[0, 0], image[0, 0]) and torch.equal(tpl[1], image[1])
    with pytest.raises(ValueError, match="needs templates"):
        fill_missing(image, present, mods, "template")
    with pytest.raises(ValueError, match="fill should be"):
        fill_missing(image, present, mods, "mean")


def test_fill_crop_rules_differ_from_view_a_only_in_scaling() -> None:
    """The fill's whole-crop scaling and view A's inside-grid scaling agree inside the grid
    when the crop lies inside it, and the two resampling modes agree on grid points."""
    vol, aff = _templates()
    t = Templates.from_volumes(vol, aff)
    assert np.allclose(t.affine, aff)
    origin = torch.tensor([[-19.0 + 10, -21.0 + 12, -23.0 + 14]])
    sp = torch.tensor([[2.0, 2.0, 2.0]])
    idx = torch.tensor([MODALITY_INDEX["t2"]])
    gather = t.crop(idx, origin, (4, 3, 2), sp, scale=False)
    tri = t.crop(idx, origin, (4, 3, 2), sp, scale=False, resample="trilinear")
    assert torch.allclose(gather, tri, atol=1e-4)
    inside = t.crop(idx, origin, (4, 3, 2), sp)
    whole = t.crop(idx, origin, (4, 3, 2), sp, resample="trilinear", scale_over="crop")
    assert torch.allclose(inside, whole, atol=1e-5)
    # half outside the grid: view A scales over the voxels inside, the fill over the whole crop
    edge = origin - torch.tensor([[12.0, 0.0, 0.0]])
    a = t.crop(idx, edge, (12, 1, 1), sp, resample="trilinear")
    b = t.crop(idx, edge, (12, 1, 1), sp, resample="trilinear", scale_over="crop")
    assert a[0, 0, 0, 0, 0] == 0 and b.min() == 0 and b.max() == 1
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="scale_over should be"):
        t.crop(idx, origin, (2, 2, 2), sp, scale_over="all")
    with pytest.raises(ValueError, match="resample should be"):
        t.crop(idx, origin, (2, 2, 2), sp, resample="nearest")
