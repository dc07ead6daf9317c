"""The class-folders reader: any folder of class folders (the sorted names are the classes).

For datasets without an official reader: ``<root>/<class>/<file>``, optionally one such tree
per split (``<root>/train``, ``<root>/val``). See :func:`class_folders` for the tree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from jepactl.data.readers.common import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DatasetIndex,
    Entry,
    Layout,
    PathLike,
    as_path,
)

FOLDERS_TREE = """\
<root>/
  <class_a>/                # class folders, sorted by name -> labels 0, 1, ...
    clip_0001.mp4           # video or image files (see `extensions`), any case
    ...
  <class_b>/
    ...
"""


def class_folders(
    root: PathLike,
    extensions: Sequence[str] = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS,
    name: str = "folders",
    split: str | None = None,
) -> DatasetIndex:
    """A folder of class folders: the sorted folder names are the classes (labels 0, 1, ...).

    ::

        <root>/
          <class_a>/                # class folders, sorted by name -> labels 0, 1, ...
            clip_0001.mp4           # video or image files (see `extensions`), any case
            ...
          <class_b>/
            ...

    Only the files directly in each class folder count (no recursion); hidden folders are
    skipped, an empty class folder keeps its label. ``kind`` is ``"image"`` when every file is
    an image (:data:`IMAGE_EXTENSIONS`), else ``"video"``. ``id`` is ``<class>/<file stem>``.

    Args:
        root: the folder of class folders.
        extensions: the file extensions to index (any case).
        name: the index's name (in logs and reports).
        split: read ``<root>/<split>`` when that folder exists. Without it, ``train`` reads
            ``<root>`` itself (so ``data.split: train``, the default, works on a plain folder
            of class folders) and any other split is an error (never train data as val);
            ``None`` reads ``<root>`` and records the split as ``"all"``.
    """
    layout = Layout(name, FOLDERS_TREE)
    base = as_path(root)
    layout.require_dir(base)
    folder = _split_folder(layout, base, split)
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    classes = sorted(layout.subdirs(folder))
    if not classes:
        raise layout.error(f"no class folders in {folder}", folder)
    entries: list[Entry] = []
    all_images = True
    for label, cls in enumerate(classes):
        for file in sorted(layout.names(folder / cls)):
            stem, ext = os.path.splitext(file)
            if ext.lower() in exts:
                all_images = all_images and ext.lower() in IMAGE_EXTENSIONS
                entries.append(Entry(str(folder / cls / file), label, f"{cls}/{stem}"))
    if not entries:
        raise layout.error(
            f"no files with extension {', '.join(sorted(exts))} in the class folders of {folder}",
            folder,
        )
    kind: Literal["video", "image"] = "image" if all_images else "video"
    return DatasetIndex(name, base, split or "all", entries, classes, kind)


def _split_folder(layout: Layout, base: Path, split: str | None) -> Path:
    """``<root>/<split>`` when it exists; ``<root>`` for ``train`` or no split; else an error."""
    if split is not None and split in layout.subdirs(base):
        return base / split
    if split not in (None, "train"):
        raise layout.error(f"no {split}/ folder in {base}", base / split)
    return base
