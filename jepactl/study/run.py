"""``study run``: check the study, record it in its root, and hand what is left to a launcher.

Rerunning is always safe: done stages are skipped (read from the run directories), queued or
running ones are left alone, failed or cancelled ones are started again and resume from their
checkpoints. A study whose runs' recipes or overrides changed since its root was first used is
refused, naming the keys, unless ``--force`` (which lets those runs' ``pretrain`` go on with
the new settings, as ``pretrain --force`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from jepactl.config import dump_yaml, parse_recipe
from jepactl.errors import ConfigError
from jepactl.lock import RunLock
from jepactl.study.graph import Stage, build_stages, recipe_file
from jepactl.study.spec import TASK_PREFIX, Study, changed_keys, check_components
from jepactl.study.state import (
    Paths,
    Snapshot,
    forced_runs,
    read_resolved,
    snapshot,
    write_resolved,
)
from jepactl.utils import atomic_write_text

LAUNCHERS = ("local", "slurm")


@dataclass
class RunOutcome:
    started: list[str] = field(default_factory=list)  # run locally, or submitted
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    nothing_to_do: bool = False
    stopped: bool = False
    snapshot: Snapshot | None = None


def run_study(
    study: Study,
    launcher: str,
    max_parallel: int | None,
    dry_run: bool,
    force: bool,
    say: Callable[[str], None],
    echo: Callable[[str], None],
) -> RunOutcome:
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher '{launcher}'; use local or slurm")
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--max-parallel must be >= 1, got {max_parallel}")
    if launcher == "slurm":
        from jepactl.study.slurm import check_cluster, check_sbatch, check_submitit

        check_submitit()
        if not dry_run:
            check_sbatch()
            check_cluster()
    check_components(study)  # every recipe as pretrain would check it, before anything starts
    paths = Paths(study.root)
    saved = read_resolved(paths)
    changed = changed_keys(saved, study) if saved else []
    if changed and not force:
        shown = "; ".join(map(str, changed[:5])) + (" ..." if len(changed) > 5 else "")
        raise ConfigError(
            f"{study.root} holds a study with other settings ({shown}); pass --force to go on "
            "with the new ones, or choose another --root"
        )
    forced = {c.owner for c in changed} | (forced_runs(paths) if saved else set())
    forced &= {r.name for r in study.runs} | {f"{TASK_PREFIX}{t.task}" for t in study.tasks}
    if dry_run:
        stages = build_stages(study, forced=forced)
        snap = snapshot(study, stages)
        return _dry_run(study, stages, snap, launcher, say, echo)
    with RunLock(paths.meta, ", or wait for the other `jepactl study run` to finish"):
        write_resolved(paths, study, sorted(forced))
        for run in study.runs:
            if run.control == "pixels":
                recipe = parse_recipe(run.config)
                atomic_write_text(recipe_file(study, run), dump_yaml(recipe))
        stages = build_stages(study, forced=forced)
        snap = snapshot(study, stages)
        outcome = RunOutcome(snapshot=snap)
        if launcher == "slurm":
            _refuse_unknown(snap)
        left = [s for s in snap.stages if s.state != "done" and not s.live]
        if not left:
            outcome.nothing_to_do = True
            return outcome
        if launcher == "local":
            from jepactl.study.local import run_local, visible_gpus

            parallel = max_parallel or max(1, len(visible_gpus()))
            result = run_local(study, stages, snap, parallel, say)
            outcome.started, outcome.failed = result.done, result.failed
            outcome.skipped, outcome.stopped = result.skipped, result.stopped
        else:
            from jepactl.study.slurm import submit

            outcome.started = submit(study, stages, snap, False, say, echo)
        return outcome


def _dry_run(
    study: Study,
    stages: list[Stage],
    snap: Snapshot,
    launcher: str,
    say: Callable[[str], None],
    echo: Callable[[str], None],
) -> RunOutcome:
    outcome = RunOutcome(snapshot=snap)
    if launcher == "slurm":
        from jepactl.study.slurm import submit

        _refuse_unknown(snap)
        outcome.started = submit(study, stages, snap, True, say, echo)
    else:
        for s in snap.stages:
            if s.state != "done" and not s.live:
                echo(f"{s.stage.id}: jepactl {' '.join(s.stage.argv)}")
                outcome.started.append(s.stage.id)
    outcome.nothing_to_do = not outcome.started
    return outcome


def _refuse_unknown(snap: Snapshot) -> None:
    """Submitting beside jobs whose state SLURM did not report could run a stage twice."""
    unknown = [s for s in snap.stages if s.state == "unknown"]
    if unknown:
        raise ConfigError(
            f"SLURM did not say whether {len(unknown)} submitted job(s) still run "
            f"({unknown[0].detail}); nothing submitted: rerun once `squeue` answers"
        )
