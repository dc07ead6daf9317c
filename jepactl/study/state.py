"""Where a study stands: each stage done, running, queued, failed or still to run.

*Done* is read from the run directories' own records, never from a launcher's bookkeeping, so
a stage run by hand counts and a record lost with a dead shell loses nothing:

- pretrain: ``checkpoints/latest.json`` (step and sha256 of ``latest.pt``) at the run's target
  step;
- extract: both caches ``complete`` and built from that checkpoint (its sha256), or every probe
  of the task already done;
- probe: ``probes/TASK-KIND.json`` written from that checkpoint (its sha256);
- report: ``STUDY_ROOT/report.md`` newer than every probe result, with every probe done.

Whether something is *running* comes from the launcher's job records in ``STUDY_ROOT/.study/``
(a SLURM job still in the queue, a local process still alive) and from the run directory's lock
(someone holds the run: a job, or a person who started it by hand). Anything else that was
started and is not done has *failed*; its log's last line says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import socket
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jepactl.features.cache_schema import CacheAttrs, CacheError, NewerCacheError
from jepactl.formats import FormatError, NewerFormatError
from jepactl.lock import LOCK_NAME
from jepactl.probe.records import read_result
from jepactl.rundir import CheckpointRecord, result_stem
from jepactl.study.graph import Stage, build_stages, run_dir
from jepactl.study.spec import Study
from jepactl.train.metrics import last_step
from jepactl.utils import atomic_write_text

State = Literal["done", "running", "queued", "unknown", "failed", "blocked", "waiting", "todo"]
#: What each state means, for `study status`'s legend.
STATES: dict[str, str] = {
    "done": "finished (read from the run directory)",
    "running": "a job or process is on it",
    "queued": "submitted, waiting for resources or for its dependencies",
    "failed": "started and stopped before it was done (cancelled, pre-empted, crashed)",
    "blocked": "queued behind a stage that failed: `study run` cancels and resubmits it",
    "unknown": "submitted to SLURM, whose queue did not answer: treated as still live",
    "waiting": "not started; a stage it needs is not done",
    "todo": "not started; ready to run",
}
SPLITS = ("train", "val")
STUDY_DIR = ".study"
#: SLURM job states in which a job is still the stage's to finish.
SLURM_LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
              "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "STAGE_OUT",
              "SIGNALING"}  # fmt: skip


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def stage_key(stage_id: str) -> str:
    """A stage id as a file name (``run-s0/probe/x`` -> ``run-s0.probe.x``)."""
    return stage_id.replace("/", ".")


@dataclass(frozen=True)
class Paths:
    """The files a study keeps in its root, beside its runs."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def meta(self) -> Path:
        return self.root / STUDY_DIR

    @property
    def resolved(self) -> Path:
        """What the study was when first run (its runs' resolved recipes): ``study.yaml``."""
        return self.root / "study.yaml"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def report_text(self) -> Path:
        """The report as the terminal shows it (what ``study run`` prints when it is done)."""
        return self.root / "report.txt"

    @property
    def figure(self) -> Path:
        return self.root / "figure2.png"

    @property
    def slurm(self) -> Path:
        """submitit's folder: job pickles and the jobs' own stdout/stderr."""
        return self.root / "slurm"

    def job(self, stage_id: str) -> Path:
        return self.meta / "jobs" / f"{stage_key(stage_id)}.json"

    def log(self, stage_id: str) -> Path:
        return self.root / "logs" / f"{stage_key(stage_id)}.log"


@dataclass
class JobRecord:
    """What a launcher and the stage itself wrote about one attempt at a stage."""

    stage: str
    launcher: str  # local | slurm
    job_id: str = ""  # the SLURM job id
    host: str = ""
    pid: int = 0  # the local process running the stage's command
    submitted: str = ""
    started: str = ""
    ended: str = ""
    rc: int | None = None
    message: str = ""  # why it stopped, when it did not finish
    requeues: int = 0

    @classmethod
    def read(cls, path: Path) -> JobRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(dataclasses.asdict(self), indent=1) + "\n")


