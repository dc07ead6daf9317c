"""Run directories as records: what ``jepactl compare`` reads, before any table exists.

A run directory becomes a :class:`RunRecord` (its config as a plain dict and every probe
result, by benchmark and probe kind) or an :class:`Unreadable` with the reason;
:func:`protocol_label` says how a result was probed. Which probe kind each column shows
(``--probe``, :func:`choose_kinds`) is chosen here too: it picks among a run's own results
(:func:`read_run` already shows each task's default kind) and needs nothing of the table.

Cut here because everything after reading (grouping, the table, its notes, renderers and
figure) works on these records and never opens a file.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from jepactl.errors import ConfigError
from jepactl.features.benchmarks import DATASET_BENCHMARKS
from jepactl.formats import FormatError
from jepactl.probe.records import ProbeResult, SynthMotionResult
from jepactl.probe.records import read_result as read_probe_result
from jepactl.rundir import PROBE_KINDS, RunDir, result_stem
from jepactl.utils import suggestion

# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultCell:
    """One ``probes/<task>-<kind>.json`` as a table cell: the value compared, what describes
    its protocol, and the typed record it was read as (:class:`~jepactl.probe.records.
    ProbeResult`, its settings included; ``None`` for cells built by hand)."""

    bench: str
    top1: float
    weights: str
    protocol: str
    path: Path
    kind: str = "unknown"
    step: int | None = None  # the training step of the checkpoint probed (None: not recorded)
    profile: str = "paper"  # evaluated as the paper's code did ("reference"), or not
    record: ProbeResult | None = field(default=None, compare=False)


@dataclass
class RunRecord:
    """A readable run directory: its config (plain dict), every probe result by bench and kind
    (``by_kind``), and the results shown (``results``, one kind per bench; see
    :func:`choose_kinds`)."""

    path: Path
    config: dict[str, Any]
    results: dict[str, ResultCell]
    by_kind: dict[str, dict[str, ResultCell]] = field(default_factory=dict)
    shadowed: list[str] = field(default_factory=list)  # notes: same bench and kind twice

    def __post_init__(self) -> None:
        if not self.by_kind:  # built from shown results only: those are all there is
            self.by_kind = {b: {r.kind: r} for b, r in self.results.items()}

    @property
    def display_name(self) -> str:
        name = self.config.get("display_name")
        return name if isinstance(name, str) and name.strip() else self.path.name

    @property
    def seed(self) -> Any:
        train = self.config.get("train")
        return train.get("seed") if isinstance(train, dict) else None

    @property
    def untrained(self) -> bool:
        """Whether every result that records its checkpoint's step probed step 0 (an
        untrained control, ``pretrain --max-steps 0``), and at least one does."""
        steps = [r.step for r in self.results.values() if r.step is not None]
        return bool(steps) and all(s == 0 for s in steps)


@dataclass(frozen=True)
class Unreadable:
    """A run left out of the table, and why."""

    path: Path
    reason: str


# --------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------


def collect_runs(patterns: Sequence[str]) -> tuple[list[RunRecord], list[Unreadable]]:
    """Read the runs named by ``patterns`` (directories or globs), in command-line order.

    A glob expands to its directories, sorted. A directory without ``config.yaml`` whose
    children are runs (e.g. ``runs/synth``) expands to those children. A pattern matching no
    directory is a :class:`ConfigError`.
    """
    runs: list[RunRecord] = []
    bad: list[Unreadable] = []
    seen: set[Path] = set()
    for directory in _expand_patterns(patterns):
        key = directory.resolve()
        if key in seen:
            continue
        seen.add(key)
        record = read_run(directory)
        if isinstance(record, Unreadable):
            bad.append(record)
        else:
            runs.append(record)
    return runs, bad


def _expand_patterns(patterns: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for pattern in patterns:
        dirs = _match_dirs(pattern)
        if not dirs:
            raise ConfigError(
                f"no run directory matches {pattern!r}; pass run directories "
                "(holding config.yaml and probes/) or a glob such as 'runs/mixed-*'"
            )
        for d in dirs:
            out += _runs_below(d)
    return out


def _match_dirs(pattern: str) -> list[Path]:
    if glob.has_magic(pattern):
        return [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).is_dir()]
    path = Path(pattern)
    if path.is_file():
        raise ConfigError(f"{pattern} is a file; pass the run directory that holds it")
    return [path] if path.is_dir() else []


def _runs_below(directory: Path) -> list[Path]:
    """The directory itself if it is a run, else its child runs, else itself (unreadable)."""
    if RunDir(directory).is_run():
        return [directory]
    children = sorted(c for c in directory.iterdir() if RunDir(c).is_run())
    return children or [directory]


def read_run(directory: Path) -> RunRecord | Unreadable:
    """One run directory, or why it cannot be compared."""
    run = RunDir(directory)
    if not run.is_run():
        return Unreadable(directory, "no config.yaml (not a run directory)")
    try:
        config = run.read_config()
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return Unreadable(directory, f"config.yaml: {_one_line(exc)}")
    if not isinstance(config, dict):
        return Unreadable(directory, "config.yaml: not a mapping")
    by_kind: dict[str, dict[str, ResultCell]] = {}
    shadowed: list[str] = []
    for path in run.result_files():
        result = read_result(path)
        if isinstance(result, str):
            return Unreadable(directory, f"probes/{path.name}: {result}")
        kinds = by_kind.setdefault(result.bench, {})
        old = kinds.get(result.kind)
        if old is not None:
            new, old = sorted((old, result), key=lambda r: (r.path.stat().st_mtime, r.path.name))[
                ::-1
            ]
            shadowed.append(
                f"{directory}: probes/{new.path.name} and probes/{old.path.name} both hold a "
                f"{result.kind} probe of {result.bench}; showing the newer, {new.path.name}"
            )
            result = new
        kinds[result.kind] = result
    results = {bench: kinds[_default_kind(bench, [kinds])] for bench, kinds in by_kind.items()}
    return RunRecord(directory, config, results, by_kind, shadowed)


def read_result(path: Path) -> ResultCell | str:
    """A probe result as a table cell, or the reason it is unusable (a one-line string)."""
    try:
        record = read_probe_result(path)
    except FormatError as exc:
        return str(exc)
    # probes/<task>-<kind>.json names its task in the file; older probes/<task>.json are
    # named by the task alone
    bench = record.bench if path.stem == result_stem(record.bench, record.kind) else path.stem
    return ResultCell(
        bench=bench,
        top1=record.top1,
        weights=record.weights,
        protocol=protocol_label(record),
        path=path,
        step=record.step,
        kind=record.kind,
        profile=record.profile,
        record=record,
    )


def protocol_label(result: ProbeResult) -> str:
    """E.g. ``attentive probe, 50 epochs, pooled space2x2, reference protocol``."""
    if result.sklearn:
        label = "scikit-learn logistic regression"
    else:
        label = f"{result.probe} probe"
        if result.epochs is not None:
            label += f", {result.epochs} epochs"
    if result.pooling not in (None, "none"):
        label += f", pooled {result.pooling}"
    if result.sweep:
        label += ", lr x wd sweep"
    label += _limit_text(result)
    if isinstance(result, SynthMotionResult):
        if result.protocol_name:
            label += f", {result.protocol_name} protocol"
        if result.n_seeds > 1:
            label += f", mean of {result.n_seeds} data/probe seeds"
    return label


def _limit_text(result: ProbeResult) -> str:
    """``, --limit 24 (24 train / 24 val clips)`` when the caches were cut with ``--limit``: a
    demo-sized number is not the benchmark's."""
    if result.limit is None:
        return ""
    n_train, n_val = result.n_train, result.n_val
    sizes = (
        f" ({n_train} train / {n_val} val clips)"
        if n_train is not None and n_val is not None
        else ""
    )
    return f", --limit {result.limit}{sizes}"


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# --------------------------------------------------------------------------------------
# Probe kinds
# --------------------------------------------------------------------------------------


