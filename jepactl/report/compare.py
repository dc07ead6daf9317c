"""``jepactl compare``: the paper's result tables (Tables 3, 4) and Figure 2 from run directories.

Inputs. A run directory holds ``config.yaml`` (the resolved recipe, read as a plain dict, never
validated) and ``probes/<task>-<kind>.json``, one probe result per benchmark and probe kind
(``probes/<task>.json`` in runs written before the kind was in the name; the kind is read from
the result itself, :attr:`jepactl.probe.records.ProbeResult.kind`), each read as one typed
:class:`~jepactl.probe.records.ProbeResult` (older formats migrated, a newer one refused with a
one-line reason). A run whose config or any probe result cannot be read is *unreadable*: it is
listed with the file and the reason and left out, and the other runs are still compared. A run
with no ``probes/*.json`` is listed as having no results.

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

Layout. This module is the entry point that other code imports from; the code lives in
:mod:`~jepactl.report.runs` (reading run directories, probe kinds),
:mod:`~jepactl.report.grouping` (runs into methods), :mod:`~jepactl.report.table` (the table
model and the arithmetic of its numbers), :mod:`~jepactl.report.build` (:func:`build_table`:
rows, Δ, Univ., baseline, order), :mod:`~jepactl.report.notes` (the notes),
:mod:`~jepactl.report.render` (text, markdown, CSV, JSON) and :mod:`~jepactl.report.figure`
(Figure 2).
"""

from __future__ import annotations

from jepactl.report.build import (
    SORTS,
    build_table,
    column_order,
    find_row,
    sort_rows,
    universal,
)
from jepactl.report.figure import (
    BENCH_COLOURS,
    DPI,
    FIGSIZE,
    MIN_PLOT_GROUPS,
    OTHER_COLOURS,
    bench_colours,
    highlight_row,
    plot_deltas,
)
from jepactl.report.grouping import (
    GROUPING_IGNORED,
    UNTRAINED_SUFFIX,
    Group,
    group_runs,
    method_key,
    strip_keys,
)
from jepactl.report.notes import (
    DAGGER_NOTE,
    NO_SPREAD_NOTE,
    STAR_NOTE,
    WEIGHTS_NAMES,
)
from jepactl.report.render import (
    delta_text,
    render_csv,
    render_json,
    render_markdown,
    render_text,
    value_text,
)
from jepactl.report.runs import (
    ResultCell,
    RunRecord,
    Unreadable,
    choose_kinds,
    collect_runs,
    parse_probe_choice,
    protocol_label,
    read_result,
    read_run,
    select_kinds,
    task_default_kind,
)
from jepactl.report.table import (
    BENCH_HEADERS,
    BENCH_ORDER,
    MISSING,
    Cell,
    Column,
    CompareTable,
    Row,
    bench_header,
    decimal_delta,
    round2,
    signed,
    welch_interval,
)

__all__ = [
    "BENCH_COLOURS",
    "BENCH_HEADERS",
    "BENCH_ORDER",
    "DAGGER_NOTE",
    "DPI",
    "FIGSIZE",
    "GROUPING_IGNORED",
    "MIN_PLOT_GROUPS",
    "MISSING",
    "NO_SPREAD_NOTE",
    "OTHER_COLOURS",
    "SORTS",
    "STAR_NOTE",
    "UNTRAINED_SUFFIX",
    "WEIGHTS_NAMES",
    "Cell",
    "Column",
    "CompareTable",
    "Group",
    "ResultCell",
    "Row",
    "RunRecord",
    "Unreadable",
    "bench_colours",
    "bench_header",
    "build_table",
    "choose_kinds",
    "collect_runs",
    "column_order",
    "decimal_delta",
    "delta_text",
    "find_row",
    "group_runs",
    "highlight_row",
    "method_key",
    "parse_probe_choice",
    "plot_deltas",
    "protocol_label",
    "read_result",
    "read_run",
    "render_csv",
    "render_json",
    "render_markdown",
    "render_text",
    "round2",
    "select_kinds",
    "signed",
    "sort_rows",
    "strip_keys",
    "task_default_kind",
    "universal",
    "value_text",
    "welch_interval",
]
