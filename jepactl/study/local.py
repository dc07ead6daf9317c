"""The local launcher: a study's stages on this machine, in dependency order, N at a time.

Each stage is its command line in a child process (:func:`jepactl.study.runner.run_stage`),
started from a thread of this process; a stage that needs GPUs gets its own
``CUDA_VISIBLE_DEVICES`` (a pretraining run of several GPUs goes through torchrun). Children run
in their own session: Ctrl-C, SIGTERM or a closing terminal (SIGHUP) reach this process, which
stops starting stages and sends SIGTERM to the running ones, so each checkpoints and exits; the
same ``study run`` resumes them.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from jepactl.study.graph import Stage, dependents
from jepactl.study.runner import run_stage
from jepactl.study.spec import Study
from jepactl.study.state import JobRecord, Paths, Snapshot, now
from jepactl.utils import available_cpus


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


@dataclass
class LocalResult:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # waited for a stage that failed or stopped
    stopped: bool = False


@dataclass
class _Running:
    stage: Stage
    gpus: list[str]
    started: float
    child: subprocess.Popen[bytes] | None = None


def run_local(
    study: Study,
    stages: list[Stage],
    snap: Snapshot,
    max_parallel: int,
    say: Callable[[str], None],
) -> LocalResult:
    """Run every stage of ``stages`` that is not done and not running elsewhere."""
    result = LocalResult()
    done = {s.stage.id for s in snap.stages if s.state == "done"}
    elsewhere = {s.stage.id for s in snap.stages if s.live}
    todo = [s for s in stages if s.id not in done and s.id not in elsewhere]
    waiting_on = dependents(stages)
    gpus = visible_gpus()
    free = list(gpus)
    running: dict[str, _Running] = {}
    events: queue.Queue[tuple[str, int]] = queue.Queue()
    blocked: set[str] = set()
    total = len(todo)
    finished = 0
    paths = Paths(study.root)
    # stages share the CPUs: each gets its part (GPU stages too, for their data workers)
    threads = max(1, available_cpus() // max_parallel)

    def block(stage_id: str) -> None:
        """Skip what waits on ``stage_id`` (it failed, or runs elsewhere)."""
        for d in waiting_on[stage_id]:
            if d not in blocked and d not in done:
                blocked.add(d)
                result.skipped.append(d)
                block(d)

    for sid in elsewhere:  # its dependents would wait on a stage this process does not run
        block(sid)

    def need(stage: Stage) -> int:
        if not gpus:
            return 0
        return max(1, min(stage.gpus or 1, len(gpus))) if stage.kind != "report" else 0

    def ready() -> Iterator[Stage]:
        for stage in todo:
            if stage.id in running or stage.id in blocked or stage.id in done:
                continue
            if stage.id in result.failed or stage.id in result.done:
                continue
            if all(d in done for d in stage.deps):
                yield stage

    def start(stage: Stage, use: list[str]) -> None:
        entry = _Running(stage, use, time.monotonic())
        running[stage.id] = entry
        JobRecord(stage.id, "local", submitted=now()).write(paths.job(stage.id))
        env = {"CUDA_VISIBLE_DEVICES": ",".join(use)} if gpus else {}

        def keep(child: subprocess.Popen[bytes]) -> None:
            entry.child = child
            if stopping.is_set():
                _terminate(child)

        def work() -> None:
            try:
                rc = run_stage(
                    study, stage, "local", ranks=_ranks(stage, use), env=env,
                    threads=threads, new_session=True, on_child=keep,
                )  # fmt: skip
            except Exception as exc:  # a stage that could not even start (disk, permissions)
                rc = -1
                say(f"could not run {stage.id}: {exc}")
            events.put((stage.id, rc))

        threading.Thread(target=work, name=stage.id, daemon=True).start()
        say(f"[{finished + len(running)}/{total}] start {stage.id}")

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():  # a second Ctrl-C: a stage that does not stop is killed
            sig = signal.SIGKILL
            say(f"{name} again: killing the running stages")
        else:
            sig = signal.SIGTERM
            say(f"stopping: {name}; the running stages checkpoint and exit (again to kill them)")
        stopping.set()
        for entry in list(running.values()):
            if entry.child is not None:
                _terminate(entry.child, sig)

    with _handlers(stop):
        while True:
            if not stopping.is_set():
                for stage in list(ready()):
                    if len(running) >= max_parallel:
                        break
                    n = need(stage)
                    if n > len(free):
                        continue
                    use, free[:] = free[:n], free[n:]
                    start(stage, use)
            if not running:
                break
            try:
                sid, rc = events.get(timeout=0.5)
            except queue.Empty:
                continue
            entry = running.pop(sid)
            free.extend(entry.gpus)
            finished += 1
            took = _duration(time.monotonic() - entry.started)
            if rc == 0:
                done.add(sid)
                result.done.append(sid)
                say(f"[{finished}/{total}] done  {sid} ({took})")
            else:
                result.failed.append(sid)
                record = JobRecord.read(paths.job(sid))
                why = record.message if record is not None else f"exit {rc}"
                say(f"[{finished}/{total}] FAILED {sid} ({took}): {why}; log: {paths.log(sid)}")
                block(sid)
    result.stopped = stopping.is_set()
    if result.stopped:
        result.skipped += [s.id for s in todo if s.id not in done and s.id not in result.failed
                           and s.id not in result.skipped]  # fmt: skip
    return result


def _ranks(stage: Stage, gpus: list[str]) -> int:
    """Processes of a stage on this machine: a pretraining run's ranks (one per GPU it got, or
    ``tasks_per_node`` on a CPU), else 1. Several nodes' worth run here as one node."""
    if not stage.multi_rank:
        return 1
    return len(gpus) if gpus else stage.tasks


def _terminate(child: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """``sig`` to the child's whole process group (torchrun's ranks included)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
