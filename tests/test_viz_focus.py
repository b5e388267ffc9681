"""Landing on what matters: a labelled study opens at the slices through its label's centre."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_viz_data import SHAPE, write_study

from mmlib.viz.data import Volume
from mmlib.viz.display import has_display, no_display_reason, xvfb_available
from mmlib.viz.layers import label_focus


def test_focus_is_a_labelled_voxel_at_the_centre() -> None:
    label = np.zeros((20, 30, 40), np.uint8)
    label[12:15, 20:25, 5:8] = 2
    label[13, 22, 6] = 4
    assert label_focus(label) == (13, 22, 6)
    assert label_focus(Volume("seg", label, np.diag([2.0, 2.0, 2.0, 1.0]))) == (13, 22, 6)


def test_focus_on_a_ring_stays_on_the_label() -> None:
    # a ring-enhancing lesion: its centre of mass is in the (unlabelled) necrotic hole
    label = np.zeros((40, 40, 9), np.uint8)
    i, j = np.mgrid[:40, :40]
    r = np.hypot(i - 20, j - 20)
    label[(r >= 6) & (r <= 8), 4] = 3
    focus = label_focus(label)
    assert focus is not None and label[focus] == 3
    assert abs(focus[2] - 4) == 0 and 6 <= np.hypot(focus[0] - 20, focus[1] - 20) <= 8
    for axis in range(3):  # every plane through the focus cuts the label
        assert np.take(label, focus[axis], axis=axis).any()


def test_focus_of_empty_and_bad_maps() -> None:
    assert label_focus(np.zeros((4, 5, 6), np.uint8)) is None
    with pytest.raises(ValueError, match="3-D label map"):
        label_focus(np.ones((4, 5), np.uint8))


CAN_DISPLAY = has_display() or xvfb_available()


@pytest.mark.gui
@pytest.mark.skipif(not CAN_DISPLAY, reason=no_display_reason() or "no display")
@pytest.mark.parametrize("grid", [False, True])
def test_open_study_lands_on_the_label(tmp_path: Path, make_napari_viewer, grid: bool) -> None:
    import nibabel as nib
    from napari.layers import Labels

    from mmlib.viz import napari as mv

    folder = write_study(tmp_path / "BraTS2021_00001")
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:5, 3:6, 13:16] = 2  # a lesion far from the middle: the middle slices miss it
    seg[3, 4, 14] = 4
    nib.save(
        nib.Nifti1Image(seg, np.diag([2.0, 2.0, 2.0, 1.0])), folder / "BraTS2021_00001_seg.nii.gz"
    )
    viewer = make_napari_viewer()
    mv.open_study(folder, viewer, grid=grid)
    labels = [layer for layer in viewer.layers if isinstance(layer, Labels)]
    assert labels and all(layer.visible for layer in labels)
    voxel = np.round(labels[0].world_to_data(viewer.dims.point)).astype(int)
    assert tuple(voxel) == (3, 4, 14)
    data = np.asarray(labels[0].data)
    assert data[:, :, voxel[2]].any()  # the axial slice shown cuts the label
    assert not data[:, :, SHAPE[2] // 2].any()  # (the middle one would not)
