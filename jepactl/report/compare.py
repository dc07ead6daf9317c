"""``jepactl compare``: the paper's result tables (Tables 3, 4) and Figure 2 from run directories.

Inputs. A run directory holds ``config.yaml`` (the resolved recipe, read as a plain dict, never
validated) and ``probes/<task>-<kind>.json``, one probe result per benchmark and probe kind
(``probes/<task>.json`` in runs written before the kind was in the name; the kind is read from
the result itself, :func:`jepactl.rundir.probe_kind`). A run whose config or any probe result
cannot be read is *unreadable*: it is listed with the file and the reason and left out, and the
other runs are still compared. A run with no ``probes/*.json`` is listed as having no results.

Probe kinds. Each column shows one kind of probe: the one ``--probe`` names (``KIND`` for every
column, ``TASK=KIND`` for one), else the task's default probe when some run has it, else the
kind most runs have. A note names the kind of each column and the other kinds available. Two
files of one run with the same task and kind (a ``synth-motion`` result beside a ``probe``
one): the newer is shown, with a note.

Rows (methods). Runs whose configs are identical once ``train.seed`` and the runtime keys
(:data:`RUNTIME_KEYS`) are removed form one row, labelled with the config's ``display_name``
(else the directory name). Two rows that share a name but differ in config get the differing
dotted keys appended, e.g. ``Baseline (optim.lr=0.001)``. Runs of one row that share a seed are
still grouped, with a warning in the notes. An untrained run (every result probed a step-0
checkpoint, e.g. ``pretrain --max-steps 0``) is never a seed of its trained recipe: it gets a
row of its own, labelled ``<name> (untrained)``, and is never the default baseline.

Cells. One value prints as ``8.38``; a row of n >= 2 runs prints ``mean ± std (n)`` with the
sample standard deviation (ddof=1). A missing value is ``—``, never 0. The best mean of each
column (at the printed precision; ties all) is bold in markdown.

Δ. Each benchmark column is followed by Δ = mean(row) − mean(baseline) in percentage points,
computed in decimal on the values as written (so 8.38 − 8.68 is exactly −0.30), rounded half to
even to two decimals and always signed, with ``↑``/``↓`` when it is non-zero. When the row and
the baseline both have two or more values, Δ carries a 95 % Welch t interval
(se = sqrt(s1²/n1 + s2²/n2), Welch–Satterthwaite degrees of freedom) and a ``*`` when the
interval excludes 0. Δ is ``—`` when either side is missing, and empty on the baseline row.

Univ. ("improves every benchmark", Table 3): ``Yes`` when every Δ of the row is > 0 as printed,
``Yes†`` when that holds but some column has no Δ for the row, ``No`` otherwise, ``—`` when the
row has no Δ at all; empty on the baseline row.

Baseline. ``--baseline NAME`` matches a row label or display name case-insensitively (exact
match first, then a unique substring). Without it, the baseline is the unique row whose display
name contains the word "baseline"; when there is none or several, the table has no Δ or Univ.
columns and a note says so.

Row order. The baseline first; then ``delta`` (default): by the mean of the row's Δs,
descending, rows without Δ last, ties by label; ``name``: by label; ``input``: by the first
appearance of the row's runs on the command line.

Notes (text and markdown footnotes, ``notes`` in JSON): the weights each row was probed with,
each column's probe kind and protocol (including ``--limit N`` when the caches were cut to N
clips per split) (a column that mixes protocols gets ``⚠`` in its header and a note
naming which rows used which), the seeds of multi-run rows, the baseline, runs without results
and unreadable runs.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jepactl.config import RUNTIME_KEYS, canonical_data_names, config_diff
from jepactl.errors import ConfigError
from jepactl.features.benchmarks import DATASET_BENCHMARKS
from jepactl.profiles import base_task
from jepactl.report.profiles import profile_notes, run_profile
from jepactl.rundir import PROBE_KINDS, RunDir, probe_kind, result_stem
from jepactl.utils import atomic_write_bytes, close_match, suggestion

#: Keys removed before grouping: the seed and the runtime keys (how a run executed, not what it
#: computed), so they never split a row.
GROUPING_IGNORED = RUNTIME_KEYS | {"train.seed"}

#: Column order of the known benchmarks; any other benchmark follows, alphabetically.
BENCH_ORDER: tuple[str, ...] = (
    "diving48",
    "in100",
    "ssv2",
    "ucf101",
    "synth-motion-directions",
    "synth-motion-mixed",
    "synth-motion-directions-reference",
    "synth-motion-mixed-reference",
)
BENCH_HEADERS: dict[str, str] = {
    "diving48": "Diving-48",
    "in100": "ImageNet-100",
    "ssv2": "SSv2",
    "ucf101": "UCF-101",
    "synth-motion-directions": "Synth. motion (dir.)",
    "synth-motion-mixed": "Synth. motion (mixed)",
    "synth-motion-directions-reference": "Synth. motion (dir., ref. protocol)",
    "synth-motion-mixed-reference": "Synth. motion (mixed, ref. protocol)",
}
#: Figure 2's colours (the caption: Diving-48 blue, ImageNet-100 green, SSv2 red).
BENCH_COLOURS: dict[str, str] = {"diving48": "tab:blue", "in100": "tab:green", "ssv2": "tab:red"}
OTHER_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
WEIGHTS_NAMES = {"teacher": "EMA teacher", "student": "student"}
SORTS = ("delta", "name", "input")
MISSING = "—"
UNTRAINED_SUFFIX = " (untrained)"
DAGGER_NOTE = "† on the reported benchmarks only"
STAR_NOTE = "* 95% interval excludes 0"
NO_SPREAD_NOTE = "Δ without [lo, hi] although both rows have ≥ 2 runs: neither side varies."
FIGSIZE = (10.0, 4.5)
MIN_PLOT_GROUPS = 4  # the x-range of the figure spans at least this many groups
DPI = 150


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """One ``probes/<task>-<kind>.json``: the value compared and what describes its protocol."""

    bench: str
    top1: float
    weights: str
    protocol: str
    path: Path
    kind: str = "unknown"
    step: int | None = None  # the training step of the checkpoint probed (None: not recorded)
    profile: str = "paper"  # evaluated as the paper's code did ("reference"), or not


@dataclass
class RunRecord:
    """A readable run directory: its config (plain dict), every probe result by bench and kind
    (``by_kind``), and the results shown (``results``, one kind per bench; see
    :func:`choose_kinds`)."""

    path: Path
    config: dict[str, Any]
    results: dict[str, ProbeResult]
    by_kind: dict[str, dict[str, ProbeResult]] = field(default_factory=dict)
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


@dataclass
class Group:
    """Runs of one method: configs equal up to the seed and the runtime keys."""

    display_name: str
    config: dict[str, Any]
    runs: list[RunRecord]
    order: int
    label: str = ""
    untrained: bool = False

    def values(self, bench: str) -> list[tuple[Any, float]]:
        return [(r.seed, r.results[bench].top1) for r in self.runs if bench in r.results]


@dataclass
class Cell:
    """One benchmark of one row: its values and, with a baseline, its Δ."""

    bench: str
    values: list[float]
    seeds: list[Any]
    mean: float | None = None
    std: float | None = None
    delta: float | None = None
    ci95: tuple[float, float] | None = None
    no_spread: bool = False  # both sides have >= 2 values, all equal: no interval to give
    best: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def excludes_zero(self) -> bool:
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)


@dataclass
class Row:
    """One method of the table."""

    label: str
    display_name: str
    runs: list[Path]
    seeds: list[Any]
    cells: dict[str, Cell]
    weights: list[str]
    is_baseline: bool = False
    univ: str = ""
    untrained: bool = False


@dataclass
class Column:
    """One benchmark column, the probe kind it shows and the protocols behind its values."""

    bench: str
    protocols: dict[str, list[str]]  # protocol label -> row labels using it
    kind: str = "unknown"
    other_kinds: list[str] = field(default_factory=list)  # also in the runs, not shown

    @property
    def mixed(self) -> bool:
        return len(self.protocols) > 1

    @property
    def header(self) -> str:
        return bench_header(self.bench) + (" ⚠" if self.mixed else "")


@dataclass
class CompareTable:
    """Everything the renderers print."""

    columns: list[Column]
    rows: list[Row]
    baseline: str | None
    notes: list[str] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    no_results: list[Path] = field(default_factory=list)

    @property
    def has_delta(self) -> bool:
        return self.baseline is not None

    def baseline_row(self) -> Row | None:
        return next((r for r in self.rows if r.is_baseline), None)


def bench_header(bench: str) -> str:
    """The printed name of a benchmark column (``TASK@reference``: ``NAME (reference)``)."""
    base, profile = base_task(bench)
    name = BENCH_HEADERS.get(base, base)
    return name if profile == "paper" else f"{name} (reference)"


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
    by_kind: dict[str, dict[str, ProbeResult]] = {}
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


def read_result(path: Path) -> ProbeResult | str:
    """A probe result, or the reason it is unusable (a one-line string)."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc})"
    except (OSError, UnicodeDecodeError) as exc:
        return _one_line(exc)
    if not isinstance(data, dict):
        return f"not a JSON object (a {type(data).__name__})"
    top1 = data.get("top1")
    if isinstance(top1, bool) or not isinstance(top1, int | float) or not math.isfinite(top1):
        return f"no numeric 'top1' (got {top1!r})"
    weights = data.get("weights")
    kind = probe_kind(data)
    bench = data.get("bench")
    return ProbeResult(
        # probes/<task>-<kind>.json names its task in the file; older probes/<task>.json are
        # named by the task alone
        bench=bench
        if isinstance(bench, str) and path.stem == result_stem(bench, kind)
        else path.stem,
        top1=float(top1),
        weights=weights if isinstance(weights, str) else "unknown",
        protocol=protocol_label(data),
        path=path,
        step=checkpoint_step(data),
        kind=kind,
        profile="reference" if data.get("profile") == "reference" else "paper",
    )


