"""The V-JEPA CSV index reader: one ``<path> <label>`` row per sample.

The format of V-JEPA's data lists (Kinetics and any other dataset that comes as a list of
files): rows split at their last ``::`` or at whitespace, relative paths resolved against a
root or the CSV's folder, image rows allowed. See :func:`csv_index` for the format.
"""

from __future__ import annotations

import os
from pathlib import Path

from jepactl.data.readers.common import (
    DatasetIndex,
    DatasetLayoutError,
    Entry,
    Layout,
    PathLike,
    as_path,
)

CSV_TREE = """\
<index>.csv                 # one row per sample: <path> <label>  (label: 0-based integer)
  /data/k400/abseiling/0347ZoDXyP0_000095_000105.mp4 0
  relative/video.mp4 3      # relative to `root`, else to the CSV's folder
  /path with spaces/v.mp4::3   # '::' as delimiter when the path has spaces
  /data/frames/img_0001.jpg 7  # image rows are allowed
"""


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
    layout = Layout(name, CSV_TREE)
    csv_path = _csv_file(layout, as_path(path), split)
    base = csv_path.parent if root is None else as_path(root)
    entries: list[Entry] = []
    missing: list[str] = []
    max_label = -1
    for lineno, line in layout.lines(csv_path, what="CSV index"):
        if line.startswith("#"):
            continue
        path_text, label = _parse_row(layout, csv_path, lineno, line)
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


def _csv_file(layout: Layout, csv_path: Path, split: str) -> Path:
    """``csv_path`` itself, or ``<csv_path>/<split>.csv`` when it is a folder."""
    if not csv_path.is_dir():
        return csv_path
    if split == "all":
        raise layout.error(
            f"{csv_path} is a folder: name the CSV file, or a split to read <folder>/<split>.csv",
            csv_path,
        )
    return csv_path / f"{split}.csv"


def _parse_row(layout: Layout, csv_path: Path, lineno: int, line: str) -> tuple[str, int]:
    """The path (as written) and the label of one row; a malformed row is an error."""
    where = f"{csv_path} line {lineno}"

    def error(summary: str) -> DatasetLayoutError:
        return layout.error(f"{where}: {summary}", csv_path)

    if "::" in line:
        path_text, _, label_text = line.rpartition("::")
        path_text, label_text = path_text.strip(), label_text.strip()
    else:
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise error(f"expected '<path> <label>', got {line!r}")
        path_text, label_text = fields
    try:
        label = int(label_text)
    except ValueError:
        raise error(f"label {label_text!r} is not an integer (row {line!r})") from None
    if label < 0:
        raise error(f"label {label} is negative")
    if not path_text:
        raise error("no path before the label")
    if "::" not in line and any(c.isspace() for c in path_text):
        raise error(f"path {path_text!r} has spaces; write '<path>::<label>' for such rows")
    return path_text, label
