"""Recipes: YAML files with ``_base_`` inheritance, dotted ``--set`` overrides and a typed schema.

A recipe is validated against the dataclasses of :mod:`jepactl.config.schema` *before any work
starts*: an unknown key or a value of the wrong type is a one-line :class:`ConfigError` that
names the nearest valid key. Objective terms and mask strategies carry their own parameters;
those are validated against the constructor signature of the registered class (see
:func:`validate_kwargs`).

Resolution order: the ``_base_`` files (depth first, in list order), then the recipe itself,
then each ``--set a.b=c`` in order. Dicts merge key by key; any other value (lists included)
replaces what was there. Setting an objective term to ``false`` removes it.

The package is cut along those steps: :mod:`jepactl.config.schema` (the typed sections and
the dataset aliases), :mod:`jepactl.config.loading` (finding recipes, ``_base_`` merging,
``--set``) and :mod:`jepactl.config.validation` (type checks with suggestions, constructor
parameters, range checks, ``to_dict``/``dump_yaml``, config diffs). Every public name is
re-exported here, so ``from jepactl.config import X`` is the way to import them. Like this
module, the three import nothing of the project but :mod:`jepactl.errors` and
:mod:`jepactl.utils` (test_layout enforces it for ``jepactl.config``).
"""

from __future__ import annotations

from jepactl.config.loading import (
    RECIPE_SUFFIX,
    apply_override,
    deep_merge,
    list_recipes,
    load_raw,
    parse_override,
    recipes_root,
    resolve_recipe_path,
)
from jepactl.config.schema import (
    DATASET_ALIASES,
    RUNTIME_KEYS,
    DataConfig,
    ModelConfig,
    MonitorConfig,
    ObjectiveConfig,
    OptimConfig,
    PaperRef,
    Recipe,
    SinkName,
    SynthDataConfig,
    TrackingConfig,
    TrainConfig,
    autocast_bf16,
    canonical_data_names,
    canonical_dataset,
)
from jepactl.config.validation import (
    built,
    check_data_config,
    check_monitor_config,
    check_optim_config,
    check_tracking_config,
    check_train_config,
    config_diff,
    dump_yaml,
    from_dict,
    parse_recipe,
    to_dict,
    validate_kwargs,
)
from jepactl.errors import ConfigError  # re-exported: the error type recipes raise

__all__ = [
    "DATASET_ALIASES",
    "RECIPE_SUFFIX",
    "RUNTIME_KEYS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "MonitorConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "PaperRef",
    "Recipe",
    "SinkName",
    "SynthDataConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_override",
    "autocast_bf16",
    "built",
    "canonical_data_names",
    "canonical_dataset",
    "check_data_config",
    "check_monitor_config",
    "check_optim_config",
    "check_tracking_config",
    "check_train_config",
    "config_diff",
    "deep_merge",
    "dump_yaml",
    "from_dict",
    "list_recipes",
    "load_raw",
    "parse_override",
    "parse_recipe",
    "recipes_root",
    "resolve_recipe_path",
    "to_dict",
    "validate_kwargs",
]
