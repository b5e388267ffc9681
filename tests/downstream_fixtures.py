"""A tiny real store (written with the store's own writer) for the downstream tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmlib.data.store import init_store, write_study

MODS = ["flair", "t1", "t1c", "t2"]


def tiny_store(
    root: Path, n_seg: int = 6, n_cls: int = 6, shape: tuple[int, int, int] = (24, 24, 20)
) -> Path:
    """A 4 mm store: ``n_seg`` BraTS-2023-labelled studies (task brats_ped) and ``n_cls``
    studies with a grade (task hgg_lgg); splits: the last two of each are test."""
    init_store(root, 4.0)
    rng = np.random.default_rng(0)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-48.0, -48.0, -40.0]
    zz = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    for i in range(n_seg + n_cls):
        seg = i < n_seg
        c = rng.integers(6, 14, 3)
        r = np.sqrt(((zz - c) ** 2).sum(-1))
        label = np.zeros(shape, np.uint8)
        label[r < 5] = 2
        label[r < 3] = 3
        label[r < 1.5] = 1
        images = {}
        for j, m in enumerate(MODS):
            base = 0.3 + 0.05 * j + 0.02 * rng.standard_normal(shape)
            images[m] = np.clip(base + (0.5 if m in ("flair", "t2") else 0.2) * (label > 0), 0, 1)
        grade = "HGG" if i % 2 else "LGG"
        k = i if seg else i - n_seg
        n = n_seg if seg else n_cls
        row = {
            "study": f"{'ped' if seg else 'g'}{i:02d}",
            "source": "tiny",
            "modalities": MODS,
            "shape": list(shape),
            "spacing": [4.0] * 3,
            "affine": affine.tolist(),
            "center_world": [0.0, 0.0, 0.0],
            "label": seg,
            "attrs": {"grade": grade},
            "split": "test" if k >= n - 2 else "train",
            "task": "brats_ped" if seg else "hgg_lgg",
        }
        write_study(root, row, images, label if seg else None)
    return root


def smoke_checkpoint(folder: Path, seed: int, step: int) -> Path:
    """A pre-training checkpoint in the engine's convention (``backbone.*`` of the smoke U-Net
    and random non-zero ``templates.volumes`` on a 30³ grid at 4 mm), written to
    ``folder/step_<step>``."""
    import torch

    from mmlib.models import BACKBONE_PRESETS, build_backbone
    from mmlib.models.checkpoints import save_checkpoint

    torch.manual_seed(seed)
    bb = build_backbone("unet", **BACKBONE_PRESETS["smoke"]["unet"])
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -58.0
    state = {f"backbone.{k}": v for k, v in bb.state_dict().items()}
    state["templates.volumes"] = torch.rand(8, 30, 30, 30)
    meta = {
        "model": {"name": "unet", "size": bb.size},
        "modalities": ["flair", "t1", "t1c", "t2", "mra", "pd", "dwi", "adc"],
        "template_affine": affine.tolist(),
        "step": step,
        "config": {},
    }
    return save_checkpoint(folder / f"step_{step:07d}", state, meta)
