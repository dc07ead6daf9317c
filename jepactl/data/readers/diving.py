"""Diving-48 reader, from the V2 (cleaned) annotations.

``Diving48_vocab.json`` describes the 48 classes (a class name joins the words of its entry),
``Diving48_V2_{train,test}.json`` list the samples by ``vid_name`` and label; the V1 files are
not read. See :func:`diving48` for the tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jepactl.data.readers.common import (
    VIDEO_EXTENSIONS,
    DatasetIndex,
    Entry,
    Layout,
    PathLike,
    as_path,
    check_choice,
)

DIVING48_TREE = """\
<root>/
  rgb/                      # or: the videos directly in <root>
    -mmq0PT-u8k_00155.mp4
    ...
  Diving48_vocab.json       # 48 entries like [["Back"], ["15som"], ["05Twis"], ["FREE"]]
  Diving48_V2_train.json    # [{"vid_name": "...", "label": 12, "start_frame": 0, ...}, ...]
  Diving48_V2_test.json
  # the .json files may sit in <root> or <root>/annotations/ (searched in that order)
"""


def diving48(root: PathLike, split: str = "train") -> DatasetIndex:
    """Diving-48 with the V2 (cleaned) annotations.

    ::

        <root>/
          rgb/                      # or: the videos directly in <root>
            -mmq0PT-u8k_00155.mp4
            ...
          Diving48_vocab.json       # 48 entries like [["Back"], ["15som"], ["05Twis"], ["FREE"]]
          Diving48_V2_train.json    # [{"vid_name": "...", "label": 12, "start_frame": 0, ...}, ...]
          Diving48_V2_test.json
          # the .json files may sit in <root> or <root>/annotations/ (searched in that order)

    Labels come from the V2 files (the V1 ``Diving48_train.json`` is not read). A class name
    joins the words of its vocabulary entry (``Back 15som 05Twis FREE``). The ``rgb/`` videos
    are already cut to the dive, so ``start_frame``/``end_frame`` are not used. The video of
    ``vid_name`` is ``<vid_name>.mp4`` (another video extension is accepted when no ``.mp4``
    is there); ``id`` is ``vid_name``.

    Args:
        root: the dataset root (see the tree).
        split: ``train`` or ``test``.
    """
    split = check_choice("diving48", "split", split, ("train", "test"))
    layout = Layout("diving48", DIVING48_TREE)
    base = as_path(root)
    layout.require_dir(base)
    ann_dirs = (base, base / "annotations")

    vocab_file = _annotation(layout, base, ann_dirs, "Diving48_vocab.json")
    classes = _read_vocab(layout, vocab_file)
    split_file = _annotation(layout, base, ann_dirs, f"Diving48_V2_{split}.json")
    items = layout.read_json(split_file)
    if not isinstance(items, list):
        raise layout.error(f"{split_file} must be a list of samples", split_file)
    video_dir = _video_folder(layout, base)
    entries, missing = _read_samples(layout, items, split_file, vocab_file, classes, video_dir)
    layout.check_found(entries, missing, split_file, video_dir)
    return DatasetIndex("diving48", base, split, entries, classes, "video", missing)


def _annotation(layout: Layout, base: Path, ann_dirs: Sequence[Path], name: str) -> Path:
    """The annotation file ``name`` in the first of ``ann_dirs`` that holds it."""
    found = layout.find(ann_dirs, (name,))
    if found is None:
        old = name.replace("_V2", "")
        hint = ""
        if old != name and layout.find(ann_dirs, (old,)) is not None:
            hint = f" (found the V1 {old}; jepactl reads the V2 annotations)"
        looked = " or ".join(str(d / name) for d in ann_dirs)
        raise layout.error(f"{name} not found: looked for {looked}{hint}", base / name)
    return found


def _class_name(entry: Any) -> str:
    """The words of one vocabulary entry, joined (``[["Back"], ["15som"]]`` -> ``Back 15som``)."""
    if isinstance(entry, list):
        return " ".join(
            " ".join(map(str, part)) if isinstance(part, list) else str(part) for part in entry
        )
    return str(entry)


def _read_vocab(layout: Layout, vocab_file: Path) -> list[str]:
    """One class name per vocabulary entry; a repeated name gets its index appended."""
    vocab = layout.read_json(vocab_file)
    if not isinstance(vocab, list) or not vocab:
        raise layout.error(f"{vocab_file} must be a list of class descriptions", vocab_file)
    classes: list[str] = []
    for i, entry in enumerate(vocab):
        name = _class_name(entry)
        classes.append(name if name not in classes else f"{name} ({i})")
    return classes


def _video_folder(layout: Layout, base: Path) -> Path:
    """``<root>/rgb`` when it exists, else ``<root>`` when it holds videos."""
    if "rgb" in layout.subdirs(base):
        return base / "rgb"
    if layout.stems(base, VIDEO_EXTENSIONS, prefer=".mp4"):
        return base
    raise layout.error(f"no rgb/ folder (and no videos) in {base}", base / "rgb")


def _read_samples(
    layout: Layout,
    items: list[Any],
    split_file: Path,
    vocab_file: Path,
    classes: list[str],
    video_dir: Path,
) -> tuple[list[Entry], list[str]]:
    """The entries of a split's samples, and the listed videos not in ``video_dir``."""
    videos = layout.stems(video_dir, VIDEO_EXTENSIONS, prefer=".mp4")
    entries: list[Entry] = []
    missing: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "vid_name" not in item or "label" not in item:
            raise layout.error(
                f"{split_file} item {i} has no 'vid_name' and 'label' (got {str(item)[:80]})",
                split_file,
            )
        vid, label = str(item["vid_name"]), item["label"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(classes):
            raise layout.error(
                f"{split_file} item {i} ({vid}): label {label!r} is not a class of {vocab_file} "
                f"(0..{len(classes) - 1})",
                split_file,
            )
        if vid in videos:
            entries.append(Entry(str(video_dir / videos[vid]), label, vid))
        else:
            missing.append(str(video_dir / f"{vid}.mp4"))
    return entries, missing
