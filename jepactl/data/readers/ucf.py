"""UCF-101 reader: the 101 class folders with the official ``ucfTrainTestlist`` (3 folds).

The class names come from ``classInd.txt`` (numbered from 1), the samples of a split from
``trainlist0<fold>.txt`` or ``testlist0<fold>.txt``; see :func:`ucf101` for the tree.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from jepactl.data.readers.common import (
    DatasetIndex,
    Entry,
    Layout,
    PathLike,
    as_path,
    check_choice,
    class_index,
    did_you_mean,
)
from jepactl.errors import ConfigError

UCF101_TREE = """\
<root>/
  UCF-101/                  # or: <root> is the folder that holds the class folders
    ApplyEyeMakeup/
      v_ApplyEyeMakeup_g01_c01.avi
      ...
    ...                     # 101 class folders
  ucfTrainTestlist/         # in <root>, or next to it
    classInd.txt            # 1 ApplyEyeMakeup
    trainlist01.txt         # ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1   (also 02, 03)
    testlist01.txt          # ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi     (also 02, 03)
"""


def ucf101(root: PathLike, split: str = "train", fold: int = 1) -> DatasetIndex:
    """UCF-101 with the official train/test lists (3 folds).

    ::

        <root>/
          UCF-101/                  # or: <root> is the folder that holds the class folders
            ApplyEyeMakeup/
              v_ApplyEyeMakeup_g01_c01.avi
              ...
            ...                     # 101 class folders
          ucfTrainTestlist/         # in <root>, or next to it
            classInd.txt            # 1 ApplyEyeMakeup
            trainlist01.txt         # ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1   (also 02, 03)
            testlist01.txt          # ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi     (also 02, 03)

    The video folder is ``<root>/UCF-101`` when it exists, else ``<root>`` itself; the lists
    are in ``<root>/ucfTrainTestlist``, else in ``<root>/../ucfTrainTestlist``. Train lines
    carry a 1-based label (a line without one is labelled from its folder); test lines are
    labelled from their class folder, looked up in ``classInd.txt``. Labels are 0-based, the
    ``id`` is the listed path without its extension (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01``).

    Args:
        root: the dataset root (see the tree).
        split: ``train`` or ``test``.
        fold: the official split, 1, 2 or 3.
    """
    split = check_choice("ucf101", "split", split, ("train", "test"))
    if isinstance(fold, bool) or fold not in (1, 2, 3):
        raise ConfigError(f"ucf101: fold must be 1, 2 or 3, got {fold!r}")
    layout = Layout("ucf101", UCF101_TREE)
    base = as_path(root)
    layout.require_dir(base)

    video_dir = base / "UCF-101" if "UCF-101" in layout.subdirs(base) else base
    ann_dir = _list_folder(layout, base)
    class_file = ann_dir / "classInd.txt"
    classes = _read_class_ind(layout, class_file)
    list_file = ann_dir / f"{split}list0{fold}.txt"
    entries, missing = _read_split_list(layout, list_file, split, class_file, classes, video_dir)
    layout.check_found(entries, missing, list_file, video_dir)
    return DatasetIndex("ucf101", base, split, entries, classes, "video", missing)


def _list_folder(layout: Layout, base: Path) -> Path:
    """``ucfTrainTestlist/`` in ``base``, else next to it."""
    ann_dir = next(
        (
            d / "ucfTrainTestlist"
            for d in (base, base.parent)
            if "ucfTrainTestlist" in layout.subdirs(d)
        ),
        None,
    )
    if ann_dir is None:
        where = f"{base}" if base.parent == base else f"{base} or {base.parent}"
        raise layout.error(f"no ucfTrainTestlist/ folder in {where}", base / "ucfTrainTestlist")
    return ann_dir


def _read_class_ind(layout: Layout, class_file: Path) -> list[str]:
    """The class names of ``classInd.txt`` (``<number> <ClassName>`` lines), by number."""
    indices: dict[int, str] = {}
    for lineno, line in layout.lines(class_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise layout.error(
                f"{class_file} line {lineno}: expected '<number> <ClassName>', got {line!r}",
                class_file,
            )
        if int(parts[0]) in indices:
            raise layout.error(
                f"{class_file} line {lineno}: number {parts[0]} used twice", class_file
            )
        indices[int(parts[0])] = parts[1]
    return class_index(layout, indices, class_file, first=1)


def _read_split_list(
    layout: Layout,
    list_file: Path,
    split: str,
    class_file: Path,
    classes: list[str],
    video_dir: Path,
) -> tuple[list[Entry], list[str]]:
    """The entries of a train/test list, and the listed videos not in ``video_dir``."""
    label_of = {name: i for i, name in enumerate(classes)}
    entries: list[Entry] = []
    missing: list[str] = []
    for lineno, line in layout.lines(list_file):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        folder, filename = posixpath.split(rel)
        if len(parts) > 2 or not folder or not filename:
            raise layout.error(
                f"{list_file} line {lineno}: expected '<Class>/<video>.avi"
                f"{' <label>' if split == 'train' else ''}', got {line!r}",
                list_file,
            )
        if len(parts) == 2:
            if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                raise layout.error(
                    f"{list_file} line {lineno}: label {parts[1]!r} is not a class number of "
                    f"{class_file} (1..{len(classes)})",
                    list_file,
                )
            label = int(parts[1]) - 1
        else:
            class_name = folder.split("/")[0]
            if class_name not in label_of:
                raise layout.error(
                    f"{list_file} line {lineno}: class folder '{class_name}' is not in "
                    f"{class_file}{did_you_mean(class_name, label_of)}",
                    list_file,
                )
            label = label_of[class_name]
        path = video_dir / rel
        if filename in layout.names(video_dir / folder):
            entries.append(Entry(str(path), label, posixpath.splitext(rel)[0]))
        else:
            missing.append(str(path))
    return entries, missing
