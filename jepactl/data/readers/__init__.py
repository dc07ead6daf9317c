"""Readers for the official dataset layouts: index a dataset, check its layout, decode nothing.

A reader turns a dataset root into a :class:`DatasetIndex`: the ``(path, label, id)`` of every
sample of one split, the class names, and the listed files that are not on disk. It reads only
the annotation files and one directory listing per folder (never a ``stat`` per sample), so a
200k-entry split indexes in about a second, and it fails *before any training* with a
:class:`DatasetLayoutError` that names the path it looked at and shows the tree it expected.

What is an error and what is not:

* a missing root, annotation file or class folder, an annotation line that does not parse,
  or an annotation that names a class the label map does not know: :class:`DatasetLayoutError`;
* a wrong split, fold, reader name or reader option: :class:`~jepactl.errors.ConfigError`
  (one line, with the nearest valid value);
* a listed file that is not on disk is *not* an error (real datasets miss a few files): it is
  left out of ``entries`` and recorded in ``DatasetIndex.missing``, for the data-check command
  and the loader's bad-sample accounting. Only when *none* of the listed files exists is the
  root wrong, and that is a :class:`DatasetLayoutError`.

:func:`read_dataset` finds the root: an explicit one (the recipe's ``data.roots.<name>`` or
``--set data.roots.<name>=/path``), else ``$JEPACTL_DATA/<name>`` for the four official
datasets (``ucf101/``, ``ssv2/``, ``diving48/``, ``in100/``). Dataset names are the same in
every command; ``imagenet100`` is an alias of ``in100``.

The modules:

* :mod:`~jepactl.data.readers.common`: :class:`Entry`, :class:`DatasetIndex`,
  :class:`DatasetLayoutError`, the file extensions and the layout helpers every reader uses;
* one module per reader: :mod:`~jepactl.data.readers.ucf` (:func:`ucf101`),
  :mod:`~jepactl.data.readers.something_something` (:func:`ssv2`),
  :mod:`~jepactl.data.readers.diving` (:func:`diving48`),
  :mod:`~jepactl.data.readers.in100` (:func:`imagenet100`),
  :mod:`~jepactl.data.readers.csvfile` (:func:`csv_index`) and
  :mod:`~jepactl.data.readers.folders` (:func:`class_folders`);
* :mod:`~jepactl.data.readers.registry`: :data:`READERS`, :data:`TREES`, :func:`data_root`
  and :func:`read_dataset`.
"""

from __future__ import annotations

from jepactl.data.readers.common import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DatasetIndex,
    DatasetLayoutError,
    DatasetsLayoutError,
    Entry,
    PathLike,
    compact_tree,
)
from jepactl.data.readers.csvfile import CSV_TREE, csv_index
from jepactl.data.readers.diving import DIVING48_TREE, diving48
from jepactl.data.readers.folders import FOLDERS_TREE, class_folders
from jepactl.data.readers.in100 import IMAGENET100_TREE, imagenet100, imagenet100_classes
from jepactl.data.readers.registry import (
    DATA_ENV,
    ENV_FOLDERS,
    OPTION_HINT,
    READER_REGISTRY,
    READERS,
    RECIPE_HINT,
    TREES,
    data_root,
    how_to_point,
    read_dataset,
    read_datasets,
    reader_tree,
)
from jepactl.data.readers.something_something import SSV2_TREE, ssv2
from jepactl.data.readers.ucf import UCF101_TREE, ucf101

__all__ = [
    "CSV_TREE",
    "DATA_ENV",
    "DIVING48_TREE",
    "ENV_FOLDERS",
    "FOLDERS_TREE",
    "IMAGENET100_TREE",
    "IMAGE_EXTENSIONS",
    "OPTION_HINT",
    "READERS",
    "READER_REGISTRY",
    "RECIPE_HINT",
    "SSV2_TREE",
    "TREES",
    "UCF101_TREE",
    "VIDEO_EXTENSIONS",
    "DatasetIndex",
    "DatasetLayoutError",
    "DatasetsLayoutError",
    "Entry",
    "PathLike",
    "class_folders",
    "compact_tree",
    "csv_index",
    "data_root",
    "diving48",
    "how_to_point",
    "imagenet100",
    "imagenet100_classes",
    "read_dataset",
    "read_datasets",
    "reader_tree",
    "ssv2",
    "ucf101",
]
