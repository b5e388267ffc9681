"""Pre-training configuration: a preset or file, plus ``key=value`` overrides, resolved once.

A configuration is a nested dict. It is built in layers, later layers winning:

1. :data:`DEFAULTS` (every key the engine knows, with its default),
2. the scale preset ``mmlib/configs/pretrain_<scale>.yaml`` (``smoke``, ``demo``, ``paper``),
3. a user file (YAML or JSON) or dict, when one is given instead of a preset name,
4. overrides, written ``section.key=value`` (values parsed as YAML: ``null``, ``true``, ``1e-3``,
   ``[1, 2]``) or given as a dict (nested, or flat with dotted keys).

``objective`` is a named preset of :data:`mmlib.proxy.brainmvp.OBJECTIVES` plus field
overrides: ``objective=mim`` changes the preset's name and keeps the fields set so far,
``objective.mask_rate=0.875`` sets one field. ``objective_defaults`` (set by the scale presets)
holds scale-dependent defaults of the objective's fields (block size, the epochs of the
template warm-up and of the contrastive start, shortened with the schedule): they replace a
field only where the named preset keeps :class:`~mmlib.proxy.brainmvp.ObjectiveConfig`'s own
default, so that ``cmr_only``'s ``warmup_epochs=0`` survives; explicit ``objective.*`` keys
win over both. :func:`resolve_objective` applies this rule.

The scale is read from the overrides, then the file, then the preset name, so that
``pretrain("my.yaml", ["scale=paper"])`` lays ``my.yaml`` over the paper preset. Unknown keys are
an error naming the key and the known ones, except below ``objective`` (fields of
:class:`mmlib.proxy.brainmvp.ObjectiveConfig`, checked there) and ``model.size`` (arguments of
:func:`mmlib.models.build_backbone`). ``objective`` may be a preset name (``brainmvp``, ``mim``,
``cmr_only``, ``md_only``, ``brainmvp_nocl``) or a dict ``{name: preset, field: value, ...}``.

Examples::

    >>> cfg = load_config("smoke", ["train.batch_size=4", "objective=mim"])
    >>> cfg["train"]["batch_size"], cfg["objective"]["name"]
    (4, 'mim')
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mmlib.configs.scales import SCALES, check_scale

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

DEFAULTS: dict[str, Any] = {
    "scale": "demo",
    "device": "auto",
    "data": {"store": None, "k": 4, "crop_size": 32, "workers": 0, "studies": None},
    "model": {"name": "unet", "size": {}},
    "objective": {"name": "brainmvp"},
    "objective_defaults": {},
    "optim": {"lr": 3e-4, "weight_decay": 1e-5, "warmup_steps": 0, "min_lr": 0.0,
              "betas": [0.9, 0.999]},
    "schedule": {"epochs": 1},
    "train": {"batch_size": 2, "accum": 1, "amp": "auto", "clip": 1.0, "seed": 0,
              "max_steps": None, "sync_bn": False},
    "checkpoint": {"every": 100, "keep": 2},
    "samples": {"n": 4},
    "log": {"tensorboard": "auto"},
    "run": {"name": None, "root": None},
}
"""Every configuration key with its default (presets and files override these)."""

FREE_SECTIONS: frozenset[str] = frozenset({"objective", "objective_defaults", "model.size"})
"""Dotted paths whose keys are checked by another room, not against :data:`DEFAULTS`."""

AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")


def preset_path(scale: str) -> Path:
    """The YAML file of one scale preset, e.g. ``mmlib/configs/pretrain_demo.yaml``."""
    return CONFIG_DIR / f"pretrain_{check_scale(scale)}.yaml"


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON configuration file into a dict.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When it does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrain config {path}: no such file; give a preset ({', '.join(SCALES)}) or a "
            "YAML/JSON file"
        )
    data = yaml.safe_load(path.read_text())
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"pretrain config {path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Parse an override value as YAML, reading ``1e-3`` as a float (YAML 1.1 would not)."""
    value = yaml.safe_load(text) if text.strip() else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=1", ...]`` or a (nested or dotted) dict into a flat ``{"a.b": value}`` dict.

    Raises:
        ValueError: When an item of a list has no ``=``.
    """
    flat: dict[str, Any] = {}
    if overrides is None:
        return flat
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            if isinstance(value, Mapping) and str(key) not in FREE_SECTIONS and key != "objective":
                for sub, v in parse_overrides(value).items():
                    flat[f"{key}.{sub}"] = v
            else:
                flat[str(key)] = value
        return flat
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value, e.g. train.batch_size=4")
        key, text = item.split("=", 1)
        flat[key.strip()] = parse_value(text)
    return flat


def _normalise_objective(value: Any) -> dict[str, Any]:
    if value is None:
        return {"name": "brainmvp"}
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        out = dict(value)
        if "preset" in out:
            out["name"] = out.pop("preset")
        return out
    raise ValueError(f"config key objective: expected a preset name or a mapping, got {value!r}")


def _set(cfg: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    node: Any = cfg
    ref: Any = DEFAULTS
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        parent = ".".join(parts[:i])
        free = any(parent == f or parent.startswith(f + ".") for f in FREE_SECTIONS)
        last = i == len(parts) - 1
        if not free and (not isinstance(ref, Mapping) or part not in ref):
            known = ", ".join(sorted(ref)) if isinstance(ref, Mapping) else "(none: not a section)"
            raise ValueError(f"{where}: unknown config key {path!r}; known keys here: {known}")
        if last:
            if path == "objective":
                node.setdefault("objective", {"name": "brainmvp"}).update(_normalise_objective(value))
                return
            if isinstance(value, Mapping) and not free and path not in FREE_SECTIONS:
                for sub, v in value.items():
                    _set(cfg, f"{path}.{sub}", v, where)
                return
            node[part] = copy.deepcopy(value)
            return
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
        ref = ref[part] if isinstance(ref, Mapping) and part in ref else {}


def merge(cfg: dict[str, Any], layer: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Lay ``layer`` (nested or dotted keys) over ``cfg`` in place, checking every key."""
    for key, value in parse_overrides(layer).items():
        _set(cfg, key, value, where)
    return cfg


