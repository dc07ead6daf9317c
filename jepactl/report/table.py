"""The table model: the :class:`CompareTable` that the renderers print, with its rows, cells and
columns, and the arithmetic of the printed numbers (Δ in decimal on the values as written,
two decimals half to even, the 95 % Welch interval).

Cut here so that the renderers (:mod:`jepactl.report.render`) and the figure
(:mod:`jepactl.report.figure`) depend on the shape of a table only, never on how
:mod:`jepactl.report.build` builds it from runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from jepactl.profiles import base_task
from jepactl.report.runs import Unreadable
from jepactl.stats import welch_interval  # noqa: F401 - its old home; it lives in stats.py

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
MISSING = "—"


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


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
