"""ImageNet-100 reader (or any class subset of ImageNet-1k), as images.

``train/`` holds one folder per class (wnid); ``val/`` holds either class folders too or the
flat validation images, labelled by ``val_labels.txt`` or Kaggle's ``LOC_val_solution.csv``.
The default classes are the standard ImageNet-100 list (CMC, Tian et al. 2020), shipped as
``jepactl/data/imagenet100_classes.txt``. See :func:`imagenet100` for the tree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from jepactl.data.readers.common import (
    IMAGE_EXTENSIONS,
    DatasetIndex,
    Entry,
    Layout,
    PathLike,
    as_path,
    check_choice,
)
from jepactl.errors import ConfigError

IMAGENET100_TREE = """\
<root>/                     # ImageNet-100, or ImageNet-1k (only the classes are read)
  train/
    n02869837/              # one folder per class (wnid)
      n02869837_1003.JPEG   # .JPEG/.jpg/.jpeg/.png, any case
      ...
  val/
    n02869837/              # either class folders, like train/ ...
      ILSVRC2012_val_00001440.JPEG
    ILSVRC2012_val_00000001.JPEG   # ... or flat, with one label file in <root>:
  val_labels.txt            # ILSVRC2012_val_00000001.JPEG n01751748
  LOC_val_solution.csv      # ImageId,PredictionString
                            # ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...
