"""Load a recipe and validate it against the component registries.

:mod:`jepactl.config` owns the schema (typed sections, YAML includes, ``--set`` overrides) and
imports nothing of the project's models; this module is where the schema meets the
registries (``ENCODER_PRESETS``, ``TERMS``, ``MASK_STRATEGIES``). Every parameter is checked
against its class's constructor, then each component is built once so its own argument checks
run now, as one-line :class:`ConfigError` s, rather than as a traceback after a run started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jepactl.config import (
    Recipe,
    apply_override,
    built,
    canonical_data_names,
    check_data_config,
    check_monitor_config,
    check_optim_config,
    check_tracking_config,
    check_train_config,
    load_raw,
    parse_override,
    parse_recipe,
    resolve_recipe_path,
    validate_kwargs,
)
from jepactl.data.readers import READER_REGISTRY, READERS
from jepactl.data.tasks import TASKS as MONITOR_TASKS
from jepactl.errors import ConfigError
from jepactl.log import LOGGER
from jepactl.masks import MASK_REGISTRY
from jepactl.objectives import TERM_REGISTRY
from jepactl.presets import ENCODER_PRESETS, check_model_config
from jepactl.profiles import apply_recipe_profile, check_profile
from jepactl.utils import close_match, suggestion


def load_recipe(name: str, overrides: Iterable[str] = (), root: Path | None = None) -> Recipe:
    """Resolve, override and validate a recipe. Raises :class:`ConfigError` on any problem.

    A recipe whose ``profile`` is ``reference`` (its own key, or ``--set profile=reference``)
    gets every reference switch (:func:`jepactl.profiles.apply_recipe_profile`); the
    ``overrides`` are applied again after it, so a key the user set explicitly wins."""
    raw = load_raw(resolve_recipe_path(name, root), root)
    parsed = [parse_override(text) for text in overrides]
    for path, value in parsed:
        apply_override(raw, path, value)
    raw, settings = apply_recipe_profile(raw)
    if settings:
        for path, value in parsed:
            apply_override(raw, path, value)
        LOGGER.info(f"profile reference (the paper's code as run): {', '.join(settings)}")
    return recipe_from_dict(raw)


def recipe_from_dict(raw: Mapping[str, Any]) -> Recipe:
    """Parse and validate a resolved recipe dict (e.g. a run's saved ``config.yaml``).

    A dataset named by its alias (``data.mix.imagenet100=2``, an older YAML) is the dataset of
    that name (:func:`~jepactl.config.canonical_data_names`; of two entries for one dataset
    the later wins, as with any override)."""
    recipe = parse_recipe(canonical_data_names(raw))
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    """Validate the model sizes and every term's and mask strategy's parameters, in place:
    each term's and mask group's parameters are replaced by their coerced values."""
    check_profile(recipe.profile)
    if recipe.model.preset not in ENCODER_PRESETS:
        raise ConfigError(
            f"model.preset: unknown preset '{recipe.model.preset}'"
            f"{suggestion(recipe.model.preset, ENCODER_PRESETS)}"
        )
    built("model", check_model_config, recipe.model)
    built("data", check_data_config, recipe.data)
    built("optim", check_optim_config, recipe.optim)
    built("train", check_train_config, recipe.train)
    built("monitor", check_monitor_config, recipe.monitor)
    built("tracking", check_tracking_config, recipe.tracking)
    if recipe.monitor.task not in MONITOR_TASKS:
        raise ConfigError(
            f"monitor.task: unknown task '{recipe.monitor.task}'"
            f"{suggestion(recipe.monitor.task, MONITOR_TASKS)}"
        )
    _validate_data(recipe)
    _validate_terms(recipe)
    _validate_masks(recipe)


#: What ``data.source`` may name: the built-in generator, a mixture, or one built-in dataset
#: reader (or a plugin reader: :data:`~jepactl.data.readers.READER_REGISTRY`).
DATA_SOURCES: tuple[str, ...] = ("synth", "mixed", *READERS)


def _validate_data(recipe: Recipe) -> None:
    """``data.source`` and the dataset names of ``data.mix`` and ``data.roots`` (already in
    the one vocabulary: :func:`recipe_from_dict` maps aliases such as ``imagenet100``)."""
    data = recipe.data
    if READER_REGISTRY.is_plugin(data.source):  # module:function, or an installed entry point
        READER_REGISTRY.get(data.source, "data.source")  # imports it: a failure is one line
    elif data.source not in DATA_SOURCES:
        sources = [*DATA_SOURCES, *READER_REGISTRY.plugins()]
        raise ConfigError(
            f"data.source: unknown source '{data.source}'{_named(data.source, sources)}"
        )
    for key in ("mix", "roots"):
        for name in getattr(data, key):
            if name not in READER_REGISTRY:
                readers = READER_REGISTRY.names()
                raise ConfigError(f"data.{key}.{name}: unknown dataset{_named(name, readers)}")
            READER_REGISTRY.get(name, f"data.{key}.{name}")


def _named(name: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'? (valid: a, b, c)"``: the close match and every valid name, in
    their own order."""
    valid = list(valid)
    close = close_match(name, valid)
    return (f"; did you mean '{close}'?" if close else "") + f" (valid: {', '.join(valid)})"


def _validate_terms(recipe: Recipe) -> None:
    if not recipe.objective.terms:
        raise ConfigError("objective.terms is empty: a recipe needs at least one loss term")
    for name, params in recipe.objective.terms.items():
        if not isinstance(params, Mapping):  # parse_recipe made every kept entry a dict
            raise TypeError(
                f"objective.terms.{name} is {params!r}, not a mapping of parameters "
                "(recipes must go through jepactl.config.parse_recipe)"
            )
        kind = str(params.get("type", name))
        where = f"objective.terms.{name}"
        cls = TERM_REGISTRY.get(kind, where)  # a built-in, an entry point, or module:Class
        coerced = validate_kwargs(cls, {k: v for k, v in params.items() if k != "type"}, where)
        built(where, cls, **coerced)
        recipe.objective.terms[name] = {**({"type": kind} if "type" in params else {}), **coerced}


def _validate_masks(recipe: Recipe) -> None:
    if not recipe.masks:
        raise ConfigError("masks is empty: a recipe needs at least one mask group")
    for i, spec in enumerate(recipe.masks):
        kind = str(spec.get("strategy"))
        cls = MASK_REGISTRY.get(kind, f"masks.{i}.strategy")
        rest = {k: v for k, v in spec.items() if k != "strategy"}
        coerced = validate_kwargs(cls, rest, f"masks.{i}")
        built(f"masks.{i}", cls, **coerced)
        recipe.masks[i] = {"strategy": kind, **coerced}
