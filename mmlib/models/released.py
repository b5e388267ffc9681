"""Load the BrainMVP authors' released checkpoints into mmlib backbones, key by key.

The released checkpoints are ``torch.save``d dicts whose ``state_dict`` entry holds the
pre-training model's parameters (keys possibly prefixed ``module.`` by DDP), including
``rep_template`` ``(8, 240, 240, 155)``: the learned modality templates on the BraTS/SRI24 grid
in the RAS voxel order the authors' loader produces. :func:`released_key_map` is the explicit
released-key -> mmlib-key table; :func:`released_layout` lists every released key and shape in
the released order (checked against ``shared/reference/brainmvp_reference.json`` by the tests);
:func:`load_released` builds the network, loads every used key with ``strict=True`` and reports
every dropped one with its reason. Nothing is silently skipped: an unknown or missing key, or a
shape that does not match, is an error.

The renaming, released -> mmlib (``mmlib weights map --arch ARCH`` prints every key):

=============================================  ===============================================
U-Net                                          mmlib
=============================================  ===============================================
``conv1a``                                     ``encoder.stem``
``conv1b``                                     ``encoder.stem_blocks.0``
``ds{k}`` (k = 1..3)                           ``encoder.levels.{k-1}.down``
``conv{s}{a,b,c,d}`` (s = 2..4)                ``encoder.levels.{s-2}.blocks.{0,1,2,3}``
``up{l}conva`` / ``up{l}convb`` (l = 4..2)     ``decoder.ups.{4-l}.proj`` / ``.blocks.0``
``up1conv``                                    ``decoder.head``
``gn1`` / ``gn2`` inside a block               ``norm1`` / ``norm2``
=============================================  ===============================================

=============================================  ===============================================
UniFormer                                      mmlib
=============================================  ===============================================
``encoder.uniformer.patch_embed{k}``           ``encoder.patch_embeds.{k-1}``
``encoder.uniformer.blocks{k}.{j}``            ``encoder.stages.{k-1}.{j}`` (same inner names)
``encoder.uniformer.norm``                     ``encoder.norm``
``decoder.decoder{n}.transp_conv.conv``        ``decoder.ups.{5-n}`` (n = 5..2)
``decoder.out_1.conv.conv``                    ``decoder.head``
``decoder.decoder{n}.conv_block.*``            dropped: built, never called in pre-training
``decoder.proj1.*``                            dropped: built, never called in pre-training
=============================================  ===============================================

Both: ``rep_template`` -> ``templates.volumes``.

Examples::

    >>> model, templates, report = load_released(  # doctest: +SKIP
    ...     "brainmvp_uniformer.pt", "uniformer"
    ... )
    >>> print(report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmlib.models.base import Backbone
from mmlib.models.registry import build_backbone

RELEASED_ARCHS: tuple[str, ...] = ("unet", "uniformer")
TEMPLATE_KEY = "rep_template"
TEMPLATE_TARGET = "templates.volumes"

BRATS_SRI24_AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
"""The affine stored in BraTS NIfTI files (SRI24 grid, 240×240×155 at 1 mm, LPS voxel order)."""
BRATS_SRI24_SHAPE: tuple[int, int, int] = (240, 240, 155)

# Released keys that mmlib's networks do not have, with the reason they are dropped.
DROPPED_RULES: dict[str, list[tuple[str, str]]] = {
    "unet": [],
    "uniformer": [
        (
            r"^decoder\.decoder[2-5]\.conv_block\.",
            "conv block of a MONAI UnetrUpBlock: built but never called by the released "
            "pre-training decoder, which uses only its transp_conv (no skip connections)",
        ),
        (
            r"^decoder\.proj1\.",
            "skip-path patch embedding of the released decoder: built but never called in "
            "pre-training (no skip connections)",
        ),
    ],
}


def released_template_affine() -> np.ndarray:
    """The true affine of the released templates (RAS voxel order, SRI24 world mm).

    The authors' loader reorients every BraTS/SRI24 image to RAS (MONAI ``Orientationd``)
    before cropping, and ``rep_template`` is indexed with the crop's start in that grid; so the
    templates' voxels are the BraTS grid reoriented to RAS. Computed with nibabel from
    :data:`BRATS_SRI24_AFFINE`.
    """
    import nibabel.orientations as nio

    src = nio.io_orientation(BRATS_SRI24_AFFINE)
    ras = nio.axcodes2ornt(("R", "A", "S"))
    transform = nio.ornt_transform(src, ras)
    return BRATS_SRI24_AFFINE @ nio.inv_ornt_aff(transform, BRATS_SRI24_SHAPE)


def head_centred_affine(shape: tuple[int, ...] | list[int], spacing: float = 1.0) -> np.ndarray:
    """The head-centred template affine mmlib uses for a released template grid.

    mmlib's template space is head-centred (mm, RAS axes, origin at the head's centre); like
    :meth:`mmlib.proxy.templates.Templates.from_released`, the released grid is taken as
    centred on the head: voxel ``i`` sits at ``(i - (n - 1) / 2) * spacing`` mm.
    """
    n = np.asarray(shape[-3:], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([spacing] * 3)
    affine[:3, 3] = -(n - 1) / 2 * spacing
    return affine


# ---------------------------------------------------------------------------------------------
# mmlib key -> released key (the inverse of the map; one function per architecture)


def _unet_block(rest: str) -> str:
    return rest.replace("norm1.", "gn1.").replace("norm2.", "gn2.")


def _unet_to_released(key: str) -> str:
    m = re.fullmatch(r"encoder\.stem\.(\w+)", key)
    if m:
        return f"conv1a.{m[1]}"
    m = re.fullmatch(r"encoder\.stem_blocks\.(\d+)\.(.+)", key)
    if m:
        return f"conv1{chr(ord('b') + int(m[1]))}.{_unet_block(m[2])}"
    m = re.fullmatch(r"encoder\.levels\.(\d)\.down\.(\w+)", key)
    if m:
        return f"ds{int(m[1]) + 1}.{m[2]}"
    m = re.fullmatch(r"encoder\.levels\.(\d)\.blocks\.(\d+)\.(.+)", key)
    if m:
        return f"conv{int(m[1]) + 2}{chr(ord('a') + int(m[2]))}.{_unet_block(m[3])}"
    m = re.fullmatch(r"decoder\.ups\.(\d)\.proj\.(\w+)", key)
    if m:
        return f"up{4 - int(m[1])}conva.{m[2]}"
    m = re.fullmatch(r"decoder\.ups\.(\d)\.blocks\.0\.(.+)", key)
    if m:
        return f"up{4 - int(m[1])}convb.{_unet_block(m[2])}"
    m = re.fullmatch(r"decoder\.head\.(\w+)", key)
    if m:
        return f"up1conv.{m[1]}"
    raise KeyError(f"unet: no released name for mmlib key {key!r} (only the released layout maps)")


def _uniformer_to_released(key: str) -> str:
    m = re.fullmatch(r"encoder\.patch_embeds\.(\d)\.(.+)", key)
    if m:
        return f"encoder.uniformer.patch_embed{int(m[1]) + 1}.{m[2]}"
    m = re.fullmatch(r"encoder\.stages\.(\d)\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.uniformer.blocks{int(m[1]) + 1}.{m[2]}.{m[3]}"
    m = re.fullmatch(r"encoder\.norm\.(\w+)", key)
    if m:
        return f"encoder.uniformer.norm.{m[1]}"
    m = re.fullmatch(r"decoder\.ups\.(\d)\.weight", key)
    if m:
        return f"decoder.decoder{5 - int(m[1])}.transp_conv.conv.weight"
    m = re.fullmatch(r"decoder\.head\.(\w+)", key)
    if m:
        return f"decoder.out_1.conv.conv.{m[1]}"
    raise KeyError(f"uniformer: no released name for mmlib key {key!r}")


_TO_RELEASED: dict[str, Callable[[str], str]] = {
    "unet": _unet_to_released,
    "uniformer": _uniformer_to_released,
}


def _check_arch(arch: str) -> str:
    if arch not in RELEASED_ARCHS:
        raise ValueError(
            f"unknown released architecture {arch!r}; choose one of {', '.join(RELEASED_ARCHS)}"
        )
    return arch


def _released_model(arch: str, size: Mapping[str, Any] | None) -> Backbone:
    from mmlib.models.registry import BACKBONE_PRESETS

    kwargs = dict(BACKBONE_PRESETS["paper"][arch] if size is None else size)
    return build_backbone(arch, **kwargs)


def released_key_map(arch: str, size: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The explicit released-key -> mmlib-key table of one released architecture.

    Args:
        arch: ``unet`` or ``uniformer``.
        size: the backbone size (``Backbone.size``); defaults to the released one
            (``BACKBONE_PRESETS["paper"][arch]``).

    Returns:
        Every released key that mmlib uses, mapped to its mmlib name (``rep_template`` maps to
        ``templates.volumes``). Released keys absent here are dropped (:func:`dropped_reason`).
    """
    to_released = _TO_RELEASED[_check_arch(arch)]
    model = _released_model(arch, size)
    table = {TEMPLATE_KEY: TEMPLATE_TARGET}
    table.update({to_released(k): k for k in model.state_dict()})
    return table


