"""``jepactl data check``: scan a dataset for files that will not decode, are too short, or
carry a label outside the class list — before a run finds them hours in.

Every video is decoded completely (packets to frames, no colour conversion), in parallel
worker processes; images are opened and decoded with PIL. Files the annotations list but the
disk lacks are reported as missing.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from jepactl.data.decode import probe
from jepactl.data.readers import OPTION_HINT, DatasetIndex, Entry, read_dataset
from jepactl.data.sources import IMAGE_SUFFIXES
from jepactl.log import progress_bars


@dataclass
class Problem:
    path: str
    kind: str  # undecodable | too_short | mislabelled | missing
    detail: str


@dataclass
class CheckReport:
    dataset: str
    root: str
    split: str
    checked: int
    problems: list[Problem] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "counts": self.counts()}, indent=2)


def count_frames(path: str) -> int:
    """Decode every frame of a video (no RGB conversion); raises on a broken file."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def _check_one(args: tuple[Entry, int, int]) -> Problem | None:
    entry, min_frames, num_classes = args
    if not 0 <= entry.label < num_classes:
        return Problem(
            entry.path, "mislabelled", f"label {entry.label} not in 0..{num_classes - 1}"
        )
    try:
        if entry.path.lower().endswith(IMAGE_SUFFIXES):
            from PIL import Image

            with Image.open(entry.path) as img:
                img.convert("RGB").load()
            return None
        frames = count_frames(entry.path)
        stated = probe(entry.path).num_frames
    except Exception as exc:  # any failure is a finding, not a crash
        return Problem(entry.path, "undecodable", f"{type(exc).__name__}: {exc}".replace("\n", " "))
    if frames == 0:
        return Problem(entry.path, "undecodable", "no frames decoded")
    if frames < stated - max(3, stated // 20):  # e.g. a partial download that still opens
        return Problem(entry.path, "undecodable", f"truncated: {frames} of {stated} frames")
    if frames < min_frames:
        return Problem(entry.path, "too_short", f"{frames} frames < {min_frames}")
    return None


def check_index(index: DatasetIndex, min_frames: int, workers: int) -> CheckReport:
    report = CheckReport(index.name, str(index.root), index.split, len(index.entries))
    report.problems += [
        Problem(p, "missing", "listed in the annotations, not on disk") for p in index.missing
    ]
    jobs = [(e, min_frames, len(index.classes)) for e in index.entries]
    bar = tqdm(
        total=len(jobs),
        unit="file",
        desc=f"checking {index.name}/{index.split}",
        disable=not progress_bars(),
    )
    if workers <= 1:
        results = (_check_one(j) for j in jobs)
        for problem in results:
            bar.update(1)
            if problem is not None:
                report.problems.append(problem)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for problem in pool.map(_check_one, jobs, chunksize=16):
                bar.update(1)
                if problem is not None:
                    report.problems.append(problem)
    bar.close()
    return report


def check_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    min_frames: int,
    workers: int,
) -> CheckReport:
    """Index ``name`` at ``root`` (or ``$JEPACTL_DATA/<name>``) and check every file."""
    index = read_dataset(name, root, hint=OPTION_HINT, split=split)
    return check_index(index, min_frames, workers)


def reports_json(reports: list[CheckReport]) -> str:
    """One report as its JSON object; several (``--recipe``) as a JSON list of them."""
    if len(reports) == 1:
        return reports[0].to_json()
    docs = [{**asdict(r), "counts": r.counts()} for r in reports]
    return json.dumps(docs, indent=2)
