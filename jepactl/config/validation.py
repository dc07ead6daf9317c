"""Recipe validation: a resolved dict checked into the typed schema, and back to plain data.

Type checks against the annotations with a suggestion for the nearest valid key
(:func:`from_dict`), a registered class's own parameters checked against its constructor
(:func:`validate_kwargs`), the typed :class:`~jepactl.config.schema.Recipe` of a resolved dict
(:func:`parse_recipe`), the range checks a type cannot express (``check_*_config``, and
:func:`built` to turn their ``ValueError`` into a one-line :class:`ConfigError`), and the way
back: :func:`to_dict`, :func:`dump_yaml` and :func:`config_diff`. Cut from
:mod:`jepactl.config` here because this is the step after loading, and the one that knows the
schema's types; it knows no registry (:mod:`jepactl.recipe` checks the components).
:mod:`jepactl.config` re-exports every public name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import types
import typing
from collections import abc
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from jepactl.config.schema import (
    DataConfig,
    MonitorConfig,
    OptimConfig,
    Recipe,
    TrackingConfig,
    TrainConfig,
)
from jepactl.errors import ConfigError
from jepactl.utils import close_match, suggestion

# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted where that is lossless."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits no type")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            close = close_match(value, map(str, get_args(tp))) if isinstance(value, str) else None
            hint = f"; did you mean '{close}'?" if close else ""
            raise ConfigError(f"{where}: {value!r} is not one of {choices}{hint}")
        return value
    if origin in (list, abc.Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}.{i}") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}.{i}") for i, (v, a) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float:
        # PyYAML reads 6e-4 (no dot) as a string; accept any number-like text for floats.
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{path}'{suggestion(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _init_parameters(cls: type) -> dict[str, tuple[inspect.Parameter, Any]]:
    """Keyword parameters of ``cls.__init__`` with their annotations, following ``**kwargs``
    up the class hierarchy (a subclass that forwards ``**kwargs`` accepts its parents' keys)."""
    out: dict[str, tuple[inspect.Parameter, Any]] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # annotations that cannot be resolved: check names only
            hints = {}
        params = inspect.signature(init).parameters
        for name, p in params.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(name, (p, hints.get(name, Any)))
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return out


def validate_kwargs(cls: type, kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check ``kwargs`` against ``cls``'s constructor (names and annotations); return coerced.

    This is how a term's or mask strategy's own parameters are validated: the class's
    ``__init__`` is the schema, so adding a parameter needs no second declaration.
    """
    params = _init_parameters(cls)
    out = {}
    for key, value in kwargs.items():
        if key not in params:
            raise ConfigError(f"unknown key '{where}.{key}'{suggestion(key, params)}")
        out[key] = _coerce(value, params[key][1], f"{where}.{key}")
    missing = [
        n
        for n, (p, _) in params.items()
        if p.default is inspect.Parameter.empty and n not in kwargs
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return out


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain YAML-safe data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def dump_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)


def parse_recipe(raw: Mapping[str, Any]) -> Recipe:
    """The typed recipe of a resolved dict, checked for structure and types only.

    The components (model preset, terms, mask strategies) are validated against their
    registries by :func:`jepactl.recipe.validate`; this module knows no registry, so every
    room can import it without importing the models or objectives.
    """
    recipe = from_dict(Recipe, raw)
    recipe.objective.terms = {
        k: dict(v) if isinstance(v, Mapping) else {}
        for k, v in recipe.objective.terms.items()
        if v is not False
    }
    return recipe


def check_data_config(cfg: DataConfig) -> None:
    """Ranges a type check cannot see (a zero stride would fail every sample as "bad data")."""
    for name in ("num_frames", "frame_stride", "crop", "decode_short_side", "batch_size", "fold"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {cfg.num_workers}")
    if len(cfg.scale) != 2 or not 0 < cfg.scale[0] <= cfg.scale[1] <= 1:
        raise ValueError(f"scale must be [min, max] within (0, 1], got {cfg.scale}")
    if len(cfg.ratio) != 2 or not 0 < cfg.ratio[0] <= cfg.ratio[1]:
        raise ValueError(f"ratio must be [min, max] with 0 < min <= max, got {cfg.ratio}")
    for name in ("flip", "max_bad_fraction"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    if any(w <= 0 for w in cfg.mix.values()):
        raise ValueError(f"mix weights must be > 0, got {cfg.mix}")
    s = cfg.synth
    if s.length < 1 or not 1 <= s.min_objects <= s.max_objects:
        raise ValueError(
            "synth needs length >= 1 and 1 <= min_objects <= max_objects, got "
            f"{s.length}, {s.min_objects}, {s.max_objects}"
        )


def _at_least(cfg: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_optim_config(cfg: OptimConfig) -> None:
    """Ranges of the optimiser and schedule (a negative lr would train uphill)."""
    _at_least(cfg, 1, "epochs", "iters_per_epoch")
    _at_least(cfg, 0, "start_lr", "final_lr", "warmup_epochs", "weight_decay")
    if cfg.lr <= 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if cfg.warmup_epochs > cfg.epochs:
        raise ValueError(f"warmup_epochs {cfg.warmup_epochs} is longer than epochs {cfg.epochs}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {cfg.betas}")
    if cfg.eps <= 0:
        raise ValueError(f"eps must be > 0, got {cfg.eps}")
    if cfg.clip_grad is not None and cfg.clip_grad <= 0:
        raise ValueError(f"clip_grad must be > 0 (or null for none), got {cfg.clip_grad}")
    if not 0 <= cfg.ema <= 1:
        raise ValueError(f"ema must be in [0, 1] (the teacher's momentum), got {cfg.ema}")


def check_train_config(cfg: TrainConfig) -> None:
    """Intervals are step counts (0 would divide by zero); ``snapshot_every: 0`` means none."""
    _at_least(cfg, 1, "log_every", "checkpoint_every")
    _at_least(cfg, 0, "snapshot_every", "seed")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {cfg.device!r}")


def check_monitor_config(cfg: MonitorConfig) -> None:
    """Ranges of the monitor: a probe needs at least two clips to fit and two to score."""
    _at_least(cfg, 0, "every", "min_rank", "min_std", "seed")
    _at_least(cfg, 4, "clips")
    _at_least(cfg, 1, "knn_k")


def check_tracking_config(cfg: TrackingConfig) -> None:
    """A sink named twice would get every record twice."""
    twice = sorted({name for name in cfg.sinks if cfg.sinks.count(name) > 1})
    if twice:
        raise ValueError(f"sinks lists {', '.join(twice)} more than once")
    if not cfg.wandb_project.strip():
        raise ValueError("wandb_project must not be empty")


def built(where: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``build``; its ``ValueError`` becomes a one-line ``ConfigError`` naming ``where``."""
    try:
        return build(*args, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}".replace("\n", " ")) from exc


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config trees."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += config_diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += config_diff(x, y, f"{prefix}.{i}")
        return out
    return [] if a == b else [prefix]
