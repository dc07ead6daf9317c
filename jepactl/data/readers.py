"""Readers for the official dataset layouts: index a dataset, check its layout, decode nothing.

A reader turns a dataset root into a :class:`DatasetIndex`: the ``(path, label, id)`` of every
sample of one split, the class names, and the listed files that are not on disk. It reads only
the annotation files and one directory listing per folder (never a ``stat`` per sample), so a
200k-entry split indexes in about a second, and it fails *before any training* with a
:class:`DatasetLayoutError` that names the path it looked at and shows the tree it expected.

What is an error and what is not:

* a missing root, annotation file or class folder, an annotation line that does not parse,
  or an annotation that names a class the label map does not know: :class:`DatasetLayoutError`;
* a wrong split, fold, reader name or reader option: :class:`~jepactl.config.ConfigError`
  (one line, with the nearest valid value);
* a listed file that is not on disk is *not* an error (real datasets miss a few files): it is
  left out of ``entries`` and recorded in ``DatasetIndex.missing``, for the data-check command
  and the loader's bad-sample accounting. Only when *none* of the listed files exists is the
  root wrong, and that is a :class:`DatasetLayoutError`.

:func:`read_dataset` finds the root: an explicit one (the recipe's ``data.roots.<name>`` or
``--set data.roots.<name>=/path``), else ``$JEPACTL_DATA/<name>`` for the four official
datasets (``ucf101/``, ``ssv2/``, ``diving48/``, ``imagenet100/``).
"""

from __future__ import annotations

import inspect
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from textwrap import indent
from typing import Any, Literal

from jepactl.errors import ConfigError
from jepactl.utils import close_match, suggestion

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DATA_ENV = "JEPACTL_DATA"

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------
# Index types and the error
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One sample: ``path`` to its file, 0-based ``label``, ``id`` unique within the split."""

    path: str
    label: int
    id: str


@dataclass
class DatasetIndex:
    """The samples of one split of one dataset, as listed by its annotations.

    ``classes[label]`` is the name of ``label``. ``missing`` holds the paths that the
    annotations list but that are not on disk (left out of ``entries``). ``kind`` says what the
    files are; a ``csv`` index is ``"video"`` but may hold image rows (the loader decides per
    entry by extension, see :data:`IMAGE_EXTENSIONS`).
    """

    name: str
    root: Path
    split: str
    entries: list[Entry]
    classes: list[str]
    kind: Literal["video", "image"]
    missing: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class DatasetLayoutError(ConfigError):
    """A dataset on disk does not have the layout its reader expects.

    The message's first line says what is wrong and where (the path looked at); when the
    reader knows its layout, the expected directory tree follows. ``summary``, ``path`` and
    ``tree`` hold the parts.
    """

    def __init__(
        self, summary: str, *, path: PathLike | None = None, tree: str | None = None
    ) -> None:
        self.summary = summary
        self.path = None if path is None else Path(path)
        self.tree = tree
        message = summary
        if tree:
            message += "\nexpected layout:\n" + indent(tree.strip("\n"), "  ")
        super().__init__(message)


# --------------------------------------------------------------------------------------
# Expected trees (also in each reader's docstring; a test keeps them in sync)
# --------------------------------------------------------------------------------------

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

CSV_TREE = """\
<index>.csv                 # one row per sample: <path> <label>  (label: 0-based integer)
  /data/k400/abseiling/0347ZoDXyP0_000095_000105.mp4 0
  relative/video.mp4 3      # relative to `root`, else to the CSV's folder
  /path with spaces/v.mp4::3   # '::' as delimiter when the path has spaces
  /data/frames/img_0001.jpg 7  # image rows are allowed
"""

FOLDERS_TREE = """\
<root>/
  <class_a>/                # class folders, sorted by name -> labels 0, 1, ...
    clip_0001.mp4           # video or image files (see `extensions`), any case
    ...
  <class_b>/
    ...