def load_config(
    config: str | Path | Mapping[str, Any] = "demo",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build a full pre-training configuration (see the module docstring for the layers).

    Args:
        config: a scale preset name (``smoke``, ``demo``, ``paper``), a YAML/JSON file, or a
            dict. Defaults to ``"demo"``.
        overrides: ``key=value`` strings or a dict, applied last. Defaults to None.

    Returns:
        The configuration as a nested dict of plain values (checked, not yet bound to a store).

    Raises:
        ValueError: When a key is unknown or a value is out of range.
        FileNotFoundError: When ``config`` names neither a preset nor an existing file.
    """
    flat = parse_overrides(overrides)
    if isinstance(config, Mapping):
        user: dict[str, Any] = dict(config)
        where = "pretrain config (dict)"
    elif isinstance(config, str) and config in SCALES:
        user, where = {}, f"pretrain preset {config}"
        user["scale"] = config
    else:
        user, where = read_file(config), f"pretrain config {config}"
    scale = flat.get("scale", user.get("scale", "demo"))
    check_scale(str(scale))
    cfg = copy.deepcopy(DEFAULTS)
    merge(cfg, read_file(preset_path(scale)), f"pretrain preset {preset_path(scale)}")
    merge(cfg, user, where)
    merge(cfg, flat, "pretrain overrides")
    cfg["scale"] = scale
    validate(cfg)
    return cfg


def validate(cfg: Mapping[str, Any]) -> None:
    """Check ranges and types of the engine's own keys.

    Raises:
        ValueError: When a value is out of range, with the key and how to fix it.
    """

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ValueError(f"pretrain config {key}: {msg}")

    t, o = cfg["train"], cfg["optim"]
    for key in ("batch_size", "accum"):
        need(isinstance(t[key], int) and t[key] >= 1, f"train.{key}", f"should be an integer >= 1, got {t[key]!r}")
    need(str(t["amp"]).lower() in AMP_MODES or t["amp"] in (True, False), "train.amp",
         f"should be one of {', '.join(AMP_MODES)}, got {t['amp']!r}")
    need(t["max_steps"] is None or (isinstance(t["max_steps"], int) and t["max_steps"] >= 1),
         "train.max_steps", f"should be null or an integer >= 1, got {t['max_steps']!r}")
    need(t["clip"] is None or float(t["clip"]) > 0, "train.clip", f"should be null or > 0, got {t['clip']!r}")
    need(float(o["lr"]) > 0, "optim.lr", f"should be > 0, got {o['lr']!r}")
    need(float(o["weight_decay"]) >= 0, "optim.weight_decay", f"should be >= 0, got {o['weight_decay']!r}")
    need(isinstance(o["warmup_steps"], int) and o["warmup_steps"] >= 0, "optim.warmup_steps",
         f"should be an integer >= 0, got {o['warmup_steps']!r}")
    need(0 <= float(o["min_lr"]) <= float(o["lr"]), "optim.min_lr", f"should be in [0, optim.lr], got {o['min_lr']!r}")
    need(isinstance(cfg["schedule"]["epochs"], int | float) and cfg["schedule"]["epochs"] > 0,
         "schedule.epochs", f"should be > 0, got {cfg['schedule']['epochs']!r}")
    need(isinstance(cfg["checkpoint"]["every"], int) and cfg["checkpoint"]["every"] >= 1,
         "checkpoint.every", f"should be an integer >= 1, got {cfg['checkpoint']['every']!r}")
    need(isinstance(cfg["checkpoint"]["keep"], int) and cfg["checkpoint"]["keep"] >= 1,
         "checkpoint.keep", f"should be an integer >= 1, got {cfg['checkpoint']['keep']!r}")
    need(isinstance(cfg["data"]["crop_size"], int | list), "data.crop_size",
         f"should be an integer or a list of 3, got {cfg['data']['crop_size']!r}")
    need(isinstance(cfg["data"]["workers"], int) and cfg["data"]["workers"] >= 0, "data.workers",
         f"should be an integer >= 0, got {cfg['data']['workers']!r}")


def resolve_objective(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of the objective (``name`` first) after the rule of the module docstring.

    Raises:
        ValueError: When the preset name or a field is unknown (from ``ObjectiveConfig``).
    """
    import dataclasses

    from mmlib.proxy.brainmvp import ObjectiveConfig, get_objective

    spec = dict(cfg["objective"])
    name = spec.pop("name", "brainmvp")
    named = get_objective(name)
    base = ObjectiveConfig()
    fields = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    updates: dict[str, Any] = {}
    for key, value in dict(cfg.get("objective_defaults") or {}).items():
        if key not in fields:
            raise ValueError(f"config key objective_defaults.{key}: not a field of ObjectiveConfig; "
                             f"known: {', '.join(sorted(fields))}")
        if getattr(named, key) == getattr(base, key):
            updates[key] = value
    updates.update(spec)
    try:
        resolved = ObjectiveConfig.from_dict({"name": name, **updates})
    except ValueError as err:
        raise ValueError(f"config key objective: {err}") from None
    return {"name": name, **resolved.asdict()}


def identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a configuration that decides the weights: everything but ``run``, ``log``
    and the data-loader worker count (crops are a function of seed, epoch and index only)."""
    out = copy.deepcopy(dict(cfg))
    out.pop("run", None)
    out.pop("log", None)
    out.get("data", {}).pop("workers", None)
    return out


def config_hash(cfg: Mapping[str, Any], n: int = 8) -> str:
    """A short stable hash of :func:`identity` (names default run folders)."""
    text = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested configurations."""
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for key in keys:
        path = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += diff(va, vb, path + ".")
        elif va != vb:
            out.append(path)
    return out
