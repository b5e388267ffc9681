"""Registration at curation: the template space, the manifest's transform, the measured error,
and the errors a user gets for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_layouts import make_brats2021

from mmlib.cli import main
from mmlib.data.alignment import point_errors, truth_points
from mmlib.data.curate import curate, curate_study
from mmlib.data.layouts import ScanRef, Study, discover
from mmlib.data.phantom import PRESETS
from mmlib.data.phantom.anatomy import load_anatomy
from mmlib.data.phantom.cohort import make_subject
from mmlib.data.phantom.subject import random_pose, render
from mmlib.data.register import (
    RegistrationError,
    icbm_template,
    register_images,
    template_center,
)
from mmlib.data.store import Store


def _phantom_head(tmp_path: Path, pose: np.ndarray) -> tuple[Study, object]:
    """A 4 mm IXI-like T1 (skull and scalp, not stripped) of a phantom subject in a known pose;
    returns the study and the subject (the truth)."""
    src = next(s for s in PRESETS["smoke"].sources if s.name == "ixi")
    anatomy = load_anatomy(4)
    subject, rng = make_subject(src, 1, 0, anatomy)
    subject.pose = pose
    shape = (52, 60, 50)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -np.asarray(shape) * 2.0 + np.array([0.0, -18.0, 0.0])
    r = render(subject, anatomy, affine, shape, ("t1",), rng)
    path = tmp_path / "sub-1_T1w.nii.gz"
    nib.save(nib.Nifti1Image((r.images["t1"] * 1000).astype(np.float32), affine), str(path))
    study = Study("sub-1", "phantom", "pattern", {"t1": ScanRef(str(path))})
    return study, subject


@pytest.mark.slow  # ~25 s: the 4 mm anatomy is built once per process
def test_registration_reduces_the_error_of_a_known_pose(tmp_path):
    """A head rotated by 9° and shifted by 14 mm: translation-only placement leaves it
    misaligned; rigid and affine registration to the template bring the brain within a few mm
    of where the simulator put it."""
    pose = random_pose(np.random.default_rng(7), 0.0, 0.0, 1.0)
    a = np.radians(9.0)
    pose[:3, :3] = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    pose[:3, 3] = [6.0, -14.0, 9.0]
    study, subject = _phantom_head(tmp_path, pose)
    x, w = truth_points(subject, 4)  # type: ignore[arg-type]
    err = {}
    for mode in ("none", "rigid", "affine"):
        cur = curate_study(study, spacing=4.0, register=mode)
        assert cur.row["register"] == mode
        err[mode] = float(point_errors(cur.row, x, w).mean())
    assert err["none"] > 6.0, err  # the rotation about the head centre moves the cortex
    assert err["rigid"] < err["none"] / 2 and err["rigid"] < 4.0, err
    assert err["affine"] < err["none"] / 2 and err["affine"] < 4.0, err


def test_manifest_carries_the_transform(tmp_path):
    """A registered store records its mode in store.json and, per study, the transform from
    the native world to the template; its arrays lie on an axis-aligned grid of that space and
    its template origin is the template's brain centre for every study."""
    src = make_brats2021(tmp_path / "BraTS2021", n=2)
    report = curate(
        discover(src),
        tmp_path / "store",
        spacing=4.0,
        register="rigid",
        progress=False,
        qc_report=False,
    )
    assert not report.failed, report.failed
    store = Store(tmp_path / "store")
    assert store.register == "rigid"
    assert json.loads((tmp_path / "store" / "store.json").read_text())["register"] == "rigid"
    for sid in store.studies():
        row = store.row(sid)
        t = store.transform(sid)
        assert row["register"] == "rigid" and t.shape == (4, 4)
        assert not np.allclose(t, np.eye(4))
        rot = t[:3, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-4)  # rigid: a rotation
        np.testing.assert_allclose(row["center_world"], template_center(), atol=1e-3)
        aff = store.affine(sid)
        np.testing.assert_allclose(aff[:3, :3], np.diag([4.0, 4.0, 4.0]))
    # the same folder refuses another registration mode
    with pytest.raises(ValueError, match="--register rigid, not affine"):
        curate([], tmp_path / "store", spacing=4.0, register="affine", progress=False)
    # an unregistered curation records the identity
    (st, *_) = discover(src)
    cur = curate_study(st, spacing=4.0)
    assert cur.row["register"] == "none"
    np.testing.assert_array_equal(cur.row["transform"], np.eye(4))


def test_icbm_template_is_offline_and_at_the_spacing():
    data, affine = icbm_template(4.0)
    np.testing.assert_allclose(np.diag(affine)[:3], 4.0)
    assert data.shape == (50, 59, 48) and data.max() > 0.5
    centre = template_center()
    assert np.all(np.abs(centre) < 30)  # the MNI brain centre is near the origin


