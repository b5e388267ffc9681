"""BraTS regions under both label conventions, detection, and loud errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmlib.tasks.regions import RegionSpec, brats_regions, detect_convention


def _label(et: int) -> np.ndarray:
    lab = np.zeros((6, 6, 6), dtype=np.int16)
    lab[1:5, 1:5, 1:5] = 2  # oedema
    lab[2:4, 2:4, 2:4] = 1  # necrosis
    lab[2, 2, 2] = et  # enhancing
    lab[3, 3, 3] = et
    return lab


@pytest.mark.parametrize("et,convention", [(4, "brats2021"), (3, "brats2023")])
def test_regions_both_conventions(et: int, convention: str) -> None:
    lab = _label(et)
    for conv in (convention, "auto"):
        r = brats_regions(lab, conv)
        assert r.shape == (3, 6, 6, 6) and r.dtype == bool
        tc, wt, en = r
        assert en.sum() == 2
        assert tc.sum() == 8  # 2x2x2 core incl. the two ET voxels
        assert wt.sum() == 64
        assert (en <= tc).all() and (tc <= wt).all()


def test_regions_same_for_both_conventions() -> None:
    a = brats_regions(_label(4), "brats2021")
    b = brats_regions(_label(3), "brats2023")
    assert np.array_equal(a, b)


def test_torch_batch() -> None:
    lab = torch.from_numpy(np.stack([_label(3), _label(3)]))[:, None]
    r = brats_regions(lab, "brats2023")
    assert r.shape == (2, 3, 6, 6, 6) and r.dtype == torch.bool


def test_detect() -> None:
    assert detect_convention([0, 1, 2, 4]) == "brats2021"
    assert detect_convention([0, 1, 2, 3]) == "brats2023"
    with pytest.raises(ValueError, match="cannot be"):
        detect_convention([0, 1, 2])
    with pytest.raises(ValueError, match="both 3 and 4"):
        detect_convention([0, 3, 4])
    with pytest.raises(ValueError, match="not BraTS"):
        detect_convention([0, 7])


def test_wrong_convention_is_loud() -> None:
    with pytest.raises(ValueError, match="silently empty"):
        brats_regions(_label(3), "brats2021")
    with pytest.raises(ValueError, match="silently empty"):
        brats_regions(_label(4), "brats2023")
    lab = _label(4)
    lab[lab == 4] = 1
    with pytest.raises(ValueError, match="cannot be"):
        brats_regions(lab, "auto")
    # an explicit convention on a volume without ET is fine: ET is legitimately empty
    assert brats_regions(lab, "brats2023")[2].sum() == 0
    with pytest.raises(ValueError, match="unknown BraTS convention"):
        brats_regions(lab, "brats2019")


def test_region_spec_targets_and_predict() -> None:
    spec = RegionSpec(("TC", "WT", "ET"), "brats", "brats2023")
    lab = torch.from_numpy(_label(3))[None, None]
    t = spec.targets(lab)
    assert t.shape == (1, 3, 6, 6, 6)
    # logits that say ET but not TC/WT: prediction must be nested
    logits = -torch.ones(1, 3, 6, 6, 6)
    logits[0, 2, 0, 0, 0] = 1.0
    p = spec.predict(logits)
    assert p[0, 0, 0, 0, 0] == 1 and p[0, 1, 0, 0, 0] == 1
    tissue = RegionSpec(("CSF", "GM", "WM"), "classes")
    assert tissue.out_channels == 4 and not tissue.sigmoid
    lab = torch.randint(0, 4, (2, 1, 4, 4, 4))
    onehot = torch.nn.functional.one_hot(lab[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 10
    assert torch.equal(tissue.predict(onehot), tissue.targets(lab))
    assert tissue.targets(lab).sum(1).max() <= 1
    with pytest.raises(ValueError, match="kind"):
        RegionSpec(("a",), "soft")
