"""Why a run stops between steps: a signal (SIGTERM/SIGINT: checkpoint at the next step
boundary and exit 0) or too many undecodable samples, decided for all ranks at once.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from jepactl.data.loader import Batch
from jepactl.dist import DistInfo
from jepactl.rundir import RunDir
from jepactl.train.checkpointing import keep_records


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints at the next step boundary and exits 0.

    A second SIGINT falls through to Python's default handler (KeyboardInterrupt), for a
    user who really wants out now.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


class BadSamples:
    """Records replaced (undecodable) samples and decides, for all ranks at once, when there
    are too many: more than ``max_fraction`` of the clips drawn by all ranks (and at least 10,
    so a couple of broken files early on do not stop a run).

    Each rank appends to its own file (``bad_samples.jsonl`` on rank 0,
    ``bad_samples.rank<r>.jsonl`` on the others: concurrent appends to one file on a network
    file system are not atomic); the counts start from what the files already hold, so they
    survive a resume.
    """

    def __init__(self, run_dir: Path, rank: int, max_fraction: float) -> None:
        self.path = RunDir(run_dir).bad_samples(rank)
        self.max_fraction = max_fraction
        self.count = 0  # on this rank
        self.total = 0  # on all ranks, as of the last check
        self.drawn = 0

    def resume(self, step: int) -> None:
        """Keep the records of steps before ``step`` (later ones will be replayed)."""
        self.count = keep_records(self.path, lambda r: int(r.get("step", step)) < step)

    def record(self, batch: Batch) -> None:
        self.drawn += len(batch.ids) + len(batch.bad)
        if not batch.bad:
            return
        self.count += len(batch.bad)
        with self.path.open("a") as f:
            f.write("".join(json.dumps(b) + "\n" for b in batch.bad))

    def message(self) -> str:
        return (
            f"{self.total} samples failed to load (> data.max_bad_fraction="
            f"{self.max_fraction} of those drawn); see {self.path.parent}/bad_samples*.jsonl "
            "and run `jepactl data check` on the dataset. The run was checkpointed and resumes "
            "once the data is fixed."
        )


def stop_flags(stop: bool, bad: BadSamples, info: DistInfo) -> tuple[bool, bool]:
    """(stop requested on any rank, too many bad samples on all ranks together): one CPU
    all-reduce per step, never a GPU synchronisation."""
    flags = torch.tensor([int(stop), bad.count, bad.drawn], dtype=torch.int64)
    if info.distributed:
        dist.all_reduce(flags, group=info.control_group)
    bad.total = int(flags[1])
    too_many = bad.total > max(10, bad.max_fraction * int(flags[2]))
    return bool(flags[0]), too_many
