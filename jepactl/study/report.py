"""``study report``: ``jepactl compare`` over a study's runs, written to ``STUDY_ROOT/report.md``.

Seeds of one recipe group into one row (compare groups runs by config up to the seed); the
report adds, per row and task, the mean with its 95 % Student-t interval over seeds, and the
Δ vs the baseline with its Welch interval from compare. The untrained control (the baseline
recipe at step 0) and raw pixels are rows of their own when the study lists them in
``controls``. Figure 2 (Δ per task) is drawn beside the report when there is a baseline and a
row to compare with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jepactl.errors import ConfigError
from jepactl.report.compare import (
    CompareTable,
    Row,
    bench_header,
    build_table,
    collect_runs,
    plot_deltas,
    render_markdown,
    render_text,
)
from jepactl.stats import summarize
from jepactl.study.graph import run_dir
from jepactl.study.spec import Study
from jepactl.study.state import Paths, now
from jepactl.utils import atomic_write_text


@dataclass
class Report:
    table: CompareTable
    markdown: str  # what report.md holds
    text: str  # what the terminal shows
    path: Path
    figure: Path | None
    missing: list[str]  # runs without results yet


def interval_text(values: list[float]) -> str:
    """``mean [lo, hi] (n)`` over seeds, ``mean (1)`` for one value, ``—`` for none."""
    if not values:
        return "—"
    s = summarize(values)
    if s["ci95"] is None:
        return f"{s['mean']:.2f} (1)"
    lo, hi = s["ci95"]
    return f"{s['mean']:.2f} [{lo:.2f}, {hi:.2f}] ({s['n']})"


def seeds_table(table: CompareTable, markdown: bool) -> str:
    """Per row and task: the mean and its 95 % t interval over the row's seeds, then Δ."""
    benches = [c.bench for c in table.columns]
    header = ["Method", "seeds", *[bench_header(b) for b in benches]]
    if table.has_delta:
        header += [f"Δ {bench_header(b)}" for b in benches]
    lines = [header]
    for row in table.rows:
        cells = [row.label + (" (baseline)" if row.is_baseline else ""), str(len(row.runs))]
        cells += [interval_text(row.cells[b].values) if b in row.cells else "—" for b in benches]
        if table.has_delta:
            cells += [_delta(row, b) for b in benches]
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines[1:]]
        return "\n".join(out) + "\n"
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return (
        "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths), *map(fmt, lines[1:])]) + "\n"
    )


def _delta(row: Row, bench: str) -> str:
    if row.is_baseline:
        return ""
    cell = row.cells.get(bench)
    if cell is None or cell.delta is None:
        return "—"
    text = f"{cell.delta:+.2f}"
    if cell.ci95 is not None:
        text += f" [{cell.ci95[0]:+.2f}, {cell.ci95[1]:+.2f}]" + ("*" if cell.excludes_zero else "")
    return text


def make_report(study: Study, figure: bool | None = None) -> Report:
    """Build the study's tables from its run directories and write ``report.md``."""
    paths = Paths(study.root)
    dirs = [run_dir(study, r).root for r in study.runs]
    present = [str(d) for d in dirs if d.is_dir()]
    missing = [d.name for d in dirs if not d.is_dir()]
    if not present:
        raise ConfigError(
            f"{study.root} holds no run of {study.name} yet; start it with "
            f"`jepactl study run {study.name} --root {study.root}`"
        )
    runs, unreadable = collect_runs(present)
    base = next((r for r in study.runs if r.name.startswith(f"{study.baseline}-s")), None)
    baseline = None
    if base is not None:
        name = base.config.get("display_name")
        baseline = name if isinstance(name, str) and name.strip() else None
    spec = study.spec.report
    try:
        table = build_table(runs, baseline, None, spec.sort, unreadable, spec.probe or None)
    except ConfigError:
        if baseline is None:
            raise
        table = build_table(runs, None, None, spec.sort, unreadable, spec.probe or None)
    missing += [r.path.name for r in runs if not r.by_kind]
    figure_path: Path | None = None
    want = spec.figure if figure is None else figure
    if want and table.has_delta and len([r for r in table.rows if not r.is_baseline]) >= 1:
        figure_path = plot_deltas(table, paths.figure)
    title = study.spec.display_name or study.name
    parts = [
        f"# {title}\n",
        f"Study `{study.name}` in `{study.root}`: {len(study.runs)} runs "
        f"({len({r.seed for r in study.runs})} seeds), tasks "
        f"{', '.join(t.task for t in study.tasks) or 'none'}; written {now()} by "
        "`jepactl study report`.\n",
        "## Mean and 95 % interval over seeds\n",
        "Top-1 %, mean [95 % Student-t interval] (number of seeds); Δ in points vs the "
        "baseline with its 95 % Welch interval (* when it excludes 0).\n",
        seeds_table(table, markdown=True),
        "## The paper's table\n",
        render_markdown(table),
    ]
    if figure_path is not None:
        parts.append(f"## Figure 2\n\n![Δ vs the baseline per task]({figure_path.name})\n")
    if missing:
        parts.append(f"Runs without results yet: {', '.join(sorted(set(missing)))}.\n")
    markdown = "\n".join(parts)
    atomic_write_text(paths.report, markdown)
    text = seeds_table(table, markdown=False) + "\n" + render_text(table)
    atomic_write_text(paths.report_text, text)
    return Report(table, markdown, text, paths.report, figure_path, sorted(set(missing)))
