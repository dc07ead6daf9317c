"""The SLURM launcher: one job per stage through submitit, chained with ``afterok``.

Each job runs :class:`StageJob`, which runs the stage's command line in a child process
(:func:`jepactl.study.runner.run_stage`). A pretraining job of several GPUs has one task per GPU
(``--ntasks-per-node``); every task gets the torch rendezvous variables from the SLURM
environment (submitit's ``TorchDistributedEnvironment``: ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ...), so ``jepactl pretrain`` joins one process group exactly
as under ``torchrun``.

Time limits: submitit asks SLURM for ``--signal=USR2@resources.signal_delay_s``. On that signal
task 0 stops its child with SIGTERM (the run checkpoints at the next step and exits 0; the
other ranks agree to stop with it), then submitit requeues the job, which resumes from the
checkpoint: the same job id, so the stages waiting on it keep waiting. ``scancel`` and
pre-emption send SIGTERM to every process: the run checkpoints, the job ends as cancelled, and
the next ``study run`` resubmits it and what waited on it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jepactl.errors import ConfigError
from jepactl.study.graph import Stage, dependents
from jepactl.study.spec import Study, load_study
from jepactl.study.state import JobRecord, Paths, Snapshot, now


def check_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "sbatch is not on PATH: --launcher slurm submits through SLURM; on a machine "
            "without it, run the study here with --launcher local"
        )


def check_cluster() -> None:
    """The controller answers (``sinfo``), so a broken configuration is one line, not one
    error per submission."""
    try:
        res = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"SLURM does not answer (sinfo: {exc}); --launcher local runs here"
        ) from None
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()] or [f"exit {res.returncode}"]
        raise ConfigError(
            f"SLURM does not answer ({lines[-1].strip()}): is SLURM_CONF set and the controller "
            "up? (--launcher local runs the study here)"
        )


def check_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher slurm needs submitit: pip install submitit (or 'jepactl[slurm]')"
        ) from None
    return submitit


def job_name(study: Study, stage: Stage) -> str:
    return f"jepactl:{study.name}:{stage.id}"


def parameters(study: Study, stage: Stage, dependency: str) -> dict[str, Any]:
    """submitit's SLURM parameters for ``stage`` (see ``resources`` in the study file): a
    trained run's pretraining gets the run's resources; extraction, probes, the report and the
    untrained control's step-0 checkpoint get ``resources.eval`` (its partition and sbatch
    options over the study's)."""
    res = study.spec.resources
    trained = stage.kind == "pretrain" and stage.run is not None and not stage.run.control
    params: dict[str, Any] = {
        "job_name": job_name(study, stage),
        "nodes": stage.nodes if trained else 1,
        "ntasks_per_node": stage.tasks,
        "cpus_per_task": res.cpus_per_task if trained else res.eval.cpus_per_task,
        "time": res.time_min if trained else res.eval.time_min,
        "signal_delay_s": res.signal_delay_s,
        "stderr_to_stdout": True,
    }
    if stage.kind == "report":
        params.update(cpus_per_task=1, time=30)
    elif stage.gpus:
        params["gpus_per_node"] = stage.gpus
    mem = res.mem_gb if trained else res.eval.mem_gb
    if mem and stage.kind != "report":
        params["mem"] = f"{mem}G"
    partition = res.partition if trained else res.eval.partition or res.partition
    for key, value in (("partition", partition), ("account", res.account), ("qos", res.qos)):
        if value:
            params[key] = value
    if dependency:
        params["dependency"] = dependency
    extra = dict(res.sbatch) if trained else {**res.sbatch, **res.eval.sbatch}
    extra = {str(k): v for k, v in extra.items() if v is not None}
    if extra:
        params["additional_parameters"] = extra
    return params


def executor(study: Study, stage: Stage, dependency: str) -> Any:
    submitit = check_submitit()
    ex = submitit.SlurmExecutor(
        folder=Paths(study.root).slurm / "%j", max_num_timeout=study.spec.resources.max_requeues
    )
    ex.update_parameters(**parameters(study, stage, dependency))
    return ex


def sbatch_script(study: Study, stage: Stage, dependency: str) -> str:
    """The script ``sbatch`` would get for ``stage`` (``--dry-run``)."""
    ex = executor(study, stage, dependency)
    return str(ex._make_submission_file_text(ex._submitit_command_str, "dry-run"))


