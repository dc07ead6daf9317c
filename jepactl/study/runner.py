"""Run one stage: its ``jepactl`` command line as a child process, its output appended to the
stage's log, its start and end recorded, and its result checked against the run directory.

Both launchers run stages through :func:`run_stage`: the local one in a thread per stage, the
SLURM one inside each job (:class:`jepactl.study.slurm.StageJob`). The command is the same
line a person would type, so a stage behaves exactly like the command run by hand: resume,
locks, one-line errors and SIGTERM-checkpointing all come from the command itself.

A command that exits 0 without the stage being done (a pretraining run stopped by a signal
checkpoints and exits 0) counts as *not finished*: exit code 1 here, so a SLURM ``afterok``
dependency never starts an extraction from a half-trained checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from jepactl.study.graph import Stage
from jepactl.study.spec import Study
from jepactl.study.state import JobRecord, Paths, last_line, now, stage_done

#: Set in a stage's child so a CLI can tell it runs inside a study (and for tests).
STAGE_ENV = "JEPACTL_STUDY_STAGE"


def command(stage: Stage, ranks: int = 1) -> list[str]:
    """The child's argv: ``python -m jepactl ARGS``; a pretraining run of several ranks on
    one machine goes through torchrun (``torch.distributed.run``), as by hand."""
    if ranks > 1:
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={ranks}", "-m", "jepactl", *stage.argv,
        ]  # fmt: skip
    return [sys.executable, "-m", "jepactl", *stage.argv]


def child_env(threads: int | None) -> dict[str, str]:
    """Defaults for a stage's child (the caller's environment wins): progress bars redrawn
    every 30 s (a log, not a terminal), and ``threads`` math threads where given (a stage
    shares the machine with others; SLURM's ``--cpus-per-task``)."""
    env = {"TQDM_MININTERVAL": "30"}
    if threads is None and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        threads = int(os.environ["SLURM_CPUS_PER_TASK"])
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(max(1, threads))
    return {k: v for k, v in env.items() if k not in os.environ}


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    # SLURM's warning signal before the time limit (--signal=USR2@...) reaches every process
    # of the job; it is the job wrapper's to handle (it stops the child with SIGTERM, which
    # checkpoints), and would otherwise kill the child outright.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def is_main_task() -> bool:
    """Whether this process writes the stage's records (SLURM task 0, or not under SLURM)."""
    return os.environ.get("SLURM_PROCID", "0") == "0"


def run_stage(
    study: Study,
    stage: Stage,
    launcher: str,
    *,
    job_id: str = "",
    ranks: int = 1,
    env: dict[str, str] | None = None,
    threads: int | None = None,
    new_session: bool = False,
    on_child: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> int:
    """Run ``stage``'s command to its end; returns 0 when the stage is done, else non-zero.

    ``on_child`` is called with the child process once it started (a launcher keeps it to
    forward signals). ``threads``: math threads of the child (default: SLURM's CPUs per task,
    else torch's own choice). ``new_session``: the child does not get the terminal's signals (the
    local launcher forwards SIGTERM itself, so a closing shell still checkpoints).
    """
    paths = Paths(study.root)
    main = is_main_task()
    record = JobRecord.read(paths.job(stage.id)) or JobRecord(stage.id, launcher)
    if record.job_id != job_id or record.launcher != launcher:
        record = JobRecord(stage.id, launcher, job_id=job_id, submitted=record.submitted)
    record.host, record.started, record.ended, record.rc, record.message = (
        socket.gethostname(), now(), "", None, "",
    )  # fmt: skip
    log_path = paths.log(stage.id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = command(stage, ranks)
    with open(log_path, "ab") as log:
        if main:
            header = f"==> {now()} {socket.gethostname()}" + (f" job {job_id}" if job_id else "")
            log.write(f"{header}: jepactl {' '.join(stage.argv)}\n".encode())
            log.flush()
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **child_env(threads), **(env or {}), STAGE_ENV: stage.id},
            # (preexec_fn is unsafe beside threads: only the SLURM job, one thread, needs it)
            preexec_fn=_child_setup if launcher == "slurm" else None,
            start_new_session=new_session,
        )  # fmt: skip
        if main:
            record.pid = child.pid
            record.write(paths.job(stage.id))
        if on_child is not None:
            on_child(child)
        rc = child.wait()
    return finish(study, stage, record, rc, main)


def finish(study: Study, stage: Stage, record: JobRecord, rc: int, main: bool = True) -> int:
    """Record how the stage ended: done, or why not (its log's last line)."""
    paths = Paths(study.root)
    done = rc == 0 and stage_done(study, stage)
    if rc == 0 and not done:
        rc = 1
        record.message = "stopped before it was done (a signal?); `jepactl study run` resumes it"
    elif rc != 0:
        record.message = last_line(paths.log(stage.id)) or f"exit code {rc}"
    record.rc, record.ended = rc, now()
    if main:
        record.write(paths.job(stage.id))
    return rc