"""


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


class _Layout:
    """One reader's context: its name and tree for errors, and cached directory listings.

    Every folder is listed at most once; file names come from ``os.listdir`` (no ``stat``),
    sub-folders from ``os.scandir`` (``stat`` only for symlinks).
    """

    def __init__(self, reader: str, tree: str) -> None:
        self.reader = reader
        self.tree = tree
        self._names: dict[Path, frozenset[str]] = {}
        self._subdirs: dict[Path, frozenset[str]] = {}
        self._stems: dict[tuple[Path, str], dict[str, str]] = {}

    def error(self, summary: str, path: PathLike | None = None) -> DatasetLayoutError:
        return DatasetLayoutError(f"{self.reader}: {summary}", path=path, tree=self.tree)

    def _unreadable(self, folder: Path, exc: OSError) -> DatasetLayoutError:
        return self.error(f"cannot list {folder}: {exc.strerror or exc}", folder)

    def names(self, folder: Path) -> frozenset[str]:
        """Everything in ``folder`` (empty when it does not exist)."""
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                self._names[folder] = frozenset()
            except OSError as exc:
                raise self._unreadable(folder, exc) from exc
        return self._names[folder]

    def subdirs(self, folder: Path) -> frozenset[str]:
        """The sub-folders of ``folder`` (hidden ones left out; empty when it does not exist)."""
        if folder not in self._subdirs:
            found: set[str] = set()
            try:
                with os.scandir(folder) as it:
                    for item in it:
                        try:
                            if not item.name.startswith(".") and item.is_dir():
                                found.add(item.name)
                        except OSError:
                            continue
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:
                raise self._unreadable(folder, exc) from exc
            self._subdirs[folder] = frozenset(found)
        return self._subdirs[folder]

    def stems(self, folder: Path, extensions: Sequence[str], prefer: str) -> dict[str, str]:
        """``{stem: file name}`` of the files in ``folder`` with one of ``extensions``."""
        key = (folder, prefer)
        if key not in self._stems:
            by_stem: dict[str, str] = {}
            for name in sorted(self.names(folder)):  # deterministic on every rank
                stem, ext = os.path.splitext(name)
                ext = ext.lower()
                if ext in extensions and (stem not in by_stem or ext == prefer):
                    by_stem[stem] = name
            self._stems[key] = by_stem
        return self._stems[key]

    def require_dir(self, path: Path, what: str = "data root") -> None:
        if path.is_dir():
            return
        state = "is not a folder" if path.exists() else "does not exist"
        raise self.error(f"{what} {path} {state}", path)

    def find(self, folders: Sequence[Path], names: Sequence[str]) -> Path | None:
        """The first of ``names`` in the first of ``folders`` that holds one."""
        for folder in folders:
            listing = self.names(folder)
            for name in names:
                if name in listing:
                    return folder / name
        return None

    def read_text(self, path: Path, what: str = "annotation file") -> str:
        try:
            return path.read_text(encoding="utf-8-sig")
        except FileNotFoundError as exc:
            raise self.error(f"{what} {path} not found", path) from exc
        except OSError as exc:
            raise self.error(f"cannot read {what} {path}: {exc.strerror or exc}", path) from exc

    def lines(self, path: Path, what: str = "annotation file") -> Iterator[tuple[int, str]]:
        """``(line number, stripped line)`` of the non-blank lines of ``path``."""
        for lineno, line in enumerate(self.read_text(path, what).splitlines(), 1):
            line = line.strip()
            if line:
                yield lineno, line

    def read_json(self, path: Path) -> Any:
        text = self.read_text(path)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise self.error(
                f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})", path
            ) from None

    def check_found(
        self, entries: list[Entry], missing: list[str], listed_in: Path, where: Path
    ) -> None:
        """An index with no entry at all means the layout (not a few files) is wrong."""
        if entries:
            return
        if missing:
            raise self.error(
                f"none of the {len(missing)} files listed in {listed_in} is in {where} "
                f"(first one looked for: {missing[0]})",
                where,
            )
        raise self.error(f"{listed_in} lists no samples", listed_in)


def _as_path(root: PathLike) -> Path:
    return Path(os.path.expanduser(os.fspath(root))).absolute()


def _choice(
    reader: str,
    option: str,
    value: str,
    valid: Sequence[str],
    aliases: dict[str, str] | None = None,
) -> str:
    value = (aliases or {}).get(value, value)
    if value not in valid:
        raise ConfigError(f"{reader}: unknown {option} '{value}'{suggestion(value, valid)}")
    return value


def _close(name: str, valid: Iterable[str]) -> str:
    close = close_match(name, valid)
    return f"; did you mean '{close}'?" if close else ""


def _class_index(layout: _Layout, indices: dict[int, str], path: Path, first: int) -> list[str]:
    """Class names ordered by index; the indices must be ``first, first + 1, ...``."""
    expected = list(range(first, first + len(indices)))
    if sorted(indices) != expected:
        gaps = sorted(set(expected) - set(indices))
        raise layout.error(
            f"{path} must number its classes {first}..{first + len(indices) - 1} without gaps "
            f"(missing {gaps[:5]})",
            path,
        )
    names = [indices[i] for i in expected]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise layout.error(f"{path} lists class '{dup}' twice", path)
    return names


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------


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
    split = _choice("ucf101", "split", split, ("train", "test"))
    if isinstance(fold, bool) or fold not in (1, 2, 3):
        raise ConfigError(f"ucf101: fold must be 1, 2 or 3, got {fold!r}")
    layout = _Layout("ucf101", UCF101_TREE)
    base = _as_path(root)
    layout.require_dir(base)

    video_dir = base / "UCF-101" if "UCF-101" in layout.subdirs(base) else base
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

    class_file = ann_dir / "classInd.txt"
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
    classes = _class_index(layout, indices, class_file, first=1)
    label_of = {name: i for i, name in enumerate(classes)}

    list_file = ann_dir / f"{split}list0{fold}.txt"
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
                    f"{class_file}{_close(class_name, label_of)}",
                    list_file,
                )
            label = label_of[class_name]
        path = video_dir / rel
        if filename in layout.names(video_dir / folder):
            entries.append(Entry(str(path), label, posixpath.splitext(rel)[0]))
        else:
            missing.append(str(path))
    layout.check_found(entries, missing, list_file, video_dir)
    return DatasetIndex("ucf101", base, split, entries, classes, "video", missing)


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
    split = _choice("ssv2", "split", split, ("train", "validation"), {"val": "validation"})
    layout = _Layout("ssv2", SSV2_TREE)
    base = _as_path(root)
    layout.require_dir(base)
    sub = "20bn-something-something-v2"
    video_dir = base / sub if sub in layout.subdirs(base) else base
    ann_dirs = (base, base / "annotations", base / "labels")

    def annotation(short: str) -> Path:
        names = (short, f"something-something-v2-{short}")
        found = layout.find(ann_dirs, names)
        if found is None:
            looked = ", ".join(str(d / short) for d in ann_dirs)
            raise layout.error(
                f"{short} not found: looked for {looked} (also as {names[1]})", base / short
            )
        return found

    labels_file = annotation("labels.json")
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
    classes = _class_index(layout, indices, labels_file, first=0)
    label_of = {name: i for i, name in enumerate(classes)}

    split_file = annotation(f"{split}.json")
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
                f"{labels_file}{_close(name, label_of)}",
                split_file,
            )
        if vid in videos:
            entries.append(Entry(str(video_dir / videos[vid]), label_of[name], vid))
        else:
            missing.append(str(video_dir / f"{vid}.webm"))
    layout.check_found(entries, missing, split_file, video_dir)
    return DatasetIndex("ssv2", base, split, entries, classes, "video", missing)


def _diving48_class_name(entry: Any) -> str:
    if isinstance(entry, list):
        return " ".join(
            " ".join(map(str, part)) if isinstance(part, list) else str(part) for part in entry
        )
    return str(entry)


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
    split = _choice("diving48", "split", split, ("train", "test"))
    layout = _Layout("diving48", DIVING48_TREE)
    base = _as_path(root)
    layout.require_dir(base)
    ann_dirs = (base, base / "annotations")

    def annotation(name: str) -> Path:
        found = layout.find(ann_dirs, (name,))
        if found is None:
            old = name.replace("_V2", "")
            hint = ""
            if old != name and layout.find(ann_dirs, (old,)) is not None:
                hint = f" (found the V1 {old}; jepactl reads the V2 annotations)"
            looked = " or ".join(str(d / name) for d in ann_dirs)
            raise layout.error(f"{name} not found: looked for {looked}{hint}", base / name)
        return found

    vocab_file = annotation("Diving48_vocab.json")
    vocab = layout.read_json(vocab_file)
    if not isinstance(vocab, list) or not vocab:
        raise layout.error(f"{vocab_file} must be a list of class descriptions", vocab_file)
    classes: list[str] = []
    for i, entry in enumerate(vocab):
        name = _diving48_class_name(entry)
        classes.append(name if name not in classes else f"{name} ({i})")

    split_file = annotation(f"Diving48_V2_{split}.json")
    items = layout.read_json(split_file)
    if not isinstance(items, list):
        raise layout.error(f"{split_file} must be a list of samples", split_file)
    if "rgb" in layout.subdirs(base):
        video_dir = base / "rgb"
    elif layout.stems(base, VIDEO_EXTENSIONS, prefer=".mp4"):
        video_dir = base
    else:
        raise layout.error(f"no rgb/ folder (and no videos) in {base}", base / "rgb")
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
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(vocab):
            raise layout.error(
                f"{split_file} item {i} ({vid}): label {label!r} is not a class of {vocab_file} "
                f"(0..{len(vocab) - 1})",
                split_file,
            )
        if vid in videos:
            entries.append(Entry(str(video_dir / videos[vid]), label, vid))
        else:
            missing.append(str(video_dir / f"{vid}.mp4"))
    layout.check_found(entries, missing, split_file, video_dir)
    return DatasetIndex("diving48", base, split, entries, classes, "video", missing)


@lru_cache(maxsize=1)
def _shipped_imagenet100() -> tuple[str, ...]:
    text = (resources.files("jepactl.data") / "imagenet100_classes.txt").read_text("utf-8")
    wnids = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(w for w in wnids if w)


def imagenet100_classes() -> list[str]:
    """The standard ImageNet-100 class list (CMC, Tian et al. 2020): 100 wnids, in order."""
    return list(_shipped_imagenet100())


_WNID = re.compile(r"n\d{8}")


def _image_files(layout: _Layout, folder: Path) -> list[str]:
    return sorted(
        n for n in layout.names(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
    )


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
    split = _choice("imagenet100", "split", split, ("train", "val"), {"validation": "val"})
    wanted = imagenet100_classes() if classes is None else [str(c) for c in classes]
    if not wanted or len(set(wanted)) != len(wanted):
        raise ConfigError("imagenet100: classes must be a non-empty list of distinct wnids")
    layout = _Layout("imagenet100", IMAGENET100_TREE)
    base = _as_path(root)
    layout.require_dir(base)
    split_dir = base / split
    layout.require_dir(split_dir, f"{split} folder")
    label_of = {wnid: i for i, wnid in enumerate(wanted)}

    entries: list[Entry] = []
    missing: list[str] = []
    folders = layout.subdirs(split_dir)
    if split == "train" or not folders.isdisjoint(label_of):
        absent = [w for w in wanted if w not in folders]
        if absent:
            raise layout.error(
                f"{len(absent)} of the {len(wanted)} class folders are missing from {split_dir} "
                f"(e.g. {', '.join(absent[:3])})",
                split_dir / absent[0],
            )
        for label, wnid in enumerate(wanted):
            for name in _image_files(layout, split_dir / wnid):
                stem = os.path.splitext(name)[0]
                entries.append(Entry(str(split_dir / wnid / name), label, f"{wnid}/{stem}"))
        if not entries:
            raise layout.error(f"no images in the class folders of {split_dir}", split_dir)
        return DatasetIndex("imagenet100", base, split, entries, wanted, "image", missing)

    label_file = layout.find((base,), ("val_labels.txt", "LOC_val_solution.csv"))
    if label_file is None:
        raise layout.error(
            f"{split_dir} holds no class folders of the {len(wanted)} classes, and {base} has "
            "no val_labels.txt or LOC_val_solution.csv to label a flat val/",
            base / "val_labels.txt",
        )
    images = layout.stems(split_dir, IMAGE_EXTENSIONS, prefer=".jpeg")
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
    for image, wnid in sorted(rows):
        stem, ext = os.path.splitext(image)
        if ext.lower() not in IMAGE_EXTENSIONS:
            stem, ext = image, ".JPEG"
        if stem in images:
            entries.append(Entry(str(split_dir / images[stem]), label_of[wnid], stem))
        else:
            missing.append(str(split_dir / f"{stem}{ext}"))
    layout.check_found(entries, missing, label_file, split_dir)
    return DatasetIndex("imagenet100", base, split, entries, wanted, "image", missing)


def csv_index(
    path: PathLike, root: PathLike | None = None, name: str = "csv", split: str = "all"
) -> DatasetIndex:
    """The V-JEPA CSV index: one ``<path> <label>`` per line.

    ::

        <index>.csv                 # one row per sample: <path> <label>  (label: 0-based integer)
          /data/k400/abseiling/0347ZoDXyP0_000095_000105.mp4 0
          relative/video.mp4 3      # relative to `root`, else to the CSV's folder
          /path with spaces/v.mp4::3   # '::' as delimiter when the path has spaces
          /data/frames/img_0001.jpg 7  # image rows are allowed

    A row is split at its last ``::`` when it has one, else at whitespace into exactly two
    fields (so a path with spaces needs ``::``). Blank lines and lines starting with ``#`` are
    skipped. Image rows (:data:`IMAGE_EXTENSIONS`) are allowed: the index stays
    ``kind="video"`` and the loader decides per entry by extension. The CSV names no classes:
    ``classes`` is ``["0", "1", ...]`` up to the largest label. ``id`` is the path as written,
    without its extension; ``DatasetIndex.root`` is the CSV file.

    Args:
        path: the CSV file.
        root: the folder relative paths are resolved against (default: the CSV's folder).
        name: the index's name (in logs and reports).
        split: recorded in ``DatasetIndex.split`` (a CSV holds one split). When ``path`` is a
            folder, the split's CSV ``<path>/<split>.csv`` is read.
    """
    layout = _Layout(name, CSV_TREE)
    csv_path = _as_path(path)
    if csv_path.is_dir():
        if split == "all":
            raise layout.error(
                f"{csv_path} is a folder: name the CSV file, or a split to read "
                "<folder>/<split>.csv",
                csv_path,
            )
        csv_path = csv_path / f"{split}.csv"
    base = csv_path.parent if root is None else _as_path(root)
    entries: list[Entry] = []
    missing: list[str] = []
    max_label = -1
    for lineno, line in layout.lines(csv_path, what="CSV index"):
        if line.startswith("#"):
            continue
        where = f"{csv_path} line {lineno}"
        if "::" in line:
            path_text, _, label_text = line.rpartition("::")
            path_text, label_text = path_text.strip(), label_text.strip()
        else:
            fields = line.rsplit(None, 1)
            if len(fields) != 2:
                raise layout.error(f"{where}: expected '<path> <label>', got {line!r}", csv_path)
            path_text, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            raise layout.error(
                f"{where}: label {label_text!r} is not an integer (row {line!r})", csv_path
            ) from None
        if label < 0:
            raise layout.error(f"{where}: label {label} is negative", csv_path)
        if not path_text:
            raise layout.error(f"{where}: no path before the label", csv_path)
        if "::" not in line and any(c.isspace() for c in path_text):
            raise layout.error(
                f"{where}: path {path_text!r} has spaces; write '<path>::<label>' for such rows",
                csv_path,
            )
        file = Path(os.path.expanduser(path_text))
        if not file.is_absolute():
            file = base / file
        max_label = max(max_label, label)
        if file.name in layout.names(file.parent):
            entries.append(Entry(str(file), label, os.path.splitext(path_text)[0]))
        else:
            missing.append(str(file))
    layout.check_found(entries, missing, csv_path, base)
    classes = [str(i) for i in range(max_label + 1)]
    return DatasetIndex(name, csv_path, split, entries, classes, "video", missing)


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
    layout = _Layout(name, FOLDERS_TREE)
    base = _as_path(root)
    layout.require_dir(base)
    folder = base
    if split is not None and split in layout.subdirs(base):
        folder = base / split
    elif split not in (None, "train"):
        raise layout.error(f"no {split}/ folder in {base}", base / split)
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


# --------------------------------------------------------------------------------------
# Registry and root resolution
# --------------------------------------------------------------------------------------

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
        return _as_path(root)
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
    path = _as_path(env) / ENV_FOLDERS[name]
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
