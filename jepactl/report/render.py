"""The renderers of a :class:`~jepactl.report.table.CompareTable`: aligned text, GitHub markdown,
CSV and JSON, and the cell texts they share (``8.38 ± 0.21 (3)``, ``+1.20 ↑ [+0.31, +2.09] *``).

Cut from the model so that an output format is read, or added, here alone, without touching
how the table is built; each renderer reads a built table and returns text ending in a
newline.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from typing import Any

from jepactl.report.table import MISSING, Cell, CompareTable, Row, bench_header, round2, signed

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