def dropped_reason(arch: str, key: str) -> str | None:
    """Why a released key is dropped, or ``None`` if mmlib has no rule for it."""
    for pattern, reason in DROPPED_RULES[_check_arch(arch)]:
        if re.search(pattern, key):
            return reason
    return None


def released_layout(
    arch: str, size: Mapping[str, Any] | None = None
) -> list[tuple[str, tuple[int, ...]]]:
    """Every key and shape of a released checkpoint's ``state_dict``, in the released order.

    Built from mmlib's network through :func:`released_key_map`, plus the dropped keys of the
    released decoder, so that a checkpoint of that layout can be made and checked without the
    released file.
    """
    _check_arch(arch)
    model = _released_model(arch, size)
    to_released = _TO_RELEASED[arch]
    layout: list[tuple[str, tuple[int, ...]]] = [(TEMPLATE_KEY, (8, *BRATS_SRI24_SHAPE))]
    state = model.state_dict()
    for key, value in state.items():
        if arch == "uniformer" and key == "decoder.head.weight":
            width = model.size["widths"][0]
            layout += [
                ("decoder.proj1.proj.weight", (width, model.in_channels, 3, 3, 3)),
                ("decoder.proj1.proj.bias", (width,)),
                ("decoder.proj1.norm.weight", (width,)),
                ("decoder.proj1.norm.bias", (width,)),
            ]
        layout.append((to_released(key), tuple(value.shape)))
        m = re.fullmatch(r"decoder\.ups\.(\d)\.weight", key) if arch == "uniformer" else None
        if m:
            out = value.shape[1]
            name = f"decoder.decoder{5 - int(m[1])}.conv_block"
            layout += [
                (f"{name}.conv1.conv.weight", (out, 2 * out, 3, 3, 3)),
                (f"{name}.conv2.conv.weight", (out, out, 3, 3, 3)),
                (f"{name}.conv3.conv.weight", (out, 2 * out, 1, 1, 1)),
            ]
    return layout


