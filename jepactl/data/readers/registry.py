"""The reader registry, and where a reader finds its data.

:data:`READERS` maps each reader name (the recipe's ``data.source`` names) to its function,
:data:`TREES` to the layout it expects. :func:`read_dataset` finds the root: an explicit one
(the recipe's ``data.roots.<name>`` or ``--set data.roots.<name>=/path``), else
``$JEPACTL_DATA/<name>`` for the four official datasets (``ucf101/``, ``ssv2/``,
``diving48/``, ``imagenet100/``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jepactl.data.readers.common import DatasetIndex, DatasetLayoutError, PathLike, as_path
from jepactl.data.readers.csvfile import CSV_TREE, csv_index
from jepactl.data.readers.diving import DIVING48_TREE, diving48
from jepactl.data.readers.folders import FOLDERS_TREE, class_folders
from jepactl.data.readers.in100 import IMAGENET100_TREE, imagenet100
from jepactl.data.readers.something_something import SSV2_TREE, ssv2
from jepactl.data.readers.ucf import UCF101_TREE, ucf101
from jepactl.errors import ConfigError
from jepactl.utils import suggestion

DATA_ENV = "JEPACTL_DATA"

READERS: dict[str, Callable[..., DatasetIndex]] = {
    "ucf101": ucf101,
    "ssv2": ssv2,
    "diving48": diving48,
    "imagenet100": imagenet100,
    "csv": csv_index,
    "folders": class_folders,
}

TREES: dict[str, str] = {
    "ucf101": UCF101_TREE,
    "ssv2": SSV2_TREE,
    "diving48": DIVING48_TREE,
    "imagenet100": IMAGENET100_TREE,
    "csv": CSV_TREE,
    "folders": FOLDERS_TREE,
}

# Readers that ``$JEPACTL_DATA/<folder>`` can locate.
ENV_FOLDERS: dict[str, str] = {
    "ucf101": "ucf101",
    "ssv2": "ssv2",
    "diving48": "diving48",
    "imagenet100": "imagenet100",
}


def _reader(name: str) -> Callable[..., DatasetIndex]:
    if name not in READERS:
        raise ConfigError(f"unknown dataset reader '{name}'{suggestion(name, READERS)}")
    return READERS[name]


def data_root(name: str, root: PathLike | None = None) -> Path:
    """Where reader ``name`` reads: ``root`` if given, else ``$JEPACTL_DATA/<name>``.

    Raises :class:`DatasetLayoutError` when neither is set, or when the ``JEPACTL_DATA``
    folder has no ``<name>`` sub-folder; the message says how to point jepactl at the data.
    """
    _reader(name)
    if root is not None and os.fspath(root) != "":
        return as_path(root)
    tree = TREES[name]
    what = "CSV file" if name == "csv" else "data root"
    example = "/path/to/index.csv" if name == "csv" else f"/path/to/{name}"
    how = f"set data.roots.{name} in the recipe, pass --set data.roots.{name}={example}"
    env = os.environ.get(DATA_ENV, "")
    if name not in ENV_FOLDERS:
        raise DatasetLayoutError(
            f"{name}: no {what} given; {how} ({DATA_ENV} only locates {', '.join(ENV_FOLDERS)})",
            tree=tree,
        )
    if not env:
        raise DatasetLayoutError(
            f"{name}: no {what} given; {how}, or export {DATA_ENV}=/data to read "
            f"/data/{ENV_FOLDERS[name]}",
            tree=tree,
        )
    path = as_path(env) / ENV_FOLDERS[name]
    if not path.is_dir():
        raise DatasetLayoutError(
            f"{name}: {path} does not exist (looked there because {DATA_ENV}={env}); "
            f"put the data there or {how}",
            path=path,
            tree=tree,
        )
    return path


def read_dataset(name: str, root: PathLike | None, **kwargs: Any) -> DatasetIndex:
    """Index dataset ``name`` (a key of :data:`READERS`) found at ``root`` (see :func:`data_root`).

    ``kwargs`` go to the reader (``split``, ``fold``, ``classes`` ...); for ``csv``, ``root``
    is the CSV file and relative rows resolve against its folder (call :func:`csv_index`
    directly for another base). Unknown readers and options are a :class:`ConfigError` with
    the nearest valid name.
    """
    reader = _reader(name)
    options = list(inspect.signature(reader).parameters)[1:]
    for key in kwargs:
        if key not in options:
            raise ConfigError(
                f"dataset reader '{name}' has no option '{key}'{suggestion(key, options)}"
            )
    return reader(data_root(name, root), **kwargs)
