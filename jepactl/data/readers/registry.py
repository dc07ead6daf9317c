"""The reader registry, and where a reader finds its data.

:data:`READERS` maps each built-in reader name (the recipe's ``data.source`` names) to its
function, :data:`TREES` to the layout it expects. :data:`READER_REGISTRY` adds readers from
outside the package (:mod:`jepactl.plugins`): an installed package's ``jepactl.readers`` entry
point, or a dotted path ``mylab.data:clips``. A reader is a function
``(root, split=..., **options) -> DatasetIndex``; its ``tree`` attribute (else its docstring)
is the layout it expects.

:func:`read_dataset` finds the root: an explicit one (the recipe's ``data.roots.<name>`` or
``--set data.roots.<name>=/path``; a command's ``--root <name>=/path``), else
``$JEPACTL_DATA/<name>`` for the four official datasets (``ucf101/``, ``ssv2/``, ``diving48/``,
``in100/``; ``imagenet100/`` is also looked at).

Dataset names are the same everywhere (recipes, ``--root``, ``data check``, the evaluation
tasks): ``ucf101``, ``ssv2``, ``diving48``, ``in100``, ``csv``, ``folders``. ``imagenet100``
is accepted as an alias of ``in100`` (:data:`jepactl.config.DATASET_ALIASES`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jepactl.config import canonical_dataset
from jepactl.data.readers.common import (
    DatasetIndex,
    DatasetLayoutError,
    DatasetsLayoutError,
    PathLike,
    as_path,
)
from jepactl.data.readers.csvfile import CSV_TREE, csv_index
from jepactl.data.readers.diving import DIVING48_TREE, diving48
from jepactl.data.readers.folders import FOLDERS_TREE, class_folders
from jepactl.data.readers.in100 import IMAGENET100_TREE, imagenet100
from jepactl.data.readers.something_something import SSV2_TREE, ssv2
from jepactl.data.readers.ucf import UCF101_TREE, ucf101
from jepactl.errors import ConfigError
from jepactl.plugins import GROUPS, Registry
from jepactl.utils import suggestion

DATA_ENV = "JEPACTL_DATA"

READERS: dict[str, Callable[..., DatasetIndex]] = {
    "ucf101": ucf101,
    "ssv2": ssv2,
    "diving48": diving48,
    "in100": imagenet100,
    "csv": csv_index,
    "folders": class_folders,
}

TREES: dict[str, str] = {
    "ucf101": UCF101_TREE,
    "ssv2": SSV2_TREE,
    "diving48": DIVING48_TREE,
    "in100": IMAGENET100_TREE,
    "csv": CSV_TREE,
    "folders": FOLDERS_TREE,
}

Reader = Callable[..., DatasetIndex]

#: Built-in readers, entry points of ``jepactl.readers``, and ``module:function`` paths.
READER_REGISTRY: Registry[Reader] = Registry(
    "dataset reader", GROUPS["readers"], READERS, kind="function"
)

#: Readers that ``$JEPACTL_DATA/<folder>`` can locate, with the folder names looked at in
#: order (ImageNet-100's folder may keep its long name).
ENV_FOLDERS: dict[str, tuple[str, ...]] = {
    "ucf101": ("ucf101",),
    "ssv2": ("ssv2",),
    "diving48": ("diving48",),
    "in100": ("in100", "imagenet100"),
}

#: Who asks for a dataset, and so how the user points jepactl at it: a recipe (pretraining,
#: ``data.roots``) or a command's ``--root NAME=PATH`` (``data check``, evaluation).
RootHint = str
RECIPE_HINT: RootHint = "recipe"
OPTION_HINT: RootHint = "option"


def how_to_point(name: str, hint: RootHint = RECIPE_HINT) -> str:
    """The words that tell the user how to give dataset ``name``'s root, in the vocabulary of
    whoever asked (a recipe key, or the ``--root`` option that command really has)."""
    example = "/path/to/index.csv" if name == "csv" else f"/path/to/{name}"
    if hint == OPTION_HINT:
        return f"pass --root {name}={example}"
    return f"set data.roots.{name} in the recipe or pass --set data.roots.{name}={example}"


def _reader(name: str) -> Reader:
    return READER_REGISTRY.get(canonical_dataset(name), "dataset")


def reader_tree(name: str) -> str:
    """The layout reader ``name`` expects: a built-in's tree, a plugin's ``tree`` attribute or
    else the first paragraph of its docstring."""
    name = canonical_dataset(name)
    if name in TREES:
        return TREES[name]
    reader = _reader(name)
    tree = getattr(reader, "tree", None) or (reader.__doc__ or "").strip().split("\n\n")[0]
    return str(tree)


def data_root(name: str, root: PathLike | None = None, hint: RootHint = RECIPE_HINT) -> Path:
    """Where reader ``name`` reads: ``root`` if given, else ``$JEPACTL_DATA/<name>``.

    Raises :class:`DatasetLayoutError` when neither is set, or when the ``JEPACTL_DATA``
    folder has no ``<name>`` sub-folder; the message says how to point jepactl at the data
    (``hint``: :data:`RECIPE_HINT` or :data:`OPTION_HINT`, see :func:`how_to_point`).
    """
    tree = reader_tree(name)
    name = canonical_dataset(name)
    if root is not None and os.fspath(root) != "":
        return as_path(root)
    what = "CSV file" if name == "csv" else "data root"
    how = how_to_point(name, hint)
    env = os.environ.get(DATA_ENV, "")
    if name not in ENV_FOLDERS:
        raise DatasetLayoutError(
            f"{name}: no {what} given; {how} ({DATA_ENV} only locates {', '.join(ENV_FOLDERS)})",
            tree=tree,
        )
    folders = ENV_FOLDERS[name]
    if not env:
        raise DatasetLayoutError(
            f"{name}: no {what} given; {how}, or export {DATA_ENV}=/data to read "
            f"/data/{folders[0]}",
            tree=tree,
        )
    candidates = [as_path(env) / folder for folder in folders]
    found = [p for p in candidates if p.is_dir()]
    if not found:
        looked = " or ".join(str(p) for p in candidates)
        raise DatasetLayoutError(
            f"{name}: {looked} does not exist (looked there because {DATA_ENV}={env}); "
            f"put the data there or {how}",
            path=candidates[0],
            tree=tree,
        )
    return found[0]


def read_dataset(
    name: str, root: PathLike | None, *, hint: RootHint = RECIPE_HINT, **kwargs: Any
) -> DatasetIndex:
    """Index dataset ``name`` (a name :data:`READER_REGISTRY` knows, or an alias such as
    ``imagenet100``) found at ``root`` (see :func:`data_root`; ``hint`` words its error for a
    recipe or for a command's ``--root``).

    ``kwargs`` go to the reader (``split``, ``fold``, ``classes`` ...); for ``csv``, ``root``
    is the CSV file and relative rows resolve against its folder (call :func:`csv_index`
    directly for another base). Unknown readers and options are a :class:`ConfigError` with
    the nearest valid name.
    """
    reader = _reader(name)
    params = list(inspect.signature(reader).parameters.values())[1:]
    options = [p.name for p in params if p.kind is not p.VAR_KEYWORD]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    for key in kwargs:
        if key not in options and not takes_any:
            raise ConfigError(
                f"dataset reader '{name}' has no option '{key}'{suggestion(key, options)}"
            )
    return reader(data_root(name, root, hint), **kwargs)


def read_datasets(
    requests: Mapping[str, Mapping[str, Any]],
    roots: Mapping[str, PathLike | None],
    hint: RootHint = RECIPE_HINT,
) -> dict[str, DatasetIndex]:
    """Index several datasets (``requests``: name -> reader options) at their ``roots``.

    Raises:
        DatasetLayoutError: the one dataset asked for cannot be read (its own error), or
            :class:`DatasetsLayoutError` listing *every* dataset that cannot be read, each with
            the path looked at and the layout expected.
    """
    out: dict[str, DatasetIndex] = {}
    errors: list[DatasetLayoutError] = []
    for name, options in requests.items():
        try:
            out[name] = read_dataset(name, roots.get(name), hint=hint, **options)
        except DatasetLayoutError as exc:
            errors.append(exc)
    if len(errors) == 1 and len(requests) == 1:
        raise errors[0]
    if errors:
        raise DatasetsLayoutError(errors, len(requests))
    return out