def checkpoint_step(result: dict[str, Any]) -> int | None:
    """The training step of the checkpoint a result probed (``checkpoint.step``), or ``None``
    when the result does not record it (older or hand-written files)."""
    checkpoint = result.get("checkpoint")
    step = checkpoint.get("step") if isinstance(checkpoint, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def protocol_label(result: dict[str, Any]) -> str:
    """E.g. ``attentive probe, 50 epochs, pooled space2x2, reference protocol``."""
    hparams = result.get("hparams")
    hparams = hparams if isinstance(hparams, dict) else {}
    if hparams.get("impl") == "sklearn":
        label = "scikit-learn logistic regression"
    else:
        label = f"{result.get('probe', 'unknown')} probe"
        if "epochs" in hparams:
            label += f", {hparams['epochs']} epochs"
    pooling = result.get("pooling")
    if pooling not in (None, "none"):
        label += f", pooled {pooling}"
    if result.get("sweep"):
        label += ", lr x wd sweep"
    label += _limit_text(result)
    if result.get("protocol_name"):
        label += f", {result['protocol_name']} protocol"
    n_seeds = result.get("n_seeds")
    if isinstance(n_seeds, int) and n_seeds > 1:
        label += f", mean of {n_seeds} data/probe seeds"
    return label


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


def _default_kind(bench: str, runs_kinds: Sequence[dict[str, ProbeResult]]) -> str:
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
    """The probe kind each benchmark column shows (see the module docstring).

    Raises:
        ConfigError: an unknown kind, a task no run has, or a kind no run has for a column.
    """
    every, per_task = parse_probe_choice(probe or ())
    available: dict[str, list[dict[str, ProbeResult]]] = {}
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


def _limit_text(result: dict[str, Any]) -> str:
    """``, --limit 24 (24 train / 24 val clips)`` when the caches were cut with ``--limit``: a
    demo-sized number is not the benchmark's."""
    protocol = result.get("protocol")
    splits = protocol.values() if isinstance(protocol, dict) else ()
    limits = [p["limit"] for p in splits if isinstance(p, dict) and isinstance(p.get("limit"), int)]
    if not limits:
        return ""
    n_train, n_val = result.get("n_train"), result.get("n_val")
    sizes = (
        f" ({n_train} train / {n_val} val clips)"
        if isinstance(n_train, int) and isinstance(n_val, int)
        else ""
    )
    return f", --limit {max(limits)}{sizes}"


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# --------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs by config (up to seed and runtime keys) and by whether they were trained (an
    untrained control is its own row); give each group a unique label."""
    groups: dict[tuple[str, bool], Group] = {}
    for order, run in enumerate(runs):
        key = (method_key(run.config), run.untrained)
        if key not in groups:
            name = run.display_name + (UNTRAINED_SUFFIX if run.untrained else "")
            config = strip_keys(run.config, GROUPING_IGNORED)
            groups[key] = Group(name, config, [], order, untrained=run.untrained)
        groups[key].runs.append(run)
    out = list(groups.values())
    _assign_labels(out)
    return out


def method_key(config: dict[str, Any]) -> str:
    """Runs whose configs give the same key are seeds of one method: the config without its
    seed and runtime keys (:data:`GROUPING_IGNORED`), as canonical JSON."""
    canonical = canonical_data_names(config)  # imagenet100 (older runs) is in100
    return json.dumps(strip_keys(canonical, GROUPING_IGNORED), sort_keys=True, default=str)


def strip_keys(config: dict[str, Any], dotted: Iterable[str]) -> dict[str, Any]:
    """A copy of ``config`` without the given dotted keys (absent ones are ignored)."""
    out = json.loads(json.dumps(_str_keys(config), default=str))
    for key in dotted:
        *parents, last = key.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def _str_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _str_keys(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_str_keys(v) for v in obj]
    return obj


def _assign_labels(groups: list[Group]) -> None:
    by_name: dict[str, list[Group]] = {}
    for g in groups:
        by_name.setdefault(g.display_name, []).append(g)
    for same in by_name.values():
        for g in same:
            g.label = g.display_name if len(same) == 1 else _disambiguated(g, same)
    _make_unique(groups)


def _disambiguated(group: Group, same: list[Group]) -> str:
    keys: list[str] = []
    for other in same:
        if other is not group:
            keys += [k for k in config_diff(group.config, other.config) if k not in keys]
    shown = [f"{k}={_fmt_config_value(_get_dotted(group.config, k))}" for k in keys[:3]]
    more = ", …" if len(keys) > 3 else ""
    return f"{group.display_name} ({', '.join(shown)}{more})"


def _make_unique(groups: list[Group]) -> None:
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
        if seen[g.label] > 1:
            g.label = f"{g.label} #{seen[g.label]}"


_UNSET = object()


def _get_dotted(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _UNSET
    return node


def _fmt_config_value(value: Any) -> str:
    if value is _UNSET:
        return "unset"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def decimal_delta(a: float, b: float) -> Decimal:
    """``a − b`` in decimal on the values as written (8.38 − 8.68 is exactly −0.30)."""
    return Decimal(repr(float(a))) - Decimal(repr(float(b)))


def round2(value: float | Decimal) -> Decimal:
    """Two decimals, half to even; −0.00 becomes 0.00."""
    d = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    q = d.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return q if q != 0 else Decimal("0.00")


def signed(value: float | Decimal) -> str:
    """``+5.92``, ``-0.30``, ``+0.00`` (ASCII signs)."""
    return f"{round2(value):+.2f}"


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """95 % Welch t interval of mean(a) − mean(b); both need two or more values. ``None`` when
    neither side varies: a zero-width interval would claim a certainty the seeds cannot give
    (e.g. two probes that both hit the same 2.5-point step of a 40-clip test set)."""
    from scipy import stats

    delta = float(np.mean(a)) - float(np.mean(b))
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se2 = float(va + vb)
    if se2 == 0:
        return None
    df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * math.sqrt(se2)
    return delta - half, delta + half


# --------------------------------------------------------------------------------------
# Building the table
# --------------------------------------------------------------------------------------


def build_table(
    runs: Sequence[RunRecord],
    baseline: str | None = None,
    benches: Sequence[str] | None = None,
    sort: str = "delta",
    unreadable: Sequence[Unreadable] = (),
    probe: Sequence[str] | None = None,
) -> CompareTable:
    """The comparison table of ``runs`` (see the module docstring for the semantics).
    ``probe``: ``--probe`` values (``KIND`` or ``TASK=KIND``), the probe kind of each column.

    Raises:
        ConfigError: an unknown ``baseline``, bench, ``sort`` or probe kind.
    """
    if sort not in SORTS:
        raise ConfigError(f"unknown sort {sort!r}{suggestion(sort, SORTS)}")
    kinds = choose_kinds(runs, probe, benches)
    runs = select_kinds(runs, kinds)
    with_results = [r for r in runs if r.by_kind]
    groups = group_runs(with_results)
    order = column_order(groups, benches)
    rows = [_row(g, order) for g in groups]
    base, base_note = _choose_baseline(rows, baseline)
    if base is not None:
        base.is_baseline = True
        _fill_deltas(rows, base, order)
    _mark_best(rows, order)
    rows = sort_rows(rows, sort, {r.label: g.order for r, g in zip(rows, groups, strict=True)})
    table = CompareTable(
        columns=[
            Column(b, _protocols(groups, b), kinds[b], _others(runs, b, kinds[b])) for b in order
        ],
        rows=rows,
        baseline=base.label if base else None,
        unreadable=list(unreadable),
        no_results=[r.path for r in runs if not r.by_kind],
    )
    table.notes = _notes(table, groups, base_note)
    return table


def _others(runs: Sequence[RunRecord], bench: str, shown: str) -> list[str]:
    kinds = {k for r in runs for k in r.by_kind.get(bench, {}) if k != shown}
    return sorted(kinds, key=_kind_rank)


def column_order(groups: Sequence[Group], benches: Sequence[str] | None) -> list[str]:
    """The benchmark columns: ``benches`` as given, else every benchmark present, in order."""
    present = {b for g in groups for r in g.runs for b in r.results}
    if benches:
        for b in benches:
            if b not in present:
                raise ConfigError(
                    f"no run has results for bench {b!r}{suggestion(b, present or ['(none)'])}"
                )
        return list(dict.fromkeys(benches))
    known = [b for b in BENCH_ORDER if b in present]
    return known + sorted(present - set(BENCH_ORDER))


def _row(group: Group, order: Sequence[str]) -> Row:
    cells = {}
    for bench in order:
        pairs = group.values(bench)
        values = [v for _, v in pairs]
        cell = Cell(bench, values, [s for s, _ in pairs])
        if values:
            cell.mean = float(np.mean(values))
            cell.std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        cells[bench] = cell
    weights = sorted({res.weights for r in group.runs for res in r.results.values()})
    return Row(
        label=group.label,
        display_name=group.display_name,
        runs=[r.path for r in group.runs],
        seeds=[r.seed for r in group.runs],
        cells=cells,
        weights=weights,
        untrained=group.untrained,
    )


def _fill_deltas(rows: Sequence[Row], base: Row, order: Sequence[str]) -> None:
    for row in rows:
        if row is base:
            continue
        for bench in order:
            cell, ref = row.cells[bench], base.cells[bench]
            if cell.mean is None or ref.mean is None:
                continue
            cell.delta = float(decimal_delta(cell.mean, ref.mean))
            if cell.n >= 2 and ref.n >= 2:
                cell.ci95 = welch_interval(cell.values, ref.values)
                cell.no_spread = cell.ci95 is None
        row.univ = universal(row, order)


def universal(row: Row, order: Sequence[str]) -> str:
    """``Yes``/``Yes†``/``No``/``—``: whether the row improves every benchmark it has."""
    deltas = [d for b in order if (d := row.cells[b].delta) is not None]
    if not deltas:
        return MISSING
    if any(round2(d) <= 0 for d in deltas):
        return "No"
    return "Yes" if len(deltas) == len(order) else "Yes†"


def _mark_best(rows: Sequence[Row], order: Sequence[str]) -> None:
    for bench in order:
        means = [round2(m) for r in rows if (m := r.cells[bench].mean) is not None]
        if not means:
            continue
        top = max(means)
        for r in rows:
            mean = r.cells[bench].mean
            r.cells[bench].best = mean is not None and round2(mean) == top


def sort_rows(rows: Sequence[Row], sort: str, first_seen: dict[str, int]) -> list[Row]:
    """The baseline first, then the rest by ``sort`` (``delta``, ``name`` or ``input``)."""
    base = [r for r in rows if r.is_baseline]
    rest = [r for r in rows if not r.is_baseline]
    if sort == "name":
        rest.sort(key=lambda r: (r.label.casefold(), r.label))
    elif sort == "input":
        rest.sort(key=lambda r: first_seen[r.label])
    else:
        rest.sort(key=_delta_key)
    return base + rest


def _delta_key(row: Row) -> tuple[int, float, str, str]:
    deltas = [c.delta for c in row.cells.values() if c.delta is not None]
    if not deltas:
        return (1, 0.0, row.label.casefold(), row.label)
    return (0, -float(np.mean(deltas)), row.label.casefold(), row.label)


# --------------------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------------------


def find_row(rows: Sequence[Row], name: str, what: str = "--baseline") -> Row:
    """The row ``name`` names: exact label/display name first, then a unique substring."""
    wanted = name.casefold()
    exact = [r for r in rows if wanted in (r.label.casefold(), r.display_name.casefold())]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [r for r in rows if wanted in r.label.casefold()]
    if len(partial) == 1:
        return partial[0]
    labels = [r.label for r in rows]
    if partial:
        matches = ", ".join(r.label for r in partial)
        raise ConfigError(f"{what} {name!r} matches several rows ({matches}); give a full label")
    close = close_match(name, labels)
    hint = f"; did you mean {close!r}?" if close else ""
    raise ConfigError(f"no row matches {what} {name!r}{hint}; rows: {'; '.join(labels)}")


def _choose_baseline(rows: Sequence[Row], name: str | None) -> tuple[Row | None, str]:
    """The baseline row and a note for when there is none."""
    if name is not None:
        return find_row(rows, name), ""
    candidates = [  # an untrained control of the baseline recipe is not the baseline
        r
        for r in rows
        if not r.untrained and re.search(r"\bbaseline\b", r.display_name, re.IGNORECASE)
    ]
    if len(candidates) == 1:
        return candidates[0], ""
    if candidates:
        listed = "; ".join(r.label for r in candidates)
        return None, f"No Δ: several rows could be the baseline ({listed}); pass --baseline NAME."
    if not rows:
        return None, ""
    return None, "No Δ: no row is named like a baseline; pass --baseline NAME to add Δ columns."


# --------------------------------------------------------------------------------------
# Notes
# --------------------------------------------------------------------------------------


def _protocols(groups: Sequence[Group], bench: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in groups:
        for run in g.runs:
            result = run.results.get(bench)
            if result is not None and g.label not in out.setdefault(result.protocol, []):
                out[result.protocol].append(g.label)
    return out


def _notes(table: CompareTable, groups: Sequence[Group], base_note: str) -> list[str]:
    notes = _marker_notes(table)
    notes += [_weights_note(table.rows)] if table.rows else []
    notes += _kind_notes(table.columns)
    notes += _protocol_notes(table.columns)
    notes += [
        f"{r.label}: {len(r.runs)} runs, seeds {_seeds(r.seeds)}"
        for r in table.rows
        if len(r.runs) > 1
    ]
    notes += [
        f"{r.label}: an untrained control (probed at step 0, e.g. pretrain --max-steps 0), "
        "not a seed of its recipe"
        for r in table.rows
        if r.untrained
    ]
    notes += _duplicate_seed_notes(groups)
    notes += [base_note] if base_note else []
    rows_profiles = [(g.label, run_profile(g.runs[0])) for g in groups if g.runs]
    columns = [
        (c.bench, any(r.results[c.bench].profile == "reference"
                      for g in groups for r in g.runs if c.bench in r.results))
        for c in table.columns
    ]  # fmt: skip
    notes += profile_notes(rows_profiles, columns)
    notes += [f"no results: {p} (no probes/*.json)" for p in table.no_results]
    notes += [f"unreadable: {u.path}: {u.reason}" for u in table.unreadable]
    notes += [n for g in groups for r in g.runs for n in r.shadowed]
    return notes


def _kind_notes(columns: Sequence[Column]) -> list[str]:
    """Which kind of probe each column shows, and the others the runs also have."""
    if not columns:
        return []
    parts = [
        f"{bench_header(c.bench)} {c.kind}"
        + (f" (also in these runs: {', '.join(c.other_kinds)})" if c.other_kinds else "")
        for c in columns
    ]
    choose = (
        " — choose with --probe KIND or --probe TASK=KIND"
        if any(c.other_kinds for c in columns)
        else ""
    )
    return ["Probe kind: " + "; ".join(parts) + choose + "."]


def _marker_notes(table: CompareTable) -> list[str]:
    notes = []
    if table.baseline is not None:
        notes.append(f"Δ: top-1 change in percentage points vs {table.baseline}.")
    cells = [c for r in table.rows for c in r.cells.values()]
    if any(c.ci95 is not None for c in cells):
        notes.append("[lo, hi]: 95% Welch t interval of Δ (both rows have ≥ 2 runs).")
    if any(c.excludes_zero for c in cells):
        notes.append(STAR_NOTE)
    if any(c.no_spread for c in cells):
        notes.append(NO_SPREAD_NOTE)
    if any(r.univ == "Yes†" for r in table.rows):
        notes.append(DAGGER_NOTE)
    return notes


def _weights_note(rows: Sequence[Row]) -> str:
    by_weights: dict[str, list[str]] = {}
    for row in rows:
        for w in row.weights:
            by_weights.setdefault(WEIGHTS_NAMES.get(w, w), []).append(row.label)
    if len(by_weights) == 1:
        return f"Weights: {next(iter(by_weights))} (all rows)."
    parts = [f"{w} — {', '.join(labels)}" for w, labels in by_weights.items()]
    return "Weights: " + "; ".join(parts) + "."


def _protocol_notes(columns: Sequence[Column]) -> list[str]:
    """One line for the columns with a single protocol, one ⚠ line per mixed column."""
    uniform = [
        f"{bench_header(c.bench)}: {next(iter(c.protocols))}"
        for c in columns
        if len(c.protocols) == 1
    ]
    notes = ["Probes: " + "; ".join(uniform) + "."] if uniform else []
    for column in columns:
        if column.mixed:
            parts = [f"{p} ({', '.join(labels)})" for p, labels in column.protocols.items()]
            notes.append(f"⚠ {bench_header(column.bench)} mixes protocols: " + "; ".join(parts))
    return notes


def _duplicate_seed_notes(groups: Sequence[Group]) -> list[str]:
    notes = []
    for g in groups:
        seeds = [r.seed for r in g.runs if r.seed is not None]
        dupes = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        for s in dupes:
            paths = ", ".join(str(r.path) for r in g.runs if r.seed == s)
            notes.append(f"warning: {g.label}: runs {paths} share train.seed {s} (grouped anyway)")
    return notes


def _seeds(seeds: Sequence[Any]) -> str:
    return ", ".join("?" if s is None else str(s) for s in seeds)


# --------------------------------------------------------------------------------------
# Cell text
# --------------------------------------------------------------------------------------


def value_text(cell: Cell, group_size: int = 1) -> str:
    """``8.38``, ``8.38 ± 0.21 (3)``, ``8.38 (1)`` (one value of a multi-run row) or ``—``."""
    if cell.mean is None:
        return MISSING
    if cell.n == 1:
        return f"{cell.mean:.2f}" + (" (1)" if group_size > 1 else "")
    return f"{cell.mean:.2f} ± {cell.std:.2f} ({cell.n})"


def delta_text(cell: Cell) -> str:
    """``+5.92 ↑``, ``-0.30 ↓``, ``+0.00``, ``+1.20 ↑ [+0.31, +2.09] *`` or ``—``."""
    if cell.delta is None:
        return MISSING
    d = round2(cell.delta)
    text = signed(d) + (" ↑" if d > 0 else " ↓" if d < 0 else "")
    if cell.ci95 is not None:
        text += f" [{signed(cell.ci95[0])}, {signed(cell.ci95[1])}]"
        text += " *" if cell.excludes_zero else ""
    return text


def _header(table: CompareTable) -> list[str]:
    out = ["Method"]
    for column in table.columns:
        out += [column.header, "Δ"] if table.has_delta else [column.header]
    return out + (["Univ."] if table.has_delta else [])


def _cells(table: CompareTable, row: Row, bold: bool) -> list[str]:
    out = [row.label]
    for column in table.columns:
        cell = row.cells[column.bench]
        value = value_text(cell, len(row.runs))
        out.append(f"**{value}**" if bold and cell.best else value)
        if table.has_delta:
            out.append("" if row.is_baseline else delta_text(cell))
    return out + ([row.univ] if table.has_delta else [])


# --------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------


def render_text(table: CompareTable) -> str:
    """Aligned plain-text columns, a header rule, then the notes."""
    if not table.rows:
        return "\n".join(["no runs with results to compare", *table.notes]) + "\n"
    lines = [_header(table)] + [_cells(table, r, bold=False) for r in table.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]

    def fmt(cells: list[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    out = [fmt(lines[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in lines[1:]]
    return "\n".join(out + (["", *table.notes] if table.notes else [])) + "\n"


def render_markdown(table: CompareTable) -> str:
    """A GitHub table (best values bold), then the notes as a list after a blank line."""
    if not table.rows:
        return "\n".join(["No runs with results to compare.", "", *_md_notes(table)]) + "\n"
    header = _header(table)
    lines = [_md_line(header), "|" + "---|" * len(header)]
    lines += [_md_line(_cells(table, r, bold=True)) for r in table.rows]
    notes = _md_notes(table)
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _md_notes(table: CompareTable) -> list[str]:
    return ["- " + re.sub(r"^([*†])", r"\\\1", n) for n in table.notes]


def render_csv(table: CompareTable) -> str:
    """One row per method; per bench: n, mean, std, delta, ci_lo, ci_hi (empty if missing)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fields = ("n", "mean", "std", "delta", "ci_lo", "ci_hi")
    head = ["method", "display_name", "baseline", "runs"]
    head += [f"{c.bench}_{f}" for c in table.columns for f in fields]
    writer.writerow([*head, "univ"])
    for row in table.rows:
        out: list[Any] = [row.label, row.display_name, int(row.is_baseline), len(row.runs)]
        for column in table.columns:
            out += _csv_cell(row.cells[column.bench])
        writer.writerow([*out, row.univ])
    return buf.getvalue()


