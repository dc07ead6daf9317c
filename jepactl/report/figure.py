"""Figure 2: grouped bars of Δ (pp) per benchmark, one group per non-baseline row, as a PNG.

Cut from the tables because it is the only part that needs matplotlib (imported inside
:func:`plot_deltas`, so printing a table never loads it); it draws from a built table only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jepactl.errors import ConfigError
from jepactl.report.build import find_row
from jepactl.report.table import CompareTable, Row, bench_header
from jepactl.utils import atomic_write_bytes

#: Figure 2's colours (the caption: Diving-48 blue, ImageNet-100 green, SSv2 red).
BENCH_COLOURS: dict[str, str] = {"diving48": "tab:blue", "in100": "tab:green", "ssv2": "tab:red"}
OTHER_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
FIGSIZE = (10.0, 4.5)
MIN_PLOT_GROUPS = 4  # the x-range of the figure spans at least this many groups
DPI = 150


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
