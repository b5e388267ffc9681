"""The engine's one configuration system, for pre-training and fine-tuning: a preset or file,
plus ``key=value`` overrides, resolved once.

A configuration is a nested dict of one ``kind`` (``pretrain`` or ``finetune``). It is built in
layers, later layers winning:

1. the kind's defaults table (:data:`DEFAULTS` for pre-training, :data:`FINETUNE_DEFAULTS` for
   fine-tuning: every key the engine knows, with its default),
2. the scale preset ``mmlib/configs/<kind>_<scale>.yaml`` (``smoke``, ``demo``, ``paper``),
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
Fine-tuning's free sections are ``model.size`` and ``pretrain_overrides`` (overrides of the
pre-training run an objective ``init`` starts, checked by the pre-training loader). A fine-tuning
preset or file may also hold a ``classification`` section: keys laid over its own layer when the
task is a classification task (:data:`mmlib.tasks.TASKS` kind), so that one preset serves both
kinds (the demo preset's segmentation learning rate makes a whole-head classifier diverge); the
section itself is not kept, the values it set are.

One identity (:func:`identity`: everything but ``run``, ``log`` and the loader's worker count)
and one hash (:func:`config_hash`, optionally of extra identity such as a fine-tuning run's
pre-training checkpoint) name the run folders of both kinds.

Examples::

    >>> cfg = load_config("smoke", ["train.batch_size=4", "objective=mim"])
    >>> cfg["train"]["batch_size"], cfg["objective"]["name"]
    (4, 'mim')
    >>> load_config("smoke", {"task": "hgg_lgg"}, kind="finetune")["task"]
    'hgg_lgg'
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
    "optim": {
        "lr": 3e-4,
        "weight_decay": 1e-5,
        "warmup_steps": 0,
        "min_lr": 0.0,
        "betas": [0.9, 0.999],
        "template_lr": None,
        "template_weight_decay": 0.0,
    },
    "schedule": {"epochs": 1},
    "train": {
        "batch_size": 2,
        "accum": 1,
        "amp": "auto",
        "clip": 1.0,
        "seed": 0,
        "max_steps": None,
        "sync_bn": False,
        "clip_templates": False,
    },
    "checkpoint": {"every": 100, "keep": 2},
    "samples": {"n": 4},
    "log": {"tensorboard": "auto"},
    "run": {"name": None, "root": None},
}
"""Every pre-training configuration key with its default (presets and files override these)."""

FINETUNE_DEFAULTS: dict[str, Any] = {
    "scale": "demo",
    "device": "auto",
    "task": "brats_ped",
    "init": "scratch",
    "pretrained": "train",
    "pretrain_overrides": {},
    "data": {
        "store": None,
        "label_fraction": 1.0,
        "subset_seed": 0,
        "crop_size": 32,
        "pos_fraction": 0.67,
        "input_size": [48, 56, 48],
        "flip": True,
        "max_test": None,
    },
    "model": {
        "name": "unet",
        "size": {},
        "decoder": "auto",
        "adapt": "inflate",
        "deep_supervision": False,
        "head_prior": 0.05,
        "hidden": 64,
        "dropout": 0.2,
    },
    "fill": "auto",
    "optim": {
        "lr": 1e-3,
        "encoder_lr_scale": 1.0,
        "weight_decay": 1e-5,
        "warmup_steps": 10,
        "min_lr": 0.0,
    },
    "train": {
        "steps": 100,
        "epochs": None,
        "batch_size": 2,
        "seed": 0,
        "clip": 1.0,
        "modality_dropout": 0.0,
        "batch_dice": True,
        "template_replacement": 0,
        "consistency_weight": 0.1,
        "amp": "off",
    },
    "eval": {
        "roi": None,
        "overlap": 0.25,
        "sw_batch_size": 4,
        "hd95": True,
        "n_predictions": 2,
        "amp": "off",
    },
    "run": {"name": None, "root": None},
}
"""Every fine-tuning configuration key with its default (the scale presets override these)."""

FREE_SECTIONS: frozenset[str] = frozenset({"objective", "objective_defaults", "model.size"})
"""Dotted paths of pre-training whose keys are checked by another room, not against
:data:`DEFAULTS`."""

FINETUNE_FREE_SECTIONS: frozenset[str] = frozenset({"model.size", "pretrain_overrides"})
"""Dotted paths of fine-tuning whose keys are checked elsewhere (backbone arguments, the
pre-training run's own configuration)."""

KINDS: dict[str, tuple[dict[str, Any], frozenset[str]]] = {
    "pretrain": (DEFAULTS, FREE_SECTIONS),
    "finetune": (FINETUNE_DEFAULTS, FINETUNE_FREE_SECTIONS),
}
"""Each configuration kind's defaults table and free sections."""

AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")


def _kind(kind: str) -> tuple[dict[str, Any], frozenset[str]]:
    if kind not in KINDS:
        raise ValueError(f"config kind should be one of {', '.join(KINDS)}, got {kind!r}")
    return KINDS[kind]


def preset_path(scale: str, kind: str = "pretrain") -> Path:
    """The YAML file of one scale preset, e.g. ``mmlib/configs/pretrain_demo.yaml``."""
    _kind(kind)
    return CONFIG_DIR / f"{kind}_{check_scale(scale)}.yaml"


def read_file(path: str | Path, kind: str = "pretrain") -> dict[str, Any]:
    """Read a YAML or JSON configuration file into a dict.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When it does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{kind} config {path}: no such file; give a preset ({', '.join(SCALES)}) or a "
            "YAML/JSON file"
        )
    data = yaml.safe_load(path.read_text())
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{kind} config {path}: expected a mapping at the top, got {type(data).__name__}"
        )
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


def parse_overrides(
    overrides: Mapping[str, Any] | Sequence[str] | None, free: frozenset[str] = FREE_SECTIONS
) -> dict[str, Any]:
    """Turn ``["a.b=1", ...]`` or a (nested or dotted) dict into a flat ``{"a.b": value}`` dict.

    Args:
        overrides: ``key=value`` strings, or a dict (nested, or flat with dotted keys).
        free: sections kept whole (their values stay dicts). Defaults to
            :data:`FREE_SECTIONS` (pre-training's).

    Raises:
        ValueError: When an item of a list has no ``=``.
    """
    flat: dict[str, Any] = {}
    if overrides is None:
        return flat
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            if isinstance(value, Mapping) and str(key) not in free and key != "objective":
                for sub, v in parse_overrides(value, free).items():
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


def _set(cfg: dict[str, Any], dotted: str, value: Any, where: str, kind: str = "pretrain") -> None:
    defaults, sections = _kind(kind)
    parts = dotted.split(".")
    node: Any = cfg
    ref: Any = defaults
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        parent = ".".join(parts[:i])
        free = any(parent == f or parent.startswith(f + ".") for f in sections)
        last = i == len(parts) - 1
        if not free and (not isinstance(ref, Mapping) or part not in ref):
            known = ", ".join(sorted(ref)) if isinstance(ref, Mapping) else "(none: not a section)"
            raise ValueError(
                f"{where}: unknown config key {path!r}; known keys here: {known} "
                "(fix or drop the unknown key)"
            )
        if last:
            if kind == "pretrain" and path == "objective":
                node.setdefault("objective", {"name": "brainmvp"}).update(
                    _normalise_objective(value)
                )
                return
            if isinstance(value, Mapping) and not free and path not in sections:
                for sub, v in value.items():
                    _set(cfg, f"{path}.{sub}", v, where, kind)
                return
            node[part] = copy.deepcopy(value)
            return
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
        ref = ref[part] if isinstance(ref, Mapping) and part in ref else {}


def merge(
    cfg: dict[str, Any], layer: Mapping[str, Any], where: str, kind: str = "pretrain"
) -> dict[str, Any]:
    """Lay ``layer`` (nested or dotted keys) over ``cfg`` in place, checking every key."""
    for key, value in parse_overrides(layer, _kind(kind)[1]).items():
        _set(cfg, key, value, where, kind)
    return cfg


def load_config(
    config: str | Path | Mapping[str, Any] = "demo",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    kind: str = "pretrain",
) -> dict[str, Any]:
    """Build a full configuration of one kind (see the module docstring for the layers).

    Args:
        config: a scale preset name (``smoke``, ``demo``, ``paper``), a YAML/JSON file, or a
            dict. Defaults to ``"demo"``.
        overrides: ``key=value`` strings or a dict, applied last. Defaults to None.
        kind: ``"pretrain"`` or ``"finetune"`` (defaults table, presets, checks). Defaults to
            ``"pretrain"``.

    Returns:
        The configuration as a nested dict of plain values (checked, not yet bound to a store).

    Raises:
        ValueError: When a key is unknown, a value is out of range, or ``kind`` is unknown.
        FileNotFoundError: When ``config`` names neither a preset nor an existing file.
    """
    defaults, sections = _kind(kind)
    flat = parse_overrides(overrides, sections)
    if isinstance(config, Mapping):
        user: dict[str, Any] = copy.deepcopy(dict(config))
        where = f"{kind} config (dict)"
    elif isinstance(config, str) and config in SCALES:
        user, where = {}, f"{kind} preset {config}"
        user["scale"] = config
    else:
        user, where = read_file(config, kind), f"{kind} config {config}"
    scale = flat.get("scale", user.get("scale", "demo"))
    check_scale(str(scale))
    cfg = copy.deepcopy(defaults)
    preset = preset_path(scale, kind)
    preset_layer = read_file(preset, kind)
    task = flat.get("task", user.get("task", preset_layer.get("task", cfg.get("task"))))
    for layer, name in ((preset_layer, f"{kind} preset {preset}"), (user, where)):
        by_kind = layer.pop("classification", None) if kind == "finetune" else None
        merge(cfg, layer, name, kind)
        if by_kind is not None:
            if not isinstance(by_kind, Mapping):
                raise ValueError(
                    f"{name}: classification should be a mapping of keys for classification "
                    f"tasks, got {by_kind!r}"
                )
            if _is_classification(task):
                merge(cfg, by_kind, f"{name} (classification section)", kind)
    merge(cfg, flat, f"{kind} overrides", kind)
    cfg["scale"] = scale
    if kind == "pretrain":
        validate(cfg)
    else:
        validate_finetune(cfg)
    return cfg


def _is_classification(task: Any) -> bool:
    """Whether ``task`` names a classification task of the catalogue (False when unknown:
    :func:`validate_finetune` reports that)."""
    from mmlib.tasks import get_task

    try:
        return get_task(str(task)).kind == "classification"
    except ValueError:  # get_task's error for an unknown name
        return False


def validate_finetune(cfg: Mapping[str, Any]) -> None:
    """Check the fine-tuning keys that have a closed set of values, and the task name.

    Raises:
        ValueError: When a value is invalid or the task is unknown, with the key and the
            choices.
    """
    from mmlib.proxy.missing import FILLS
    from mmlib.tasks import get_task

    if cfg["fill"] not in (*FILLS, "auto"):
        raise ValueError(
            f"finetune config: fill should be template, zero or auto, got {cfg['fill']!r}"
        )
    if cfg["model"]["adapt"] not in ("inflate", "reinit"):
        raise ValueError(
            "finetune config: model.adapt should be inflate or reinit, got "
            f"{cfg['model']['adapt']!r}"
        )
    rep = cfg["train"]["template_replacement"]
    if isinstance(rep, bool) or not isinstance(rep, int) or rep < 0:
        raise ValueError(
            "finetune config: train.template_replacement should be an integer >= 0 (the most "
            f"modalities replaced by their templates per copy; 0 = off), got {rep!r}"
        )
    weight = cfg["train"]["consistency_weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(
            f"finetune config: train.consistency_weight should be a number >= 0, got {weight!r}"
        )
    for key, what in (("train", "training"), ("eval", "test-time inference")):
        amp = cfg[key]["amp"]
        if str(amp).lower() not in AMP_MODES and amp not in (True, False):
            raise ValueError(
                f"finetune config: {key}.amp should be one of {', '.join(AMP_MODES)} (the "
                f"precision of {what}), got {amp!r}"
            )
    frac = float(cfg["data"]["label_fraction"])
    if not 0 < frac <= 1:
        raise ValueError(f"finetune config: data.label_fraction should be in (0, 1], got {frac}")
    get_task(cfg["task"])


def validate(cfg: Mapping[str, Any]) -> None:
    """Check ranges and types of the pre-training engine's own keys.

    Raises:
        ValueError: When a value is out of range, with the key and how to fix it.
    """

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ValueError(f"pretrain config {key}: {msg}")

    t, o = cfg["train"], cfg["optim"]
    for key in ("batch_size", "accum"):
        need(
            isinstance(t[key], int) and t[key] >= 1,
            f"train.{key}",
            f"should be an integer >= 1, got {t[key]!r}",
        )
    need(
        str(t["amp"]).lower() in AMP_MODES or t["amp"] in (True, False),
        "train.amp",
        f"should be one of {', '.join(AMP_MODES)}, got {t['amp']!r}",
    )
    need(
        t["max_steps"] is None or (isinstance(t["max_steps"], int) and t["max_steps"] >= 1),
        "train.max_steps",
        f"should be null or an integer >= 1, got {t['max_steps']!r}",
    )
    need(
        t["clip"] is None or float(t["clip"]) > 0,
        "train.clip",
        f"should be null or > 0, got {t['clip']!r}",
    )
    need(float(o["lr"]) > 0, "optim.lr", f"should be > 0, got {o['lr']!r}")
    need(
        float(o["weight_decay"]) >= 0,
        "optim.weight_decay",
        f"should be >= 0, got {o['weight_decay']!r}",
    )
    need(
        isinstance(o["warmup_steps"], int) and o["warmup_steps"] >= 0,
        "optim.warmup_steps",
        f"should be an integer >= 0, got {o['warmup_steps']!r}",
    )
    need(
        o["template_lr"] is None or float(o["template_lr"]) > 0,
        "optim.template_lr",
        f"should be null (optim.lr) or > 0, got {o['template_lr']!r}",
    )
    need(
        float(o["template_weight_decay"]) >= 0,
        "optim.template_weight_decay",
        f"should be >= 0, got {o['template_weight_decay']!r}",
    )
    need(
        0 <= float(o["min_lr"]) <= float(o["lr"]),
        "optim.min_lr",
        f"should be in [0, optim.lr], got {o['min_lr']!r}",
    )
    need(
        isinstance(cfg["schedule"]["epochs"], int | float) and cfg["schedule"]["epochs"] > 0,
        "schedule.epochs",
        f"should be > 0, got {cfg['schedule']['epochs']!r}",
    )
    need(
        isinstance(cfg["checkpoint"]["every"], int) and cfg["checkpoint"]["every"] >= 1,
        "checkpoint.every",
        f"should be an integer >= 1, got {cfg['checkpoint']['every']!r}",
    )
    need(
        isinstance(cfg["checkpoint"]["keep"], int) and cfg["checkpoint"]["keep"] >= 1,
        "checkpoint.keep",
        f"should be an integer >= 1, got {cfg['checkpoint']['keep']!r}",
    )
    need(
        isinstance(cfg["data"]["crop_size"], int | list),
        "data.crop_size",
        f"should be an integer or a list of 3, got {cfg['data']['crop_size']!r}",
    )
    need(
        isinstance(cfg["data"]["workers"], int) and cfg["data"]["workers"] >= 0,
        "data.workers",
        f"should be an integer >= 0, got {cfg['data']['workers']!r}",
    )


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
            raise ValueError(
                f"config key objective_defaults.{key}: not a field of ObjectiveConfig; "
                f"known: {', '.join(sorted(fields))}"
            )
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


def config_hash(cfg: Mapping[str, Any], n: int = 8, extra: Mapping[str, Any] | None = None) -> str:
    """A short stable hash of :func:`identity` (names default run folders).

    Args:
        cfg: a resolved configuration.
        n: hex digits. Defaults to 8.
        extra: more identity hashed with it, e.g. ``{"checkpoint": ...}`` of a fine-tuning
            run (the hash is then of ``{"config": identity(cfg), **extra}``). Defaults to None.
    """
    obj: Any = identity(cfg) if extra is None else {"config": identity(cfg), **extra}
    text = json.dumps(obj, sort_keys=True, default=str)
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