def _csv_cell(cell: Cell) -> list[Any]:
    lo, hi = cell.ci95 if cell.ci95 is not None else (None, None)
    values = [cell.n, cell.mean, cell.std, cell.delta, lo, hi]
    return ["" if v is None else v for v in values]


def render_json(table: CompareTable) -> str:
    """The whole table as JSON (rows, per-bench cells, columns, notes, unreadable runs)."""
    doc = {
        "baseline": table.baseline,
        "columns": [
            {
                "bench": c.bench,
                "header": bench_header(c.bench),
                "kind": c.kind,
                "other_kinds": c.other_kinds,
                "protocols": c.protocols,
            }
            for c in table.columns
        ],
        "rows": [_json_row(r) for r in table.rows],
        "notes": table.notes,
        "no_results": [str(p) for p in table.no_results],
        "unreadable": [{"path": str(u.path), "reason": u.reason} for u in table.unreadable],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"


def _json_row(row: Row) -> dict[str, Any]:
    return {
        "label": row.label,
        "display_name": row.display_name,
        "baseline": row.is_baseline,
        "runs": [str(p) for p in row.runs],
        "seeds": row.seeds,
        "weights": row.weights,
        "untrained": row.untrained,
        "univ": row.univ or None,
        "cells": {b: _json_cell(c) for b, c in row.cells.items()},
    }


def _json_cell(cell: Cell) -> dict[str, Any]:
    return {
        "mean": cell.mean,
        "std": cell.std,
        "n": cell.n,
        "values": cell.values,
        "seeds": cell.seeds,
        "delta": cell.delta,
        "ci95": list(cell.ci95) if cell.ci95 is not None else None,
        "excludes_zero": cell.excludes_zero,
        "best": cell.best,
    }


# --------------------------------------------------------------------------------------
# Figure 2
# --------------------------------------------------------------------------------------


def plot_deltas(table: CompareTable, path: Path, highlight: str | None = None) -> Path:
    """Figure 2: grouped bars of Δ (pp) per benchmark, one group per non-baseline row.

    ``highlight`` names the row drawn on a shaded span with a bold tick label (default: the
    first non-baseline row). The PNG is 1500×675 pixels (10×4.5 in at 150 dpi), written
    atomically.

    Raises:
        ConfigError: no baseline (no Δ to plot), no other row, or an unknown ``highlight``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _plot_rows(table)
    marked = highlight_row(table, highlight)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw_bars(ax, table, rows)
    _decorate(ax, table, rows, rows.index(marked))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    path = Path(path)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
    return path


def _plot_rows(table: CompareTable) -> list[Row]:
    if table.baseline is None:
        raise ConfigError("the plot shows Δ vs a baseline; pass --baseline NAME")
    rows = [r for r in table.rows if not r.is_baseline]
    if not rows:
        raise ConfigError("nothing to plot: the table has only the baseline row")
    return rows


def highlight_row(table: CompareTable, highlight: str | None = None) -> Row:
    """The row Figure 2 highlights: ``highlight`` if given, else the first non-baseline row."""
    rows = _plot_rows(table)
    return find_row(rows, highlight, "highlight") if highlight else rows[0]


def bench_colours(benches: Sequence[str]) -> dict[str, str]:
    """Figure 2's colour per benchmark (the paper's three, then a fixed cycle)."""
    spare = [c for c in OTHER_COLOURS if c not in BENCH_COLOURS.values()]
    out: dict[str, str] = {}
    for bench in benches:
        out[bench] = BENCH_COLOURS.get(bench) or spare[len(out) % len(spare)]
    return out


def _draw_bars(ax: Any, table: CompareTable, rows: Sequence[Row]) -> None:
    benches = [c.bench for c in table.columns]
    colours = bench_colours(benches)
    width = 0.8 / max(len(benches), 1)
    x = np.arange(len(rows), dtype=float)
    for j, bench in enumerate(benches):
        pos = x + (j - (len(benches) - 1) / 2) * width
        cells = [r.cells[bench] for r in rows]
        heights = [c.delta if c.delta is not None else np.nan for c in cells]
        ax.bar(pos, heights, width, color=colours[bench], label=bench_header(bench))
        # a cell has a ci95 only when it has a delta (_fill_deltas sets both)
        with_ci = [
            (p, c.delta, c.ci95)
            for p, c in zip(pos, cells, strict=True)
            if c.delta is not None and c.ci95 is not None
        ]
        if with_ci:
            err = [
                [d - ci[0] for _, d, ci in with_ci],
                [ci[1] - d for _, d, ci in with_ci],
            ]
            ys = [d for _, d, _ in with_ci]
            xs = [p for p, _, _ in with_ci]
            ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=2)


def _decorate(ax: Any, table: CompareTable, rows: Sequence[Row], marked: int) -> None:
    ax.axvspan(marked - 0.5, marked + 0.5, color="gold", alpha=0.18, zorder=0)
    ax.axhline(0, color="black", linewidth=0.8)
    pad = max(0.0, (MIN_PLOT_GROUPS - len(rows)) / 2)  # a lone group keeps a sane bar width
    ax.set_xlim(-0.6 - pad, len(rows) - 0.4 + pad)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.label for r in rows], rotation=35, ha="right", fontsize=8)
    ax.get_xticklabels()[marked].set_fontweight("bold")
    ax.set_ylabel("Δ top-1 accuracy (pp)")
    ax.set_title(f"Δ vs {table.baseline}", fontsize=10)
    ax.grid(axis="y", linestyle=":", alpha=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False)
