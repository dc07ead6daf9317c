"""Something-Something v2 reader (174 classes), from the official JSON annotations.

``labels.json`` maps each class (a template without its square brackets) to its index;
``train.json`` / ``validation.json`` list the samples by id and template. The annotation files
may carry the long ``something-something-v2-`` prefix and sit in a sub-folder; see
:func:`ssv2` for the tree and the search order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jepactl.data.readers.common import (
    VIDEO_EXTENSIONS,
    DatasetIndex,
    Entry,
    Layout,
    PathLike,
    as_path,
    check_choice,
    class_index,
    did_you_mean,
)

SSV2_TREE = """\
<root>/
  20bn-something-something-v2/   # or: the videos directly in <root>
    1.webm
    ...
  labels.json               # {"Approaching something with your camera": "0", ...}
  train.json                # [{"id": "78687", "template": "Approaching [something] ..."}]
  validation.json
  # the .json files may also be named something-something-v2-{labels,train,validation}.json
  # and may sit in <root>, <root>/annotations/ or <root>/labels/ (searched in that order)
"""

_VIDEO_FOLDER = "20bn-something-something-v2"


def ssv2(root: PathLike, split: str = "train") -> DatasetIndex:
    """Something-Something v2 (174 classes).

    ::

        <root>/
          20bn-something-something-v2/   # or: the videos directly in <root>
            1.webm
            ...
          labels.json               # {"Approaching something with your camera": "0", ...}
          train.json                # [{"id": "78687", "template": "Approaching [something] ..."}]
          validation.json
          # the .json files may also be named something-something-v2-{labels,train,validation}.json
          # and may sit in <root>, <root>/annotations/ or <root>/labels/ (searched in that order)

    Each annotation file is looked for in ``<root>``, then ``<root>/annotations``, then
    ``<root>/labels`` (what the official label zip unpacks to); in each folder the short name
    (``train.json``) wins over the long one (``something-something-v2-train.json``). A
    sample's label is its ``template`` with the square brackets removed, looked up in
    ``labels.json``. The video of id ``78687`` is ``78687.webm``; another video extension
    (``78687.mp4`` after a conversion) is accepted when no ``.webm`` is there. ``id`` is the
    annotation's id.

    Args:
        root: the dataset root (see the tree).
        split: ``train`` or ``validation`` (``val`` is accepted). The test split has no labels.
    """
    split = check_choice("ssv2", "split", split, ("train", "validation"), {"val": "validation"})
    layout = Layout("ssv2", SSV2_TREE)
    base = as_path(root)
    layout.require_dir(base)
    video_dir = base / _VIDEO_FOLDER if _VIDEO_FOLDER in layout.subdirs(base) else base
    ann_dirs = (base, base / "annotations", base / "labels")

    labels_file = _annotation(layout, base, ann_dirs, "labels.json")
    classes = _read_labels(layout, labels_file)
    split_file = _annotation(layout, base, ann_dirs, f"{split}.json")
    entries, missing = _read_samples(layout, split_file, labels_file, classes, video_dir)
    layout.check_found(entries, missing, split_file, video_dir)
    return DatasetIndex("ssv2", base, split, entries, classes, "video", missing)


def _annotation(layout: Layout, base: Path, ann_dirs: Sequence[Path], short: str) -> Path:
    """The annotation file ``short`` (or its long name) in the first of ``ann_dirs`` with one."""
    names = (short, f"something-something-v2-{short}")
    found = layout.find(ann_dirs, names)
    if found is None:
        looked = ", ".join(str(d / short) for d in ann_dirs)
        raise layout.error(
            f"{short} not found: looked for {looked} (also as {names[1]})", base / short
        )
    return found


def _read_labels(layout: Layout, labels_file: Path) -> list[str]:
    """The class names of ``labels.json`` (``{name: index}``), ordered by index."""
    label_map = layout.read_json(labels_file)
    if not isinstance(label_map, dict):
        raise layout.error(f"{labels_file} must map class names to indices", labels_file)
    indices: dict[int, str] = {}
    for name, value in label_map.items():
        try:
            indices[int(value)] = name
        except (TypeError, ValueError):
            raise layout.error(
                f"{labels_file}: class {name!r} has index {value!r}, not an integer", labels_file
            ) from None
    if len(indices) != len(label_map):
        raise layout.error(f"{labels_file} gives two classes the same index", labels_file)
    return class_index(layout, indices, labels_file, first=0)


def _read_samples(
    layout: Layout, split_file: Path, labels_file: Path, classes: list[str], video_dir: Path
) -> tuple[list[Entry], list[str]]:
    """The entries of a split's JSON list, and the listed videos not in ``video_dir``."""
    label_of = {name: i for i, name in enumerate(classes)}
    items = layout.read_json(split_file)
    if not isinstance(items, list):
        raise layout.error(f"{split_file} must be a list of samples", split_file)
    videos = layout.stems(video_dir, VIDEO_EXTENSIONS, prefer=".webm")
    entries: list[Entry] = []
    missing: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item or "template" not in item:
            raise layout.error(
                f"{split_file} item {i} has no 'id' and 'template' (got {str(item)[:80]})",
                split_file,
            )
        vid = str(item["id"])
        name = str(item["template"]).replace("[", "").replace("]", "")
        if name not in label_of:
            raise layout.error(
                f"{split_file} item {i} (id {vid}): class {name!r} is not in "
                f"{labels_file}{did_you_mean(name, label_of)}",
                split_file,
            )
        if vid in videos:
            entries.append(Entry(str(video_dir / videos[vid]), label_of[name], vid))
        else:
            missing.append(str(video_dir / f"{vid}.webm"))
    return entries, missing
