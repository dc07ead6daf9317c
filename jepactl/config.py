"""Recipes: YAML files with ``_base_`` inheritance, dotted ``--set`` overrides and a typed schema.

A recipe is validated against the dataclasses below *before any work starts*: an unknown key
or a value of the wrong type is a one-line :class:`ConfigError` that names the nearest valid
key. Objective terms and mask strategies carry their own parameters; those are validated
against the constructor signature of the registered class (see :func:`validate_kwargs`).

Resolution order: the ``_base_`` files (depth first, in list order), then the recipe itself,
then each ``--set a.b=c`` in order. Dicts merge key by key; any other value (lists included)
replaces what was there. Setting an objective term to ``false`` removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import types
import typing
from collections import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from jepactl.errors import ConfigError
from jepactl.utils import close_match, suggestion

__all__ = ["ConfigError"]  # re-exported: the error type recipes raise


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------


@dataclass
class PaperRef:
    """Where a recipe's numbers appear in the paper."""

    table: str = ""
    row: str = ""


@dataclass
class ModelConfig:
    """Encoder and predictor (paper Table 1)."""

    preset: str = "base"  # encoder size, see jepactl.models.ENCODER_PRESETS
    patch_size: int = 16
    tubelet: int = 2
    rope_theta: float = 10000.0
    drop_path: float = 0.0
    # V-JEPA 2.1 "deep supervision": output the concatenation of several blocks, each with its
    # own LayerNorm (blocks 3, 6, 9, 12 for ViT-B when `deep_supervision_blocks` is empty).
    deep_supervision: bool = False
    deep_supervision_blocks: list[int] = field(default_factory=list)
    pred_depth: int = 8
    pred_dim: int = 256
    pred_heads: int = 8
    pred_embed: Literal["linear", "mlp"] = "linear"
    # The reference shares one mask token between all mask groups; >1 gives each group its own.
    pred_mask_tokens: int = 1
    # Initialise the student (and teacher) encoder from this checkpoint file before step 0
    # (`pretrain --init-from`; any layout of jepactl.models.upstream, docs/checkpoints.md).
    init_from: str = ""
    # What public checkpoints' encoders need to be reproduced exactly (docs/checkpoints.md);
    # `--init-from` sets them from the file. positions: rope (ours), rope-vjepa2 (V-JEPA 2's
    # frequency layout) or sincos (V-JEPA 1's frozen table on the grid `pos_grid` [t, h, w]);
    # rope_grid: V-JEPA 2.1's interpolate_rope grid (0: off); k_bias: a trained key bias.
    positions: Literal["rope", "rope-vjepa2", "sincos"] = "rope"
    pos_grid: list[int] = field(default_factory=list)
    rope_grid: int = 0
    k_bias: bool = False


@dataclass
class SynthDataConfig:
    """The built-in procedural source (no download)."""

    length: int = 1_000_000
    min_objects: int = 1
    max_objects: int = 3


#: Other names of datasets, accepted wherever a dataset is named (``data.source``, the keys of
#: ``data.mix`` and ``data.roots``, ``--root``, ``data check``) and read as the name they map
#: to: the one the evaluation tasks use.
DATASET_ALIASES: dict[str, str] = {"imagenet100": "in100"}


def canonical_dataset(name: str) -> str:
    """A dataset's name in jepactl's one vocabulary (``imagenet100`` -> ``in100``)."""
    return DATASET_ALIASES.get(name, name)


def canonical_data_names(config: Any) -> Any:
    """A copy of a raw recipe dict (a run's saved ``config.yaml``) with the dataset aliases of
    ``data.source``, ``data.mix`` and ``data.roots`` replaced by their names, so a run saved
    with ``imagenet100`` compares equal to the same recipe saved with ``in100``."""
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        return config
    data = dict(config["data"])
    if isinstance(data.get("source"), str):
        data["source"] = canonical_dataset(data["source"])
    for key in ("mix", "roots"):
        if isinstance(data.get(key), dict):
            data[key] = {canonical_dataset(str(k)): v for k, v in data[key].items()}
    return {**config, "data": data}


