"""Metric sinks: copies of ``RUN/metrics.jsonl`` for TensorBoard and Weights & Biases.

``metrics.jsonl`` is the record of a run (``plot``, resume and every test read it); a sink
only receives each line as it is written there, on rank 0. Sinks are chosen by
``tracking.sinks`` (or ``pretrain --log``), checked before the run directory is touched (an
unknown name, a package that is not installed), and opened at the first record, so a run
without sinks imports neither package. Every numeric field of a record except ``step`` and
``time`` becomes a scalar at that step, named as in ``metrics.jsonl``.

On resume, ``metrics.jsonl`` is cut back to the checkpoint's step; TensorBoard is told the
same (``purge_step``), so the steps a killed run logged after its checkpoint are dropped
from the event files too. W&B continues the same run (its id is kept in ``RUN/wandb/``) but
cannot rewind, so it drops the replayed steps it has already seen (it warns).
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from jepactl.config import Recipe, to_dict
from jepactl.errors import ConfigError
from jepactl.rundir import RunDir
from jepactl.train.metrics import MetricsLine
from jepactl.utils import atomic_write_text, suggestion


class Sink(Protocol):
    """Receives the scalars of each logged record."""

    def write(self, step: int, scalars: Mapping[str, float], walltime: float | None) -> None: ...

    def close(self) -> None: ...


@dataclass
class Opening:
    """What a sink is opened with: the run, its recipe, and the step it resumes at (None for
    a new run; known once the checkpoint is chosen)."""

    run: RunDir
    recipe: Recipe
    resume_step: int | None = None


@dataclass(frozen=True)
class SinkKind:
    """A registered sink: the package it needs, the ``pip install 'jepactl[extra]'`` that
    brings it, and how to open it."""

    package: str
    extra: str
    open: Callable[[Opening], Sink]


class TensorBoardSink:
    """Event files in ``RUN/tensorboard/``, flushed after each record (a record comes once
    per ``train.log_every`` steps, so a live TensorBoard is never two minutes behind)."""

    def __init__(self, opening: Opening) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # Purge what a previous process logged from this step on: after the checkpoint it
        # resumes from (or everything, for a new run, as metrics.jsonl is started afresh).
        start = 0 if opening.resume_step is None else opening.resume_step + 1
        self.writer = SummaryWriter(str(opening.run.tensorboard), purge_step=start)

    def write(self, step: int, scalars: Mapping[str, float], walltime: float | None) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step, walltime=walltime)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A Weights & Biases run in ``tracking.wandb_project``, named after the run directory,
    with the resolved recipe as its config. ``WANDB_MODE=offline`` writes it under
    ``RUN/wandb/`` without network (``wandb sync`` uploads it later)."""

    def __init__(self, opening: Opening) -> None:
        import wandb

        run = opening.run
        run_id = run.wandb_id.read_text().strip() if run.wandb_id.is_file() else ""
        if not run_id or opening.resume_step is None:
            run_id = uuid.uuid4().hex[:16]
            atomic_write_text(run.wandb_id, run_id + "\n")
        self.run = wandb.init(
            project=opening.recipe.tracking.wandb_project,
            name=run.root.name,
            dir=str(run.root),
            config=to_dict(opening.recipe),
            id=run_id,
            resume="allow",
        )

    def write(self, step: int, scalars: Mapping[str, float], walltime: float | None) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


#: Every sink by the name ``tracking.sinks`` uses (config.SinkName lists the same names).
SINKS: dict[str, SinkKind] = {
    "tensorboard": SinkKind("tensorboard", "tensorboard", TensorBoardSink),
    "wandb": SinkKind("wandb", "wandb", WandbSink),
}


def sink_kind(name: str) -> SinkKind:
    """The registered sink ``name``, whose package is installed; otherwise a one-line
    :class:`ConfigError` that says what to type."""
    kind = SINKS.get(name)
    if kind is None:
        raise ConfigError(f"unknown metric sink '{name}'{suggestion(name, SINKS)}")
    if importlib.util.find_spec(kind.package) is None:
        raise ConfigError(
            f"the {name} metric sink needs the {kind.package} package: "
            f"pip install 'jepactl[{kind.extra}]'"
        )
    return kind


def scalars(record: MetricsLine) -> dict[str, float]:
    """The numeric fields of a ``metrics.jsonl`` line, less ``step`` and ``time``."""
    return record.logged()


class Fanout:
    """The sinks of one run: checked now, opened at the first record, closed at the end."""

    def __init__(self, names: Sequence[str], opening: Opening) -> None:
        self.kinds = [(name, sink_kind(name)) for name in names]
        self.opening = opening
        self.sinks: list[Sink] | None = None

    def __enter__(self) -> Fanout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, record: MetricsLine) -> None:
        """Send one ``metrics.jsonl`` line to every sink."""
        if not self.kinds:
            return
        if self.sinks is None:
            self.sinks = []
            for _, kind in self.kinds:  # one by one: close() closes those that opened
                self.sinks.append(kind.open(self.opening))
        values = scalars(record)
        walltime = float(record.time) if record.time is not None else None
        for sink in self.sinks:
            sink.write(record.step, values, walltime)

    def close(self) -> None:
        for sink in self.sinks or []:
            sink.close()
        self.sinks = None