@dataclass
class StageStatus:
    stage: Stage
    state: State
    detail: str = ""
    job: JobRecord | None = None
    log: Path | None = None
    progress: tuple[int, int] | None = None  # (step, target) of a pretraining run

    @property
    def live(self) -> bool:
        """A job or process may still finish it: never started again beside it."""
        return self.state in ("running", "queued", "unknown")


@dataclass
class Snapshot:
    """Every stage's status, read once (one ``squeue`` call for a SLURM study)."""

    stages: list[StageStatus]
    by_id: dict[str, StageStatus] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {s.stage.id: s for s in self.stages}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.stages:
            out[s.state] = out.get(s.state, 0) + 1
        return out


# --------------------------------------------------------------------------------------
# Reading the run directories
# --------------------------------------------------------------------------------------


def checkpoint_of(study: Study, stage: Stage) -> CheckpointRecord | None:
    assert stage.run is not None
    return run_dir(study, stage.run).checkpoint_record()


def pretrain_done(rec: CheckpointRecord | None, target: int, control: str) -> bool:
    if rec is None:
        return False
    return rec.step == 0 if control == "untrained" else rec.step >= target


def probe_done(study: Study, stage: Stage, rec: CheckpointRecord | None) -> bool:
    """The probe's result exists and was computed from the run's current checkpoint."""
    assert stage.run is not None and stage.task is not None
    path = run_dir(study, stage.run).result(result_stem(stage.task.task, stage.probe))
    if not path.is_file():
        return False
    try:
        result = read_result(path)
    except NewerFormatError:
        raise  # a newer jepactl's result: never silently redone over
    except FormatError:
        return False
    task = stage.task
    if task.epochs and result.epochs not in (None, task.epochs):
        return False  # trained for another number of epochs than the study asks
    with contextlib.suppress(OSError):  # a cache rebuilt after the probe ran: probe again
        if any(
            run_dir(study, stage.run).cache(task.task, split).stat().st_mtime > path.stat().st_mtime
            for split in SPLITS
        ):
            return False
    if stage.run.control == "pixels":
        return result.weights == "pixels"
    sha = result.checkpoint.sha256 if result.checkpoint is not None else None
    return rec is not None and sha == rec.sha256


def caches_done(study: Study, stage: Stage, rec: CheckpointRecord | None) -> bool:
    """Both caches of the task complete and built from the run's current checkpoint (a cache
    of a newer jepactl is refused in one line: never silently rebuilt over)."""
    from jepactl.features.cache import read_cache_record  # h5py, no torch

    assert stage.run is not None and stage.task is not None
    run = run_dir(study, stage.run)
    for split in SPLITS:
        path = run.cache(stage.task.task, split)
        if not path.is_file():
            return False
        try:
            attrs = read_cache_record(path)
        except NewerCacheError:
            raise
        except (OSError, CacheError):
            return False
        if not attrs.is_complete or not _same_protocol(stage, attrs):
            return False
        if stage.run.control != "pixels" and (rec is None or attrs.checkpoint_sha256 != rec.sha256):
            return False
    return True


def _same_protocol(stage: Stage, attrs: CacheAttrs) -> bool:
    """The cache was built with the task's ``limit`` and (where the study sets it) ``pool``."""
    assert stage.task is not None
    if stage.task.pool and attrs.pooling != stage.task.pool:
        return False
    return (attrs.limit or 0) == stage.task.limit


def lock_holder(folder: Path) -> str | None:
    """Who holds ``folder``'s :class:`~jepactl.lock.RunLock` (its recorded holder), or
    ``None`` when nobody does. Asks with ``F_GETLK``, never taking the lock itself (a probe
    that took it, however briefly, would make a run starting that instant fail as locked);
    never creates files. Not for a lock this process holds: closing the probe's descriptor
    drops the process's POSIX locks on the file."""
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if not _locked(fd):
            return None
    finally:
        os.close(fd)
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"


def _locked(fd: int) -> bool:
    """Whether another process holds a POSIX lock on ``fd``'s file."""
    if sys.platform == "linux":  # struct flock {short type, whence; off_t start, len; pid_t}
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        try:
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        except OSError:
            return False
        return bool(struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK)
    try:  # elsewhere the struct differs: take and drop a shared lock instead
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return False