def test_bad_input_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="choose one of none, rigid, affine"):
        curate([], tmp_path / "s", register="elastic", progress=False)
    with pytest.raises(ValueError, match="choose one of none, rigid, affine"):
        curate_study(Study("a", "x", "y"), register="elastic")
    src = make_brats2021(tmp_path / "BraTS2021", n=1)
    with pytest.raises(SystemExit) as exit_:
        main(["curate", str(src), "--out", str(tmp_path / "s2"), "--register", "elastic"])
    assert exit_.value.code == 2 and "invalid choice: 'elastic'" in capsys.readouterr().err
    vol = np.zeros((8, 8, 8), np.float32)
    oblique = np.eye(4)
    oblique[:3, :3] = [[0.9, 0.1, 0], [-0.1, 0.9, 0], [0, 0, 1]]
    with pytest.raises(RegistrationError, match="axis-aligned RAS grid"):
        register_images((vol + 1, np.eye(4)), (vol + 1, oblique), "rigid")
    with pytest.raises(RegistrationError, match="empty"):
        register_images((vol + 1, np.eye(4)), (vol, np.eye(4)), "rigid")
    with pytest.raises(ValueError, match="not 'rigid' or 'affine'"):
        register_images((vol + 1, np.eye(4)), (vol + 1, np.eye(4)), "none")


@pytest.mark.slow  # two 4 mm affine registrations and resampling (~15-40 s on a busy machine)
def test_released_templates_are_imported_into_the_registered_frame():
    """A 'released' template whose world is a rotated, scaled, shifted copy of MNI (as SRI24 is
    another atlas frame) lands on the ICBM template once imported with registration, and the
    estimated SRI24 -> MNI affine undoes the known one."""
    import torch

    from mmlib.data.curate import resample, target_grid
    from mmlib.modalities import MODALITIES
    from mmlib.proxy.templates import Templates

    icbm, grid = icbm_template(4.0)
    a = np.radians(6.0)
    known = np.eye(4)  # MNI -> "SRI24" world
    known[:3, :3] = 1.04 * np.array(
        [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    )
    known[:3, 3] = [10.0, 95.0, 40.0]
    shape, src_affine = target_grid(icbm.shape, known @ grid, 4.0)
    t1 = resample(icbm, known @ grid, shape, src_affine, order=1)
    rep = torch.from_numpy(np.stack([t1 * (i + 1) for i in range(len(MODALITIES))]))
    est = Templates.released_to_mni(rep, src_affine)
    brain = np.argwhere(icbm > 0.1) @ grid[:3, :3].T + grid[:3, 3]
    sri = brain @ known[:3, :3].T + known[:3, 3]
    back = sri @ est[:3, :3].T + est[:3, 3]
    assert np.linalg.norm(back - brain, axis=1).mean() < 2.0
    imported = Templates.from_released(
        rep,
        spacing=4.0,
        source_spacing=4.0,
        register="affine",
        source_affine=src_affine,
        to_mni=est,
    )
    vol = imported.volumes[MODALITIES.index("t1")].detach().numpy()
    assert vol.shape == icbm.shape
    np.testing.assert_allclose(imported.affine[:3, 3], grid[:3, 3] - template_center(), atol=1e-4)
    head = icbm > 0.1
    assert np.corrcoef(vol[head], icbm[head])[0, 1] > 0.9
    plain = Templates.from_released(rep, spacing=4.0, source_spacing=4.0)
    assert plain.shape != imported.shape  # without registration: the release's own grid
    with pytest.raises(ValueError, match="source_affine"):
        Templates.from_released(rep, spacing=4.0, source_spacing=4.0, register="affine")


def test_template_on_grid_is_the_icbm_in_template_coordinates():
    """On the grid that from_released(register=...) and registered stores use, the ICBM T1
    comes back voxel for voxel; a grid shifted by 8 mm does not."""
    from mmlib.data.register import template_on_grid

    icbm, grid = icbm_template(4.0)
    frame = grid.copy()
    frame[:3, 3] -= template_center()
    same = template_on_grid(frame, icbm.shape)
    head = icbm > 0.1
    assert np.corrcoef(same[head], icbm[head])[0, 1] > 0.95
    shifted = frame.copy()
    shifted[:3, 3] += [0.0, 8.0, 0.0]
    moved = template_on_grid(shifted, icbm.shape)
    assert np.corrcoef(moved[head], icbm[head])[0, 1] < 0.9


def test_shared_store_is_rebuilt_when_the_registration_changes(tmp_path):
    """The shared store of a scale records its registration; a preset that now registers (or
    stops) rebuilds it instead of reusing a store in another space."""
    from mmlib.data import ensure

    cohort = tmp_path / "work" / "smoke" / "cohort"
    make_brats2021(cohort / "BraTS2021", n=1)
    source = {"name": "b", "path": "BraTS2021", "layout": "brats2021", "role": "pretrain"}
    (cohort / "cohort.json").write_text(json.dumps({"sources": [source]}))
    (cohort / "DONE").write_text("x")
    root = tmp_path / "work" / "smoke" / "store"
    digest = ensure._sha1(cohort / "cohort.json")
    ensure._make_store(root, cohort, digest, 4.0, "smoke", False, "none")
    assert Store(root).register == "none"
    assert ensure._finished(root, 4.0, digest, "none")
    assert not ensure._finished(root, 4.0, digest, "rigid")
    ensure._make_store(root, cohort, digest, 4.0, "smoke", False, "rigid")
    store = Store(root)
    assert store.register == "rigid" and len(store) == 1
    assert store.row(store.studies()[0])["register"] == "rigid"
    assert json.loads((root / "DONE").read_text())["register"] == "rigid"


def test_a_fine_store_is_registered_at_the_finest_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 mm store's study is registered with the template and the study both at
    FINEST_MM (2 mm): at 1 mm the fine level diverged on an ISLES study (11.4 mm against
    1.8 mm; see FINEST_MM), and the block mean keeps every voxel's world position."""
    import mmlib.data.register as R

    seen: dict = {}

    def fake(fixed, moving, mode, *, spacing, seed, fixed_mask):  # type: ignore[no-untyped-def]
        seen.update(fixed=fixed, moving=moving, spacing=spacing, mask=fixed_mask)
        return np.eye(4)

    monkeypatch.setattr(R, "register_images", fake)
    monkeypatch.setattr(
        R, "icbm_template", lambda s: (np.zeros((4, 4, 4)), np.diag([s, s, s, 1.0]))
    )
    monkeypatch.setattr(R, "template_mask", lambda s: np.ones((4, 4, 4), bool))
    vol = np.zeros((9, 8, 8), np.float32)
    vol[4:6, 2:4, 6:8] = 1.0  # one 2x2x2 block of the 2 mm grid
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-10.0, 5.0, 3.0]
    R.register_to_template((vol, aff), "affine", 1.0)
    assert seen["spacing"] == R.FINEST_MM == 2.0
    data, a2 = seen["moving"]
    assert data.shape == (4, 4, 4) and np.allclose(np.diag(a2)[:3], 2.0)

    def centroid(d: np.ndarray, a: np.ndarray) -> np.ndarray:
        idx = np.argwhere(d > 0.5).mean(0)
        return a[:3, :3] @ idx + a[:3, 3]

    assert np.allclose(centroid(data, a2), centroid(vol, aff))
    R.register_to_template((vol, aff), "affine", 4.0)  # coarser stores: as before
    assert seen["spacing"] == 4.0 and seen["moving"][0] is vol