"""

_WNID = re.compile(r"n\d{8}")


@lru_cache(maxsize=1)
def _shipped_imagenet100() -> tuple[str, ...]:
    text = (resources.files("jepactl.data") / "imagenet100_classes.txt").read_text("utf-8")
    wnids = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(w for w in wnids if w)


def imagenet100_classes() -> list[str]:
    """The standard ImageNet-100 class list (CMC, Tian et al. 2020): 100 wnids, in order."""
    return list(_shipped_imagenet100())


def imagenet100(
    root: PathLike, split: str = "train", classes: Sequence[str] | None = None
) -> DatasetIndex:
    """ImageNet-100 (or any class subset of ImageNet-1k), as images.

    ::

        <root>/                     # ImageNet-100, or ImageNet-1k (only the classes are read)
          train/
            n02869837/              # one folder per class (wnid)
              n02869837_1003.JPEG   # .JPEG/.jpg/.jpeg/.png, any case
              ...
          val/
            n02869837/              # either class folders, like train/ ...
              ILSVRC2012_val_00001440.JPEG
            ILSVRC2012_val_00000001.JPEG   # ... or flat, with one label file in <root>:
          val_labels.txt            # ILSVRC2012_val_00000001.JPEG n01751748
          LOC_val_solution.csv      # ImageId,PredictionString
                                    # ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...

    Labels are positions in ``classes`` (default: :func:`imagenet100_classes`); folders of
    other classes (an ImageNet-1k root) are skipped, and every class must have its folder.
    ``val/`` is read as class folders when it holds a folder of one of the classes, else as
    flat images labelled by ``<root>/val_labels.txt`` (one ``<image> <wnid>`` per line,
    whitespace- or comma-separated, the extension optional) or, when that file is absent,
    ``<root>/LOC_val_solution.csv`` (Kaggle's ``ImageId,PredictionString``; the wnid is the
    first token of ``PredictionString``; a header row is skipped). Label-file rows of other
    classes are skipped. ``id`` is ``<wnid>/<file stem>`` for class folders, the file stem for
    a flat ``val/``.

    Args:
        root: the dataset root (see the tree).
        split: ``train`` or ``val`` (``validation`` is accepted).
        classes: the wnids to keep, in label order.
    """
    split = check_choice("in100", "split", split, ("train", "val"), {"validation": "val"})
    wanted = imagenet100_classes() if classes is None else [str(c) for c in classes]
    if not wanted or len(set(wanted)) != len(wanted):
        raise ConfigError("in100: classes must be a non-empty list of distinct wnids")
    layout = Layout("in100", IMAGENET100_TREE)
    base = as_path(root)
    layout.require_dir(base)
    split_dir = base / split
    layout.require_dir(split_dir, f"{split} folder")
    label_of = {wnid: i for i, wnid in enumerate(wanted)}

    folders = layout.subdirs(split_dir)
    if split == "train" or not folders.isdisjoint(label_of):
        entries = _class_folder_entries(layout, split_dir, folders, wanted)
        return DatasetIndex("in100", base, split, entries, wanted, "image", [])

    label_file = _val_label_file(layout, base, split_dir, len(wanted))
    images = layout.stems(split_dir, IMAGE_EXTENSIONS, prefer=".jpeg")
    rows = _read_val_labels(layout, label_file, label_of)
    entries, missing = _flat_val_entries(split_dir, images, rows, label_of)
    layout.check_found(entries, missing, label_file, split_dir)
    return DatasetIndex("in100", base, split, entries, wanted, "image", missing)


def _image_files(layout: Layout, folder: Path) -> list[str]:
    return sorted(
        n for n in layout.names(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
    )


def _class_folder_entries(
    layout: Layout, split_dir: Path, folders: frozenset[str], wanted: list[str]
) -> list[Entry]:
    """The images of the class folders of ``wanted`` in ``split_dir`` (every one must exist)."""
    absent = [w for w in wanted if w not in folders]
    if absent:
        raise layout.error(
            f"{len(absent)} of the {len(wanted)} class folders are missing from {split_dir} "
            f"(e.g. {', '.join(absent[:3])})",
            split_dir / absent[0],
        )
    entries: list[Entry] = []
    for label, wnid in enumerate(wanted):
        for name in _image_files(layout, split_dir / wnid):
            stem = os.path.splitext(name)[0]
            entries.append(Entry(str(split_dir / wnid / name), label, f"{wnid}/{stem}"))
    if not entries:
        raise layout.error(f"no images in the class folders of {split_dir}", split_dir)
    return entries


def _val_label_file(layout: Layout, base: Path, split_dir: Path, num_classes: int) -> Path:
    """The label file of a flat ``val/``: ``val_labels.txt``, else ``LOC_val_solution.csv``."""
    label_file = layout.find((base,), ("val_labels.txt", "LOC_val_solution.csv"))
    if label_file is None:
        raise layout.error(
            f"{split_dir} holds no class folders of the {num_classes} classes, and {base} has "
            "no val_labels.txt or LOC_val_solution.csv to label a flat val/",
            base / "val_labels.txt",
        )
    return label_file


def _read_val_labels(
    layout: Layout, label_file: Path, label_of: dict[str, int]
) -> list[tuple[str, str]]:
    """The ``(image, wnid)`` rows of ``label_file`` whose wnid is one of the classes."""
    rows: list[tuple[str, str]] = []
    for lineno, line in layout.lines(label_file):
        if label_file.suffix == ".csv":
            image, _, prediction = line.partition(",")
            if image.strip() == "ImageId":
                continue
            parts = [image.strip(), *prediction.split()[:1]]
        else:
            parts = line.replace(",", " ").split()
        if len(parts) != 2 or (parts[1] not in label_of and not _WNID.fullmatch(parts[1])):
            raise layout.error(
                f"{label_file} line {lineno}: expected an image name and a wnid "
                f"(like n01440764), got {line[:80]!r}",
                label_file,
            )
        if parts[1] in label_of:
            rows.append((parts[0], parts[1]))
    return rows


def _flat_val_entries(
    split_dir: Path,
    images: dict[str, str],
    rows: list[tuple[str, str]],
    label_of: dict[str, int],
) -> tuple[list[Entry], list[str]]:
    """The entries of the labelled ``rows`` (sorted), and the rows whose image is not there."""
    entries: list[Entry] = []
    missing: list[str] = []
    for image, wnid in sorted(rows):
        stem, ext = os.path.splitext(image)
        if ext.lower() not in IMAGE_EXTENSIONS:
            stem, ext = image, ".JPEG"
        if stem in images:
            entries.append(Entry(str(split_dir / images[stem]), label_of[wnid], stem))
        else:
            missing.append(str(split_dir / f"{stem}{ext}"))
    return entries, missing