def last_line(path: Path | None, limit: int = 64 << 10) -> str:
    """The last non-empty line of a log (progress-bar redraws stripped), or ""."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in tail.splitlines()]
    errors = [ln for ln in lines if "error:" in ln]
    lines = [ln for ln in lines if ln]
    return (errors or lines or [""])[-1][:300]


def progress(study: Study, stage: Stage) -> tuple[int, int] | None:
    """A pretraining run's (last logged step, target step), from ``metrics.jsonl``'s tail."""
    assert stage.run is not None
    step = last_step(run_dir(study, stage.run).metrics)
    return None if step is None else (step, stage.run.target_step)


# --------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_states(job_ids: Iterable[str]) -> dict[str, tuple[str, str]] | str:
    """``{job id: (state, reason)}`` of the jobs SLURM still knows (one ``squeue`` call), or
    why the queue could not be read (no ``squeue``, a timeout, an error): then nobody can tell
    a running job from a dead one."""
    import subprocess

    ids = sorted({j for j in job_ids if j})
    if not ids:
        return {}
    try:
        out = subprocess.run(
            ["squeue", "-h", "--states=all", "-o", "%i|%T|%r", "-j", ",".join(ids)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"squeue: {exc}"
    if out.returncode != 0:
        lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
        # A job SLURM has forgotten (older than MinJobAge) is no error: it is simply absent.
        if not (lines and all("Invalid job id" in ln for ln in lines)):
            return f"squeue: {lines[-1] if lines else f'exit {out.returncode}'}"
    states = {}
    for line in out.stdout.splitlines():
        job, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        states[job.strip()] = (state.strip(), reason.strip())
    return states


# --------------------------------------------------------------------------------------
# The snapshot
# --------------------------------------------------------------------------------------


def stage_done(study: Study, stage: Stage) -> bool:
    """Whether one stage is done (a report: whether ``report.md`` exists)."""
    if stage.kind == "report":
        return Paths(study.root).report.is_file()
    rec = checkpoint_of(study, stage)
    return _done(study, stage, rec, {})


def snapshot(study: Study, stages: list[Stage], query_slurm: bool = True) -> Snapshot:
    """Read every stage's status: done from the run directories, running from the job
    records, the queue (one ``squeue`` call, made only when a stage was ever submitted to
    SLURM and ``query_slurm``) and the run locks."""
    paths = Paths(study.root)
    jobs = {s.id: JobRecord.read(paths.job(s.id)) for s in stages}
    slurm_ids = [j.job_id for j in jobs.values() if j is not None and j.launcher == "slurm"]
    queue = slurm_states(slurm_ids) if query_slurm else "the queue was not read"
    records: dict[str, CheckpointRecord | None] = {}
    out: list[StageStatus] = []
    by_id: dict[str, StageStatus] = {}
    for stage in stages:
        if stage.run is not None and stage.run.name not in records:
            records[stage.run.name] = checkpoint_of(study, stage)
        rec = records.get(stage.run.name) if stage.run is not None else None
        job = jobs[stage.id]
        status = StageStatus(stage, "todo", job=job, log=paths.log(stage.id))
        # nothing is done over work that is not (a cache rebuilt, a run extended)
        if all(by_id[d].state == "done" for d in stage.deps) and _done(study, stage, rec, by_id):
            status.state = "done"
            if stage.kind == "pretrain" and rec is not None:
                status.detail = f"step {rec.step}"
        else:
            _not_done(study, stage, status, queue, by_id)
        stuck = [d for d in stage.deps if by_id[d].state in ("failed", "blocked")]
        if status.state == "queued" and stuck and status.job is not None:
            # a SLURM dependency on a job that failed never comes true
            status.state = "blocked"
            status.detail = f"job {status.job.job_id} waits on {stuck[0]}, which did not finish"
        out.append(status)
        by_id[stage.id] = status
    return Snapshot(out)


def _done(
    study: Study, stage: Stage, rec: CheckpointRecord | None, seen: Mapping[str, StageStatus]
) -> bool:
    if stage.kind == "pretrain":
        assert stage.run is not None
        return pretrain_done(rec, stage.run.target_step, stage.run.control)
    if stage.kind == "probe":
        return probe_done(study, stage, rec)
    if stage.kind == "extract":
        return caches_done(study, stage, rec)
    # report (its leaves are done: snapshot asks only then): report.md written after the
    # newest result it reads (a probe's; a pretraining's checkpoint record without tasks)
    report = Paths(study.root).report
    if not report.is_file():
        return False
    newest = 0.0
    for dep in stage.deps:
        s = seen[dep].stage
        assert s.run is not None
        where = run_dir(study, s.run)
        made = where.result(result_stem(s.task.task, s.probe)) if s.task else where.latest_record
        with contextlib.suppress(OSError):
            newest = max(newest, made.stat().st_mtime)
    return report.stat().st_mtime >= newest


def _not_done(
    study: Study,
    stage: Stage,
    status: StageStatus,
    queue: Mapping[str, tuple[str, str]] | str,
    seen: Mapping[str, StageStatus],
) -> None:
    job = status.job
    if stage.kind == "pretrain":
        status.progress = progress(study, stage)
    step = f", step {status.progress[0]}/{status.progress[1]}" if status.progress else ""
    if isinstance(queue, str):
        if job is not None and job.launcher == "slurm" and job.job_id and not job.ended:
            # the job's own record says nothing of its end: it may be live
            status.state, status.detail = "unknown", f"job {job.job_id}{step} ({queue})"
            return
        queue = {}
    if job is not None and job.launcher == "slurm" and job.job_id in queue:
        state, reason = queue[job.job_id]
        if state in SLURM_LIVE:
            if state == "PENDING" and "DependencyNeverSatisfied" in reason:
                status.state, status.detail = (
                    "blocked",
                    f"job {job.job_id}: a stage it needs failed",
                )
            elif state == "PENDING":
                status.state, status.detail = "queued", f"job {job.job_id} ({reason or 'pending'})"
            else:
                status.state, status.detail = "running", f"job {job.job_id}{step}"
            return
        status.state = "failed"
        status.detail = f"job {job.job_id} {state}: {job.message or last_line(status.log)}"
        return
    if (
        job is not None
        and job.launcher == "local"
        and not job.ended
        and job.host == socket.gethostname()
        and pid_alive(job.pid)
    ):
        status.state, status.detail = "running", f"pid {job.pid}{step}"
        return
    holder = _holder(study, stage)
    if holder is not None:
        status.state, status.detail = "running", f"held by {holder}{step}"
        return
    if job is not None and (job.started or job.job_id or job.pid):
        status.state = "failed"
        what = (
            f"job {job.job_id}"
            if job.job_id
            else "exit " + str(job.rc)
            if job.rc is not None
            else "stopped"
        )
        status.detail = f"{what}: {job.message or last_line(status.log) or 'no log'}"
        return
    waiting = [d for d in stage.deps if seen[d].state != "done"]
    status.state = "waiting" if waiting else "todo"
    if stage.kind == "pretrain" and status.progress:
        status.detail = f"at step {status.progress[0]}/{status.progress[1]}"


def _holder(study: Study, stage: Stage) -> str | None:
    if stage.run is None:
        return None
    run = run_dir(study, stage.run)
    if stage.kind == "pretrain":
        return lock_holder(run.root)
    if stage.kind == "extract" and stage.task is not None:
        return lock_holder(run.features(stage.task.task))
    return None


def read_resolved(paths: Paths) -> dict[str, Any] | None:
    """The study as recorded by its first ``study run`` (``None`` for a new root)."""
    import yaml

    try:
        data = yaml.safe_load(paths.resolved.read_text())
    except OSError:
        return None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def write_resolved(paths: Paths, study: Study, forced: list[str]) -> None:
    """Record the study in its root (``study.yaml``), with the runs ``--force`` let change."""
    import yaml

    data = {**study.resolved(), "forced": forced}
    atomic_write_text(paths.resolved, yaml.safe_dump(data, sort_keys=False))


def forced_runs(paths: Paths) -> set[str]:
    """Runs whose pretraining goes on with changed settings (``study run --force``)."""
    saved = read_resolved(paths) or {}
    forced = saved.get("forced")
    return {str(x) for x in forced} if isinstance(forced, list) else set()


def stages_for(study: Study) -> list[Stage]:
    return build_stages(study, forced=forced_runs(Paths(study.root)))