@dataclass
class DataConfig:
    """Where clips come from and how they are cut (pretraining).

    ``source``: ``synth`` (built-in), a dataset reader (``ucf101``, ``ssv2``, ``diving48``,
    ``in100`` (alias ``imagenet100``), ``csv``, ``folders``; see ``docs/data.md``), or
    ``mixed``: a mixture of readers with the weights in ``mix``, sampled with replacement.
    Dataset roots come from ``roots.<name>`` (for ``csv``: the index file), else, for the
    four official datasets,
    ``$JEPACTL_DATA/<name>``.
    """

    source: str = "synth"
    roots: dict[str, str] = field(default_factory=dict)
    mix: dict[str, float] = field(default_factory=dict)
    split: str = "train"
    fold: int = 1  # UCF-101 split list (1, 2 or 3)
    num_frames: int = 16
    frame_stride: int = 2
    crop: int = 224
    decode_short_side: int = 256  # frames are resized to this short side while decoding
    scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  # random resized crop
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.35])
    flip: float = 0.5
    # Images: one-frame clips through the tubelet-1 path (paper App. D), or `repeat`ed to
    # num_frames static frames (what the reference code does).
    images: Literal["frame", "repeat"] = "frame"
    max_bad_fraction: float = 0.01  # stop when more of the samples drawn so far fail to decode
    batch_size: int = 32  # global, split evenly over ranks
    num_workers: int = 2
    synth: SynthDataConfig = field(default_factory=SynthDataConfig)


@dataclass
class OptimConfig:
    """AdamW, per-step warm-up then cosine (or constant, as the reference code really runs)."""

    epochs: int = 100
    iters_per_epoch: int = 300
    lr: float = 6e-4
    start_lr: float = 1e-4
    final_lr: float = 1e-6
    warmup_epochs: float = 1.0
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.04
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    clip_grad: float | None = None
    ema: float = 0.99925


@dataclass
class ObjectiveConfig:
    """Loss terms, by registry name, each with its own parameters (``weight`` and friends).

    ``teacher: none`` is the paper's "EMA disabled" (UCF-101 kinematic and SIGReg-no-EMA
    runs): no EMA encoder exists, the targets are the online student's full-clip output, with a
    stop-gradient (paper Eq. 1) unless ``stopgrad_targets: false`` (the reference code, where
    gradient flows through both branches). Evaluation then uses the student, the only encoder
    that trained.
    """

    teacher: Literal["ema", "none"] = "ema"
    stopgrad_targets: bool = True
    # ``name: {}`` (or an empty value) uses the term's defaults; ``name: false`` removes a term
    # that a ``_base_`` recipe added.
    terms: dict[str, dict[str, Any] | bool | None] = field(default_factory=dict)


@dataclass
class TrainConfig:
    seed: int = 0
    # auto: bf16 autocast on CUDA, fp32 on CPU, where a bf16-autocast step measured no faster
    # than fp32 with AVX-512 bf16 and 12.9x slower without it (docs/performance.md).
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 10
    checkpoint_every: int = 300  # steps between writes of checkpoints/latest.pt
    snapshot_every: int = 0  # steps between kept snapshots (0 = none)
    # recompute the student's and predictor's block activations in the backward pass: the
    # same losses and gradients, less activation memory, about one more forward per step
    activation_checkpointing: bool = False


@dataclass
class MonitorConfig:
    """What pretraining watches, to show whether the encoder is learning or collapsing
    (``docs/monitoring.md``). Every ``every`` steps, and once at step 0 (the untrained
    control), the encoder evaluation would use (the EMA teacher, else the student) encodes a
    fixed labelled set of ``clips`` synthetic clips of ``task`` at the recipe's frames and crop
    (the first half to fit, the second to score). ``metrics.jsonl`` gets RankMe, per-dimension
    std and mean pairwise cosine of the ``pool``-pooled features, the accuracy of a k-NN
    (``knn_k`` neighbours, cosine) and of a logistic regression on them, and, at step 0, the
    same probes on raw pixels. A warning is printed when RankMe falls below ``min_rank`` or the
    normalised std below ``min_std`` (dimensional collapse). It never changes what trains.
    """

    every: int = 0  # steps between checks; 0 = off
    task: str = "shapes"
    clips: int = 256
    pool: Literal["mean", "space2x2"] = "mean"
    knn_k: int = 20
    min_rank: float = 2.0
    min_std: float = 0.05
    seed: int = 0  # of the labelled set, independent of train.seed


#: The metric sinks ``tracking.sinks`` may name (``jepactl.train.sinks.SINKS`` opens them).
SinkName = Literal["tensorboard", "wandb"]