def task_default_kind(bench: str) -> str | None:
    """The kind of probe ``jepactl probe TASK`` trains without ``--probe`` (dataset tasks)."""
    b = DATASET_BENCHMARKS.get(bench)
    if b is None:
        return None
    return b.probe + ("-sklearn" if b.sklearn_features is not None else "")


def _kind_rank(kind: str) -> tuple[int, str]:
    return (PROBE_KINDS.index(kind) if kind in PROBE_KINDS else len(PROBE_KINDS), kind)


def _default_kind(bench: str, runs_kinds: Sequence[dict[str, ResultCell]]) -> str:
    """The task's default probe if some run has it, else the kind most runs have."""
    counts: dict[str, int] = {}
    for kinds in runs_kinds:
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
    preferred = task_default_kind(bench)
    if preferred in counts:
        return preferred
    return min(counts, key=lambda k: (-counts[k], _kind_rank(k)))


def parse_probe_choice(specs: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """``--probe`` values: ``KIND`` (every column) or ``TASK=KIND`` (one column)."""
    every: str | None = None
    per_task: dict[str, str] = {}
    for spec in specs:
        task, sep, kind = spec.rpartition("=")
        if kind not in PROBE_KINDS:
            raise ConfigError(
                f"--probe {spec}: unknown probe kind {kind!r}{suggestion(kind, PROBE_KINDS)} "
                f"(kinds: {', '.join(PROBE_KINDS)})"
            )
        if not sep:
            if every is not None and every != kind:
                raise ConfigError(f"--probe {every} and --probe {kind} disagree; give one")
            every = kind
        elif not task:
            raise ConfigError(f"--probe {spec}: expected KIND or TASK=KIND")
        else:
            per_task[task] = kind
    return every, per_task


def choose_kinds(
    runs: Sequence[RunRecord],
    probe: Sequence[str] | None = None,
    benches: Sequence[str] | None = None,
) -> dict[str, str]:
    """The probe kind each benchmark column shows (see :mod:`jepactl.report.compare`).

    Raises:
        ConfigError: an unknown kind, a task no run has, or a kind no run has for a column.
    """
    every, per_task = parse_probe_choice(probe or ())
    available: dict[str, list[dict[str, ResultCell]]] = {}
    for run in runs:
        for bench, kinds in run.by_kind.items():
            available.setdefault(bench, []).append(kinds)
    for task in per_task:
        if task not in available:
            raise ConfigError(
                f"--probe {task}={per_task[task]}: no run has results for {task!r}"
                + suggestion(task, available or ["(none)"])
            )
    out: dict[str, str] = {}
    for bench, runs_kinds in available.items():
        wanted = per_task.get(bench, every)
        if wanted is None:
            out[bench] = _default_kind(bench, runs_kinds)
            continue
        present = sorted({k for kinds in runs_kinds for k in kinds}, key=_kind_rank)
        if wanted not in present and (not benches or bench in benches):
            raise ConfigError(
                f"no run has a {wanted} probe result for {bench} (it has: {', '.join(present)}); "
                f"choose per task, e.g. --probe {bench}={present[0]}, or leave {bench} out "
                "with --task"
            )
        out[bench] = wanted
    return out


def select_kinds(runs: Sequence[RunRecord], kinds: dict[str, str]) -> list[RunRecord]:
    """The runs with ``results`` holding, per bench, the result of the chosen kind (a run
    without that kind has no value in the column: never another kind's)."""
    return [
        replace(
            r,
            results={b: r.by_kind[b][k] for b, k in kinds.items() if k in r.by_kind.get(b, {})},
        )
        for r in runs
    ]


def other_kinds(runs: Sequence[RunRecord], bench: str, shown: str) -> list[str]:
    """The kinds of probe the runs have for ``bench`` besides the one shown."""
    kinds = {k for r in runs for k in r.by_kind.get(bench, {}) if k != shown}
    return sorted(kinds, key=_kind_rank)