class StageJob:
    """What a SLURM job runs: one stage of a study, by the study's file and root.

    submitit calls :meth:`checkpoint` (task 0 only) on the time-limit signal; it stops the
    stage's child so the run checkpoints, and returns this same job to be requeued.
    """

    def __init__(
        self, study_file: str, root: str, stage_id: str, argv: tuple[str, ...] | None = None
    ) -> None:
        self.study_file = study_file
        self.root = root
        self.stage_id = stage_id
        #: the stage's command line when it was submitted; the job refuses to run another
        self.argv = argv
        self._child: subprocess.Popen[bytes] | None = None
        self._grace_s = 60.0  # how long the child may take to checkpoint on the signal

    def __getstate__(self) -> dict[str, Any]:
        keep = ("study_file", "root", "stage_id", "argv")
        return {k: getattr(self, k) for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.argv = state.get("argv")
        self._child = None
        self._grace_s = 60.0

    def _load(self) -> tuple[Study, Stage]:
        from jepactl.study.state import stages_for

        study = load_study(self.study_file, Path(self.root))
        stages = {s.id: s for s in stages_for(study)}
        if self.stage_id not in stages:
            raise ConfigError(f"{self.stage_id} is no longer a stage of {self.study_file}")
        stage = stages[self.stage_id]
        if self.argv is not None and tuple(stage.argv) != tuple(self.argv):
            raise ConfigError(
                f"{self.study_file} changed after this job was submitted ({self.stage_id} "
                "would now run another command); run `jepactl study run` again to resubmit"
            )
        return study, stage

    def __call__(self) -> int:
        from jepactl.study.runner import run_stage

        try:
            study, stage = self._load()
        except ConfigError as exc:  # for `study status` to show, not only the job's own log
            paths = Paths(Path(self.root))
            record = JobRecord.read(paths.job(self.stage_id))
            if record is not None:
                record.rc, record.ended, record.message = 2, now(), str(exc)
                record.write(paths.job(self.stage_id))
            raise
        # Leave 30 s of the signal's warning for the requeue itself.
        self._grace_s = max(30.0, study.spec.resources.signal_delay_s - 30.0)
        env: dict[str, str] = {}
        ranks = int(os.environ.get("SLURM_NTASKS", "1"))
        if ranks > 1:
            import submitit

            dist_env = submitit.helpers.TorchDistributedEnvironment()
            env = {
                "RANK": str(dist_env.rank), "WORLD_SIZE": str(dist_env.world_size),
                "LOCAL_RANK": str(dist_env.local_rank),
                "LOCAL_WORLD_SIZE": str(dist_env.local_world_size),
                "MASTER_ADDR": dist_env.master_addr, "MASTER_PORT": str(dist_env.master_port),
            }  # fmt: skip
        rc = run_stage(
            study, stage, "slurm", job_id=os.environ.get("SLURM_JOB_ID", ""), env=env,
            on_child=self._keep,
        )  # fmt: skip
        if rc != 0:
            record = JobRecord.read(Paths(study.root).job(stage.id))
            raise RuntimeError(f"{stage.id}: {record.message if record else f'exit {rc}'}")
        return rc

    def _keep(self, child: subprocess.Popen[bytes]) -> None:
        self._child = child

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The time limit is near: stop the child (it checkpoints), then requeue."""
        from submitit.helpers import DelayedSubmission

        child = self._child
        if child is not None and child.returncode is None:
            child.send_signal(signal.SIGTERM)
            wait_for_exit(child.pid, self._grace_s)
        paths = Paths(Path(self.root))
        record = JobRecord.read(paths.job(self.stage_id))
        if record is not None:
            record.requeues += 1
            record.message = f"checkpointed before the time limit, requeue {record.requeues}"
            record.write(paths.job(self.stage_id))
        return DelayedSubmission(StageJob(self.study_file, self.root, self.stage_id, self.argv))


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait (blocked, then delivered) until the block ends."""
    deferred = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for child ``pid`` to exit, without reaping it.

    This runs inside submitit's signal handler, which interrupted the main thread in
    ``Popen.wait()``: that frame holds the Popen's wait lock, so ``child.wait()`` here would
    deadlock, and reaping the child here would rob that frame of its exit status.
    ``WNOWAIT`` looks without reaping. Returns whether the child exited in time.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def submit(
    study: Study,
    stages: list[Stage],
    snap: Snapshot,
    dry_run: bool,
    say: Callable[[str], None],
    echo: Callable[[str], None],
) -> list[str]:
    """Submit every stage that is not done and not queued or running, each depending on the
    jobs of its unfinished stages; cancel the jobs stuck behind a failed stage first.
    Returns the ids of the stages submitted (or that would be, with ``dry_run``)."""
    if not dry_run:
        check_sbatch()
    submitit = check_submitit()
    paths = Paths(study.root)
    plan = _resubmission(stages, snap)
    _cancel_stuck(snap, plan.again, dry_run, say)
    job_of: dict[str, str] = {
        s.stage.id: s.job.job_id
        for s in snap.stages
        if s.stage.id in plan.live and s.job is not None and s.job.job_id
    }
    submitted: list[str] = []
    for stage in stages:
        if stage.id in plan.done or stage.id in plan.live:
            continue
        dependency = _dependency(stage, plan.done, job_of, say)
        if dependency is None:
            continue
        if dry_run:
            job_of[stage.id] = f"<{stage.id}>"
            echo(f"### {stage.id}\n{sbatch_script(study, stage, dependency)}")
            submitted.append(stage.id)
            continue
        job_id = _submit_stage(study, stage, dependency, paths, submitit, submitted, job_of)
        submitted.append(stage.id)
        say(f"submitted {stage.id}: job {job_id}" + (f" ({dependency})" if dependency else ""))
    return submitted


@dataclass
class _Resubmission:
    """Which stages are done, which keep their queued or running job (``live``), and which
    get a new job (``again``)."""

    done: set[str]
    live: set[str]
    again: set[str]


def _resubmission(stages: list[Stage], snap: Snapshot) -> _Resubmission:
    """Split the snapshot's stages into done, live and to be submitted again."""
    done = {s.stage.id for s in snap.stages if s.state == "done"}
    live = {s.stage.id for s in snap.stages if s.live}
    # A job waits on job ids: every queued or running stage downstream of one that is
    # resubmitted (or stuck behind a failed one) waits on a job that will never succeed, so
    # it is cancelled and resubmitted with the new ids.
    again = {s.stage.id for s in snap.stages if s.state != "done" and not s.live}
    waiting_on = dependents(stages)
    frontier = list(again)
    while frontier:
        for d in waiting_on[frontier.pop()]:
            if d in live and snap.by_id[d].state == "queued":
                live.discard(d)
                again.add(d)
                frontier.append(d)
    return _Resubmission(done, live, again)


def _cancel_stuck(
    snap: Snapshot, again: set[str], dry_run: bool, say: Callable[[str], None]
) -> None:
    """``scancel`` the jobs of the stages submitted again that have one (not with
    ``dry_run``)."""
    cancel = [
        s.job.job_id
        for s in snap.stages
        if s.stage.id in again and s.job is not None and s.job.job_id and s.state != "failed"
    ]
    if cancel and not dry_run:
        subprocess.run(["scancel", *cancel], check=False, capture_output=True)
        say(f"cancelled job(s) {', '.join(cancel)}: they wait on stages resubmitted now")


def _dependency(
    stage: Stage, done: set[str], job_of: dict[str, str], say: Callable[[str], None]
) -> str | None:
    """``stage``'s SLURM dependency on the jobs of its unfinished stages (``""`` for none), or
    ``None`` (said) when one of them has no job to wait on."""
    missing = [d for d in stage.deps if d not in done and d not in job_of]
    if missing:  # an upstream stage could not be submitted: nothing to wait on
        say(f"not submitting {stage.id}: {missing[0]} has no job")
        return None
    waits = [job_of[d] for d in stage.deps if d not in done]
    kind = "afterany" if stage.kind == "report" else "afterok"
    return f"{kind}:{':'.join(waits)}" if waits else ""


def _submit_stage(
    study: Study,
    stage: Stage,
    dependency: str,
    paths: Paths,
    submitit: Any,
    submitted: list[str],
    job_of: dict[str, str],
) -> str:
    """sbatch ``stage`` (after ``dependency``), enter its job in ``job_of`` and write its
    record; returns the job id. ``submitted``: the stages submitted before it."""
    paths.slurm.mkdir(parents=True, exist_ok=True)
    job = StageJob(
        str(study.source.resolve()), str(study.root.resolve()), stage.id, tuple(stage.argv)
    )
    # A shell closed between sbatch and the record would leave a job nobody knows of (and
    # the next `study run` would submit it again): the signals wait until it is written.
    with _signals_deferred():
        try:
            submission = executor(study, stage, dependency).submit(job)
        except submitit.core.utils.FailedJobError as exc:
            done_now = f"; {len(submitted)} job(s) were submitted before it" if submitted else ""
            raise ConfigError(
                f"sbatch refused {stage.id}: {str(exc).strip().splitlines()[-1]} (check "
                f"'resources' in {study.source}){done_now}; rerun `jepactl study run` once "
                "fixed"
            ) from None
        job_id = str(submission.job_id)
        job_of[stage.id] = job_id
        record = JobRecord.read(paths.job(stage.id))
        if record is None or record.job_id != job_id:  # the job may have started already
            record = JobRecord(stage.id, "slurm", job_id=job_id, submitted=now())
        else:
            record.submitted = record.submitted or now()
        record.write(paths.job(stage.id))
    return job_id