def reference_state_dict(
    layout: list[tuple[str, tuple[int, ...]]] | list[list[Any]], seed: int = 0
) -> dict[str, Tensor]:
    """The documented deterministic weights of ``shared/reference/README.md`` for a layout.

    Walks the keys in order with one ``torch.Generator().manual_seed(seed)``: integer tensors
    (``num_batches_tracked``) are zeros, ``running_var`` ones, ``running_mean`` zeros (no draw);
    every other tensor ``randn * 0.02``, plus 1.0 for 1-D ``weight`` tensors of norm layers
    (key contains ``norm`` or ``.gn``).
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, shape in layout:
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.ones(shape)
        elif key.endswith("running_mean"):
            out[key] = torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=g) * 0.02
            if len(shape) == 1 and key.endswith("weight") and ("norm" in key or ".gn" in key):
                t = t + 1.0
            out[key] = t
    return out


@dataclass
class LoadReport:
    """What :func:`load_released` did with every released key.

    Attributes:
        arch: the released architecture.
        source: the file read, or ``"<state_dict>"``.
        size: the inferred backbone size (rebuilds the model with ``build_backbone``).
        used: released key -> mmlib key, for every key loaded.
        dropped: released key -> reason, for every key not loaded.
        stripped_prefix: the prefix removed from every key (``"module."``), or ``""``.
    """

    arch: str
    source: str
    size: dict[str, Any]
    used: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    stripped_prefix: str = ""

    def summary(self) -> str:
        """A few lines: counts, the prefix, and each drop reason with how many keys it covers."""
        lines = [
            f"{self.arch} from {self.source}: {len(self.used)} keys used, "
            f"{len(self.dropped)} dropped"
            + (f" (prefix {self.stripped_prefix!r} removed)" if self.stripped_prefix else "")
        ]
        reasons: dict[str, int] = {}
        for reason in self.dropped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        lines += [f"  dropped {n}: {reason}" for reason, n in reasons.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what ``mmlib weights import`` writes as
        ``import_report.json``)."""
        return {
            "arch": self.arch,
            "source": self.source,
            "size": self.size,
            "stripped_prefix": self.stripped_prefix,
            "used": self.used,
            "dropped": self.dropped,
        }


