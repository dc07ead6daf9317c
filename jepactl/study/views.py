"""What ``study plan`` and ``study status`` print: one row per run, one column per stage, a
line per stage that needs attention, the GPU-hours left, and the command that resumes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from jepactl.study.graph import REPORT
from jepactl.study.spec import Study
from jepactl.study.state import STATES, Snapshot, StageStatus


def matrix(study: Study, snap: Snapshot, details: bool) -> str:
    """Rows: runs; columns: ``pretrain``, ``extract TASK``, ``probe TASK-KIND``."""
    columns: list[str] = []
    cells: dict[str, dict[str, StageStatus]] = {}
    for s in snap.stages:
        if s.stage.run is None:
            continue
        col = s.stage.label.replace("/", " ")
        if col not in columns:
            columns.append(col)
        cells.setdefault(s.stage.run.name, {})[col] = s
    header = ["run", *columns]
    lines = [header]
    for run in study.runs:
        row = [run.name]
        for col in columns:
            status = cells.get(run.name, {}).get(col)
            row.append("" if status is None else _cell(status, details))
        lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    report = snap.by_id.get(REPORT)
    if report is not None:
        out.append(f"report: {report.state}" + (f" ({report.detail})" if report.detail else ""))
    return "\n".join(out)


def _cell(status: StageStatus, details: bool) -> str:
    text: str = status.state
    if status.stage.kind == "pretrain":
        if status.state == "done" and status.stage.run is not None:
            text += f" {status.stage.run.target_step}"
        elif status.progress:
            text += f" {status.progress[0]}/{status.progress[1]}"
    if details and status.live and status.job is not None and status.job.job_id:
        text += f" #{status.job.job_id}"
    return text


def summary(study: Study, snap: Snapshot) -> str:
    counts = snap.counts()
    order = ["done", "running", "queued", "unknown", "failed", "blocked", "todo", "waiting"]
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return (
        f"study {study.name} in {study.root}: {len(study.runs)} runs x "
        f"{len(study.tasks)} task(s), {len(snap.stages)} stages: {', '.join(parts)}"
    )


def attention(snap: Snapshot) -> list[str]:
    """A line per failed, blocked or running stage: what it is doing or why it stopped."""
    lines = []
    for s in snap.stages:
        if s.state in ("failed", "blocked"):
            lines.append(f"{s.state}: {s.stage.id}: {s.detail} (log: {s.log})")
        elif s.live:
            lines.append(f"{s.state}: {s.stage.id}: {s.detail}")
    return lines


def legend(states: Iterable[str]) -> list[str]:
    present = set(states)
    return [f"  {k}: {STATES[k]}" for k in STATES if k in present]


def bench_step_ms(files: Iterable[Path]) -> dict[str, float]:
    """``recipe -> ms per step`` from ``jepactl bench pretrain --json`` files."""
    out: dict[str, float] = {}
    for path in files:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        for entry in data.get("recipes", []) if isinstance(data, dict) else []:
            if isinstance(entry, dict) and isinstance(entry.get("ms_per_step"), int | float):
                out[str(entry.get("recipe"))] = float(entry["ms_per_step"])
    return out


def estimate(study: Study, snap: Snapshot, bench_files: list[Path]) -> str:
    """GPU-hours of pretraining left, from measured step times (``bench pretrain --json``)."""
    steps = {
        s.stage.id: s.stage.run.target_step - (s.progress[0] if s.progress else 0)
        for s in snap.stages
        if s.stage.kind == "pretrain" and s.state != "done" and s.stage.run is not None
    }
    left = [s for s in snap.stages if steps.get(s.stage.id, 0) > 0]
    if not left:
        return "pretraining: no steps left"
    ms = bench_step_ms(bench_files)
    if not ms:
        return (
            f"pretraining left: {sum(steps.values())} steps in {len(left)} runs; no step-time "
            "figures to estimate GPU-hours from: run `jepactl bench pretrain --size paper "
            f"--device cuda --recipe ... --json {study.root}/bench/gpu.json`"
        )
    fallback = sum(ms.values()) / len(ms)
    hours = 0.0
    guessed = 0
    for s in left:
        assert s.stage.run is not None
        step_ms = ms.get(s.stage.run.recipe)
        if step_ms is None:
            step_ms, guessed = fallback, guessed + 1
        hours += steps[s.stage.id] * step_ms / 3.6e6
    note = f" ({guessed} run(s) at the mean of the benched recipes)" if guessed else ""
    gpus = study.spec.resources.gpus_per_node * study.spec.resources.nodes
    return (
        f"pretraining left: {sum(steps.values())} steps in {len(left)} runs, about "
        f"{hours:.1f} GPU-hours at the benched step times{note} (one GPU at the recipe's global "
        f"batch, assuming linear scaling); {hours / max(1, gpus):.1f} h of wall time over "
        f"{gpus} GPU(s) if the runs go one after another"
    )
