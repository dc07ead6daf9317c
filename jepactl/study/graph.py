"""The work of a study as a graph of stages: each run's pretraining, then per task its feature
extraction, then per probe kind its probe, and one report over everything.

A stage is a plain ``jepactl`` command line (what a person would type) plus what it needs and
waits for, so a launcher only has to run command lines in dependency order, and a stage run by
hand counts exactly like one run by a launcher: whether a stage is done is read from the run
directory it writes (:mod:`jepactl.study.state`), never from the launcher's bookkeeping.

Stage ids: ``RUN/pretrain``, ``RUN/extract/TASK``, ``RUN/probe/TASK-KIND`` and ``report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jepactl.rundir import RunDir
from jepactl.study.spec import TASK_PREFIX, RunPlan, Study, TaskSpec

StageKind = Literal["pretrain", "extract", "probe", "report"]
REPORT = "report"


@dataclass(frozen=True)
class Stage:
    id: str
    kind: StageKind
    argv: tuple[str, ...]  # jepactl's arguments (after `jepactl`)
    deps: tuple[str, ...]
    run: RunPlan | None = None
    task: TaskSpec | None = None
    probe: str = ""  # the probe kind, for probe stages
    gpus: int = 0  # GPUs per node it asks for
    nodes: int = 1
    tasks: int = 1  # ranks per node

    @property
    def label(self) -> str:
        """The stage without its run, e.g. ``extract/ssv2``."""
        return self.id.partition("/")[2] or self.id

    @property
    def multi_rank(self) -> bool:
        return self.kind == "pretrain" and self.tasks * self.nodes > 1


def run_dir(study: Study, run: RunPlan) -> RunDir:
    return RunDir(study.root / "runs" / run.name)


def recipe_file(study: Study, run: RunPlan) -> Path:
    """The run's resolved recipe, written into the study root (the raw-pixel baseline reads
    the baseline's patch and tubelet from it)."""
    return study.root / "recipes" / f"{run.name}.yaml"


def probe_flags(kind: str) -> list[str]:
    """``jepactl probe`` options that train a probe of ``kind`` (see ProbeResult.kind)."""
    head = kind.removesuffix("-sweep").removesuffix("-sklearn")
    flags = ["--probe", head]
    if head == "linear":
        flags.append(
            "--sklearn" if kind.removesuffix("-sweep").endswith("-sklearn") else "--no-sklearn"
        )
    if kind.endswith("-sweep"):
        flags.append("--sweep")
    return flags


def build_stages(
    study: Study, device: str = "auto", forced: set[str] | frozenset[str] = frozenset()
) -> list[Stage]:
    """Every stage of ``study`` in an order that respects the dependencies. ``forced``: runs
    whose pretraining continues with changed settings (``pretrain --force``), and tasks
    (``task:TASK``) whose caches are rebuilt with a changed protocol (``extract-features
    --force``, which keeps a cache that matches)."""
    res = study.spec.resources
    stages: list[Stage] = []
    for run in study.runs:
        where = str(run_dir(study, run))
        deps: tuple[str, ...] = ()
        if run.control != "pixels":
            argv = ["pretrain", "--recipe", run.recipe, "--run-dir", where, "--seed", str(run.seed)]
            argv += [x for o in run.overrides for x in ("--set", o)]
            if run.max_steps is not None:
                argv += ["--max-steps", str(run.max_steps)]
            if device != "auto":
                argv += ["--device", device]
            if run.name in forced:
                argv.append("--force")
            pid = f"{run.name}/pretrain"
            trained = not run.control
            stages.append(Stage(
                pid, "pretrain", tuple(argv), (), run, gpus=res.gpus_per_node if trained else 0,
                nodes=res.nodes if trained else 1,
                tasks=(res.tasks_per_node or max(1, res.gpus_per_node)) if trained else 1,
            ))  # fmt: skip
            deps = (pid,)
        for task in study.tasks:
            common = ["--device", device] if device != "auto" else []
            if task.limit:
                common += ["--limit", str(task.limit)]
            extract = ["extract-features", where, "--task", task.task, *common]
            if task.pool:
                extract += ["--pool", task.pool]
            if run.control == "pixels":
                extract += ["--pixels", str(recipe_file(study, run))]
            if f"{TASK_PREFIX}{task.task}" in forced:
                extract.append("--force")
            eid = f"{run.name}/extract/{task.task}"
            stages.append(
                Stage(eid, "extract", tuple(extract), deps, run, task, gpus=res.eval.gpus)
            )
            for kind in task.probes:
                argv = [
                    "probe",
                    task.task,
                    "--run",
                    where,
                    *probe_flags(kind),
                    "--seed",
                    str(run.seed),
                    *common,
                ]
                if task.epochs:
                    argv += ["--epochs", str(task.epochs)]
                qid = f"{run.name}/probe/{task.task}-{kind}"
                stages.append(
                    Stage(qid, "probe", tuple(argv), (eid,), run, task, kind, res.eval.gpus)
                )
    report = ["study", "report", str(study.source.resolve()), "--root", str(study.root)]
    # The report waits for every leaf: each probe, and the pretraining of a study with no
    # tasks (otherwise it would start at once and find no run to report).
    waited = {d for s in stages for d in s.deps}
    leaves = tuple(s.id for s in stages if s.id not in waited)
    stages.append(Stage(REPORT, "report", tuple(report), leaves))
    return stages


def dependents(stages: list[Stage]) -> dict[str, list[str]]:
    """Stage id -> the stages waiting for it."""
    out: dict[str, list[str]] = {s.id: [] for s in stages}
    for s in stages:
        for d in s.deps:
            out[d].append(s.id)
    return out
