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
    run = _LocalRun.plan(study, stages, snap, max_parallel, say)
    for sid in run.elsewhere:  # its dependents would wait on a stage this process does not run
        run.block(sid)
    with _handlers(run.stop):
        run.loop()
    return run.finish()


@dataclass
class _LocalRun:
    """One :func:`run_local` call: the stages to run, those running, the free GPUs, and the
    result so far."""

    study: Study
    max_parallel: int
    say: Callable[[str], None]
    result: LocalResult
    done: set[str]
    elsewhere: set[str]
    todo: list[Stage]
    waiting_on: dict[str, list[str]]
    gpus: list[str]
    free: list[str]
    paths: Paths
    threads: int  # each stage's part of the CPUs
    running: dict[str, _Running] = field(default_factory=dict)
    events: queue.Queue[tuple[str, int]] = field(default_factory=queue.Queue)
    blocked: set[str] = field(default_factory=set)
    finished: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def total(self) -> int:
        """How many stages this call runs."""
        return len(self.todo)

    @classmethod
    def plan(
        cls,
        study: Study,
        stages: list[Stage],
        snap: Snapshot,
        max_parallel: int,
        say: Callable[[str], None],
    ) -> _LocalRun:
        """The stages of ``stages`` to run here (not done, not running elsewhere)."""
        result = LocalResult()
        done = {s.stage.id for s in snap.stages if s.state == "done"}
        elsewhere = {s.stage.id for s in snap.stages if s.live}
        todo = [s for s in stages if s.id not in done and s.id not in elsewhere]
        waiting_on = dependents(stages)
        gpus = visible_gpus()
        paths = Paths(study.root)
        # stages share the CPUs: each gets its part (GPU stages too, for their data workers)
        threads = max(1, available_cpus() // max_parallel)
        return cls(study, max_parallel, say, result, done, elsewhere, todo, waiting_on, gpus,
                   list(gpus), paths, threads)  # fmt: skip

    def block(self, stage_id: str) -> None:
        """Skip what waits on ``stage_id`` (it failed, or runs elsewhere)."""
        for d in self.waiting_on[stage_id]:
            if d not in self.blocked and d not in self.done:
                self.blocked.add(d)
                self.result.skipped.append(d)
                self.block(d)

    def need(self, stage: Stage) -> int:
        """How many GPUs ``stage`` gets (none without GPUs, and none for the report)."""
        if not self.gpus:
            return 0
        return max(1, min(stage.gpus or 1, len(self.gpus))) if stage.kind != "report" else 0

    def ready(self) -> Iterator[Stage]:
        """The stages not started yet whose dependencies are all done."""
        for stage in self.todo:
            if stage.id in self.running or stage.id in self.blocked or stage.id in self.done:
                continue
            if stage.id in self.result.failed or stage.id in self.result.done:
                continue
            if all(d in self.done for d in stage.deps):
                yield stage

    def start(self, stage: Stage, use: list[str]) -> None:
        """Run ``stage`` on the GPUs ``use`` from a thread, which reports its exit status."""
        entry = _Running(stage, use, time.monotonic())
        self.running[stage.id] = entry
        JobRecord(stage.id, "local", submitted=now()).write(self.paths.job(stage.id))
        env = {"CUDA_VISIBLE_DEVICES": ",".join(use)} if self.gpus else {}

        def keep(child: subprocess.Popen[bytes]) -> None:
            entry.child = child
            if self.stopping.is_set():
                _terminate(child)

        def work() -> None:
            try:
                rc = run_stage(
                    self.study, stage, "local", ranks=_ranks(stage, use), env=env,
                    threads=self.threads, new_session=True, on_child=keep,
                )  # fmt: skip
            except Exception as exc:  # a stage that could not even start (disk, permissions)
                rc = -1
                self.say(f"could not run {stage.id}: {exc}")
            self.events.put((stage.id, rc))

        threading.Thread(target=work, name=stage.id, daemon=True).start()
        self.say(f"[{self.finished + len(self.running)}/{self.total}] start {stage.id}")

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: stop starting stages and SIGTERM the running ones (SIGKILL on
        a second signal)."""
        name = signal.Signals(signum).name
        if self.stopping.is_set():  # a second Ctrl-C: a stage that does not stop is killed
            sig = signal.SIGKILL
            self.say(f"{name} again: killing the running stages")
        else:
            sig = signal.SIGTERM
            self.say(
                f"stopping: {name}; the running stages checkpoint and exit (again to kill them)"
            )
        self.stopping.set()
        for entry in list(self.running.values()):
            if entry.child is not None:
                _terminate(entry.child, sig)

    def start_ready(self) -> None:
        """Start the ready stages that fit (``max_parallel``, free GPUs), unless stopping."""
        if self.stopping.is_set():
            return
        for stage in list(self.ready()):
            if len(self.running) >= self.max_parallel:
                break
            n = self.need(stage)
            if n > len(self.free):
                continue
            use, self.free[:] = self.free[:n], self.free[n:]
            self.start(stage, use)

    def loop(self) -> None:
        """Start stages and collect their ends until nothing runs."""
        while True:
            self.start_ready()
            if not self.running:
                break
            try:
                sid, rc = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            self.ended(sid, rc)

    def ended(self, sid: str, rc: int) -> None:
        """Record the end of stage ``sid`` (exit status ``rc``) and free its GPUs."""
        entry = self.running.pop(sid)
        self.free.extend(entry.gpus)
        self.finished += 1
        took = _duration(time.monotonic() - entry.started)
        finished, total = self.finished, self.total
        if rc == 0:
            self.done.add(sid)
            self.result.done.append(sid)
            self.say(f"[{finished}/{total}] done  {sid} ({took})")
        else:
            self.result.failed.append(sid)
            record = JobRecord.read(self.paths.job(sid))
            why = record.message if record is not None else f"exit {rc}"
            self.say(
                f"[{finished}/{total}] FAILED {sid} ({took}): {why}; log: {self.paths.log(sid)}"
            )
            self.block(sid)

    def finish(self) -> LocalResult:
        """The result, with what a stop left unstarted counted as skipped."""
        result = self.result
        result.stopped = self.stopping.is_set()
        if result.stopped:
            result.skipped += [
                s.id for s in self.todo
                if s.id not in self.done and s.id not in result.failed
                and s.id not in result.skipped
            ]  # fmt: skip
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
