"""What every reader shares: the index types, the layout error, and the layout helpers.

:class:`Entry` and :class:`DatasetIndex` are what a reader returns; :class:`DatasetLayoutError`
is what it raises when the files on disk do not have the layout it expects. :class:`Layout`
is one reader's view of the disk: it lists every folder at most once (never a ``stat`` per
sample) and builds its errors with the reader's name and expected tree. The small functions
below it check options and class numbering the same way in every reader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import indent
from typing import Any, Literal

from jepactl.errors import ConfigError
from jepactl.utils import close_match, suggestion

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

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


def compact_tree(tree: str) -> str:
    """A layout tree on one line without its comments, e.g. ``<root>/ train/ n02869837/ ...``:
    for an error that lists several datasets' layouts."""
    lines = [line.split("#", 1)[0].strip() for line in tree.splitlines()]
    return " ".join(line for line in lines if line)


class DatasetsLayoutError(DatasetLayoutError):
    """Several datasets (of one recipe) cannot be read: every one is reported at once, with
    the path looked at and the layout expected, so fixing one never reveals the next."""

    def __init__(self, errors: Sequence[DatasetLayoutError], total: int) -> None:
        self.errors = list(errors)
        parts = [
            e.summary + (f" (expected layout: {compact_tree(e.tree)})" if e.tree else "")
            for e in self.errors
        ]
        what = f"{len(parts)} of {total} datasets cannot be read" if total > 1 else "dataset"
        listed = " ".join(f"[{i}] {p}" for i, p in enumerate(parts, 1))
        super().__init__(f"{what}: {listed}")


# --------------------------------------------------------------------------------------
# Layout helpers
# --------------------------------------------------------------------------------------


class Layout:
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


def as_path(root: PathLike) -> Path:
    """``root`` with ``~`` expanded, made absolute (not resolved: symlinks stay)."""
    return Path(os.path.expanduser(os.fspath(root))).absolute()


def check_choice(
    reader: str,
    option: str,
    value: str,
    valid: Sequence[str],
    aliases: dict[str, str] | None = None,
) -> str:
    """``value`` (after ``aliases``) when it is one of ``valid``, else a :class:`ConfigError`."""
    value = (aliases or {}).get(value, value)
    if value not in valid:
        raise ConfigError(f"{reader}: unknown {option} '{value}'{suggestion(value, valid)}")
    return value


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a valid name is close to ``name``, else ``""``."""
    close = close_match(name, valid)
    return f"; did you mean '{close}'?" if close else ""


def class_index(layout: Layout, indices: dict[int, str], path: Path, first: int) -> list[str]:
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
