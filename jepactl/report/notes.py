"""The notes under the table (markdown footnotes, ``notes`` in JSON): the markers in use, the
weights, each column's probe kind and protocol, the seeds of multi-run rows, untrained
controls, shared seeds, the baseline, the profiles, and the runs left out.

Cut from :mod:`jepactl.report.build` because the notes only describe a table already built:
text computed once, which every renderer prints as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jepactl.report.grouping import Group
from jepactl.report.profiles import profile_notes, run_profile
from jepactl.report.table import Column, CompareTable, Row, bench_header

WEIGHTS_NAMES = {"teacher": "EMA teacher", "student": "student"}
DAGGER_NOTE = "† on the reported benchmarks only"
STAR_NOTE = "* 95% interval excludes 0"
NO_SPREAD_NOTE = "Δ without [lo, hi] although both rows have ≥ 2 runs: neither side varies."


def table_notes(table: CompareTable, groups: Sequence[Group], base_note: str) -> list[str]:
    """Every note of ``table``, in the order printed (``base_note``: why there is no Δ)."""
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