def test_a_diverged_registration_is_an_error_not_a_huge_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registration that diverges (seen on the demo cohort with a rigid stage cut to 8 mm: an
    affine that asked for a 12.7 TiB grid) raises RegistrationError, which curation reports as a
    one-line problem of the study; a sane result passes."""
    import mmlib.data.register as R

    vol = np.zeros((20, 20, 20), np.float32)
    vol[5:15, 5:15, 5:15] = 1.0
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    fixed = (vol, aff)
    monkeypatch.setattr(R, "_run", lambda f, m, initial, *a, **k: initial)
    assert np.allclose(register_images(fixed, fixed, "rigid")[:3, :3], np.eye(3))
    shrunk = np.diag([0.2, 1.0, 1.0, 1.0])
    moved = np.eye(4)
    moved[:3, 3] = [500.0, 0.0, 0.0]  # the head lands 500 mm outside the template
    for bad in (shrunk, moved):
        monkeypatch.setattr(R, "_matrix", lambda t, bad=bad: np.linalg.inv(bad))
        with pytest.raises(RegistrationError, match="diverged"):
            register_images(fixed, fixed, "affine")


@pytest.mark.slow  # ~20 s: two tiny IXI studies curated under every mode, twice
def test_alignment_errors_do_not_depend_on_the_number_of_workers(tmp_path):
    """Registration runs on one thread with a seeded sampler, so measuring the studies in two
    processes gives the same rows, in the same order, as measuring them one after the other."""
    import dataclasses

    from mmlib.data.alignment import alignment_errors
    from mmlib.data.phantom.cohort import make_cohort

    spec = PRESETS["smoke"]
    ixi = next(s for s in spec.sources if s.name == "ixi")
    small = dataclasses.replace(spec, sources=(dataclasses.replace(ixi, n_subjects=2),))
    root = make_cohort(small, tmp_path / "cohort", seed=0)
    one = alignment_errors(root, small, spacings=(4.0,), workers=1)
    two = alignment_errors(root, small, spacings=(4.0,), workers=2)
    assert len(one) == 6 and list(one["mode"]) == ["none", "rigid", "affine"] * 2
    pd.testing.assert_frame_equal(one.drop(columns="seconds"), two.drop(columns="seconds"))
