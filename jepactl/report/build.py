"""Building the table (:func:`build_table`, whose semantics :mod:`jepactl.report.compare`
describes): runs to rows of mean ± std per benchmark, the baseline, Δ and its interval, Univ.,
the best values and the row order.

The one module that puts the parts together: the runs and their probe kinds
(:mod:`jepactl.report.runs`), the groups (:mod:`jepactl.report.grouping`), the model
(:mod:`jepactl.report.table`) and the notes (:mod:`jepactl.report.notes`), each cut apart so
that it fits in one reading.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from jepactl.errors import ConfigError
from jepactl.report.grouping import Group, group_runs
from jepactl.report.notes import table_notes
from jepactl.report.runs import RunRecord, Unreadable, choose_kinds, other_kinds, select_kinds
from jepactl.report.table import (
    BENCH_ORDER,
    MISSING,
    Cell,
    Column,
    CompareTable,
    Row,
    decimal_delta,
    round2,
)
from jepactl.stats import welch_interval
from jepactl.utils import close_match, suggestion

SORTS = ("delta", "name", "input")


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
    """The comparison table of ``runs`` (see :mod:`jepactl.report.compare` for the semantics).
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
            Column(b, _protocols(groups, b), kinds[b], other_kinds(runs, b, kinds[b]))
            for b in order
        ],
        rows=rows,
        baseline=base.label if base else None,
        unreadable=list(unreadable),
        no_results=[r.path for r in runs if not r.by_kind],
    )
    table.notes = table_notes(table, groups, base_note)
    return table


def _protocols(groups: Sequence[Group], bench: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in groups:
        for run in g.runs:
            result = run.results.get(bench)
            if result is not None and g.label not in out.setdefault(result.protocol, []):
                out[result.protocol].append(g.label)
    return out


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
