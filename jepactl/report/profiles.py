"""Which profile each compared number comes from, so ``compare`` never puts the paper's code
as run (``--profile reference``) beside the paper's method without saying so.

Two things carry a profile: a run's pretraining (``profile:`` in its ``config.yaml``) and an
evaluation (a task evaluated under the reference profile is its own task ``TASK@reference``,
with ``profile`` in its result). :func:`select_profile` keeps one profile (``compare
--profile``); :func:`profile_notes` says where a table mixes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from jepactl.profiles import check_profile
from jepactl.report.runs import RunRecord


def run_profile(run: RunRecord) -> str:
    """The profile the run was pretrained under (``paper`` for runs older than profiles)."""
    value = run.config.get("profile")
    return value if isinstance(value, str) and value else "paper"


def select_profile(runs: Sequence[RunRecord], profile: str) -> tuple[list[RunRecord], list[str]]:
    """The runs pretrained under ``profile``, each with only its results evaluated under it,
    and one note per kind of thing left out."""
    check_profile(profile)
    kept: list[RunRecord] = []
    other_runs, other_results = 0, 0
    for run in runs:
        if run_profile(run) != profile:
            other_runs += 1
            continue
        by_kind = {
            b: kept_kinds
            for b, kinds in run.by_kind.items()
            if (kept_kinds := {k: r for k, r in kinds.items() if r.profile == profile})
        }
        results = {b: r for b, r in run.results.items() if r.profile == profile}
        other_results += sum(len(k) for k in run.by_kind.values())
        other_results -= sum(len(k) for k in by_kind.values())
        kept.append(replace(run, by_kind=by_kind, results=results))
    notes = []
    if other_runs:
        notes.append(f"--profile {profile}: left out {other_runs} run(s) pretrained otherwise")
    if other_results:
        notes.append(
            f"--profile {profile}: left out {other_results} task result(s) evaluated otherwise"
        )
    return kept, notes


def profile_notes(
    labels_profiles: Sequence[tuple[str, str]], columns: Sequence[tuple[str, bool]]
) -> list[str]:
    """Notes on the profiles of the rows (``(label, pretraining profile)``) and columns
    (``(task, evaluated under the reference profile)``)."""
    notes = []
    rows_ref = [label for label, p in labels_profiles if p == "reference"]
    cols_ref = [c for c, ref in columns if ref]
    if rows_ref:
        notes.append(
            "pretrained with --profile reference (the paper's code as run, "
            f"docs/reference-differences.md): {', '.join(rows_ref)}"
        )
    if cols_ref:
        notes.append(
            "evaluated as the paper's code did (--profile reference: its pooling, probe, "
            f"epochs, weights): {', '.join(cols_ref)}"
        )
    mixed_rows = bool(rows_ref) and len(rows_ref) < len(labels_profiles)
    mixed_cols = bool(cols_ref) and len(cols_ref) < len(columns)
    if mixed_rows or mixed_cols:
        what = " and ".join(w for w, m in (("rows", mixed_rows), ("columns", mixed_cols)) if m)
        notes.append(
            f"MIXED PROFILES: {what} of this table come from both the paper mode and the "
            "reference profile; a difference between them measures the profile as well as the "
            "method (compare --profile paper or --profile reference shows one)"
        )
    return notes