def unwrap_state_dict(obj: Any, source: str = "<state_dict>") -> tuple[dict[str, Tensor], str]:
    """The tensors of a checkpoint object: its ``state_dict`` (or ``model``) entry, unprefixed.

    Returns:
        ``(state_dict, prefix)`` where ``prefix`` is ``"module."`` when every key had it.

    Raises:
        ValueError: When ``obj`` holds no mapping of tensors.
    """
    state = obj
    if isinstance(obj, Mapping):
        for name in ("state_dict", "model", "model_state_dict"):
            if name in obj and isinstance(obj[name], Mapping):
                state = obj[name]
                break
    if not isinstance(state, Mapping) or not state:
        raise ValueError(
            f"{source}: no state dict found; expected a dict of tensors or a dict with 'state_dict'"
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if len(tensors) != len(state):
        bad = [k for k, v in state.items() if not isinstance(v, Tensor)][:3]
        raise ValueError(f"{source}: state dict entries {bad} are not tensors")
    prefix = ""
    if all(k.startswith("module.") for k in tensors):
        prefix = "module."
        tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors, prefix


def infer_released_size(state: Mapping[str, Tensor], arch: str) -> dict[str, Any]:
    """The backbone size of a released state dict (channel counts and depths from its keys).

    GroupNorm groups (U-Net: 8) and the attention head dimension (UniFormer: 64) are not
    stored in a state dict; the released values are assumed.

    Raises:
        ValueError: When a key that every released checkpoint of ``arch`` has is missing.
    """
    _check_arch(arch)
    if arch == "unet":
        need = ["conv1a.weight", "up1conv.weight"]
        _require(state, need, arch)
        blocks = [
            len({k.split(".")[0] for k in state if re.match(rf"conv{s}[a-z]\.", k)}) - (s == 1)
            for s in (1, 2, 3, 4)
        ]
        return {
            "in_channels": int(state["conv1a.weight"].shape[1]),
            "out_channels": int(state["up1conv.weight"].shape[0]),
            "base_channels": int(state["conv1a.weight"].shape[0]),
            "num_groups": 8,
            "encoder_blocks": blocks,
            "decoder_blocks": 1,
        }
    pe = "encoder.uniformer.patch_embed{}.proj.weight"
    need = [pe.format(k) for k in (1, 2, 3, 4)] + [
        "decoder.out_1.conv.conv.weight",
        "encoder.uniformer.blocks1.0.mlp.fc1.weight",
    ]
    _require(state, need, arch)
    widths = [int(state[pe.format(k)].shape[0]) for k in (1, 2, 3, 4)]
    depths = [
        len({k.split(".")[3] for k in state if k.startswith(f"encoder.uniformer.blocks{s}.")})
        for s in (1, 2, 3, 4)
    ]
    hidden = int(state["encoder.uniformer.blocks1.0.mlp.fc1.weight"].shape[0])
    return {
        "in_channels": int(state[pe.format(1)].shape[1]),
        "out_channels": int(state["decoder.out_1.conv.conv.weight"].shape[0]),
        "widths": widths,
        "depths": depths,
        "head_dim": 64,
        "mlp_ratio": hidden / widths[0],
    }


def _require(state: Mapping[str, Tensor], keys: list[str], arch: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(
            f"not a released BrainMVP {arch} checkpoint: missing {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; check --arch"
        )


def load_released(
    path_or_state_dict: str | Path | Mapping[str, Any], arch: str
) -> tuple[Backbone, Tensor | None, LoadReport]:
    """Build the released network and load a released checkpoint into it, number for number.

    Args:
        path_or_state_dict: a ``.pt``/``.pth`` file (read with ``torch.load(weights_only=True)``
            only, see :func:`mmlib.models.checkpoints.safe_torch_load`), or the loaded object: a
            dict with ``state_dict``, or the state dict itself; keys may carry ``module.``.
        arch: ``unet`` or ``uniformer``.

    Returns:
        ``(model, templates, report)``: the backbone in ``eval()`` mode, with its size inferred
        from the checkpoint (input channels included); the templates ``(K, 240, 240, 155)``
        float32 in RAS voxel order (affine :func:`released_template_affine`), or ``None`` when
        the checkpoint has no ``rep_template``; the :class:`LoadReport`.

    Raises:
        ValueError: When a key is neither mapped nor dropped by a stated rule, when a key the
            network needs is missing, or when a shape does not match.
    """
    _check_arch(arch)
    if isinstance(path_or_state_dict, (str, Path)):
        from mmlib.models.checkpoints import safe_torch_load

        source = str(path_or_state_dict)
        obj = safe_torch_load(path_or_state_dict)
    else:
        source, obj = "<state_dict>", path_or_state_dict
    state, prefix = unwrap_state_dict(obj, source)
    size = infer_released_size(state, arch)
    model = build_backbone(arch, **size)
    table = released_key_map(arch, size)
    report = LoadReport(arch=arch, source=source, size=size, stripped_prefix=prefix)

    own = model.state_dict()
    new_state: dict[str, Tensor] = {}
    templates: Tensor | None = None
    unknown: list[str] = []
    for key, value in state.items():
        if key == TEMPLATE_KEY:
            if value.ndim != 4:
                raise ValueError(
                    f"{source}: {TEMPLATE_KEY} should be (K, X, Y, Z), got {tuple(value.shape)}"
                )
            templates = value.detach().float()
            report.used[key] = TEMPLATE_TARGET
            continue
        if key in table:
            target = table[key]
            if tuple(own[target].shape) != tuple(value.shape):
                raise ValueError(
                    f"{source}: {key} has shape {tuple(value.shape)} but mmlib's {target} is "
                    f"{tuple(own[target].shape)}"
                )
            new_state[target] = value.detach().to(own[target].dtype)
            report.used[key] = target
            continue
        reason = dropped_reason(arch, key)
        if reason is None:
            unknown.append(key)
        else:
            report.dropped[key] = reason
    if unknown:
        raise ValueError(
            f"{source}: {len(unknown)} key(s) neither used nor known to be droppable for {arch}, "
            f"e.g. {unknown[0]!r}; is --arch right?"
        )
    missing = sorted(set(own) - set(new_state))
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} parameter(s) of mmlib's {arch} missing from the checkpoint, "
            f"e.g. {missing[0]!r} (released name {_TO_RELEASED[arch](missing[0])!r})"
        )
    model.load_state_dict(new_state, strict=True)
    model.eval()
    return model, templates, report


__all__ = [
    "BRATS_SRI24_AFFINE",
    "DROPPED_RULES",
    "LoadReport",
    "RELEASED_ARCHS",
    "dropped_reason",
    "head_centred_affine",
    "infer_released_size",
    "load_released",
    "reference_state_dict",
    "released_key_map",
    "released_layout",
    "released_template_affine",
    "unwrap_state_dict",
]