@dataclass
class TrackingConfig:
    """Where pretraining's metrics go besides ``RUN/metrics.jsonl``, which stays the record
    (``docs/tracking.md``). Each sink gets a copy of every line written there, on rank 0:
    ``tensorboard`` writes event files to ``RUN/tensorboard/``, ``wandb`` logs a Weights &
    Biases run in project ``wandb_project`` (``WANDB_MODE=offline`` needs no network).
    """

    sinks: list[SinkName] = field(default_factory=list)
    wandb_project: str = "jepactl"


@dataclass
class Recipe:
    display_name: str = ""
    # "paper" (the method as written) or "reference" (the paper's code as run: every reference
    # switch set by jepactl.profiles when the recipe is loaded; recorded so the run says so)
    profile: Literal["paper", "reference"] = "paper"
    description: str = ""
    paper: PaperRef = field(default_factory=PaperRef)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masks: list[dict[str, Any]] = field(default_factory=list)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def autocast_bf16(precision: str, device_type: str) -> bool:
    """Whether ``train.precision`` means bf16 autocast on this kind of device."""
    return precision == "bf16" or (precision == "auto" and device_type == "cuda")


#: Settings of how a run executes rather than what it computes: a resumed run may change them
#: (another machine, more workers) without --force.
RUNTIME_KEYS = frozenset(
    {
        "data.num_workers",
        "train.device",
        "train.log_every",
        "train.checkpoint_every",
        "train.snapshot_every",
        "train.activation_checkpointing",
        # watching a run never changes what it trains
        *(f"monitor.{f.name}" for f in dataclasses.fields(MonitorConfig)),
        # nor does where its metrics are copied to
        *(f"tracking.{f.name}" for f in dataclasses.fields(TrackingConfig)),
    }
)


# --------------------------------------------------------------------------------------
# Locating recipes
# --------------------------------------------------------------------------------------

RECIPE_SUFFIX = ".yaml"


def recipes_root() -> Path:
    """The directory holding the shipped recipes (package data, also after ``pip install .``).

    ``JEPACTL_RECIPES`` points elsewhere, e.g. at a lab's own recipe collection.
    """
    env = os.environ.get("JEPACTL_RECIPES")
    if env:
        return Path(env)
    return Path(str(resources.files("jepactl") / "recipes"))


def list_recipes(root: Path | None = None) -> list[str]:
    """Names (``single/baseline`` ...) of every runnable recipe; ``base/`` holds fragments."""
    root = root or recipes_root()
    names = [
        p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{RECIPE_SUFFIX}")
    ]
    return sorted(n for n in names if not n.startswith("base/"))


def resolve_recipe_path(name: str, root: Path | None = None) -> Path:
    """A recipe name (``mixed/baseline``) or a path to a YAML file."""
    root = root or recipes_root()
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    candidate = root / f"{name.removesuffix(RECIPE_SUFFIX)}{RECIPE_SUFFIX}"
    if candidate.is_file():
        return candidate
    close = close_match(name, list_recipes(root), cutoff=0.4)
    hint = f" Did you mean '{close}'?" if close else ""
    raise ConfigError(
        f"unknown recipe '{name}' (looked in {root}).{hint} Run `jepactl recipes` to list them."
    )


# --------------------------------------------------------------------------------------
# Loading and merging
# --------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: dicts recursively, everything else replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(path: Path, root: Path | None = None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe and its ``_base_`` chain into one plain dict (not yet validated).

    ``_base_`` entries are resolved relative to the including file, then to the recipes root.
    """
    root = root or recipes_root()
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"_base_ cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            base_path = root / base
        if not base_path.is_file():
            base_path = root / f"{base}{RECIPE_SUFFIX}"
        if not base_path.is_file():
            raise ConfigError(f"{path}: _base_ '{base}' not found next to it or under {root}")
        merged = deep_merge(merged, load_raw(base_path, root, (*_seen, path)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], value). The value is parsed as YAML (ints, floats, lists...)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(
            f"--set {text}: the value is not valid YAML ({problem}); quote it, e.g. "
            f"--set '{key}=\"...\"'"
        ) from None
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[a][b]... = value``; list elements are addressed by their index (``masks.0.x``)."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, path[: i + 1])]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, path)] = value
    else:
        node[last] = value


def _list_index(node: list[Any], part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"--set {'.'.join(path)}: '{part}' is not an index of a list of {len(node)} items"
        )
    return int(part)


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
