"""``RUN/metrics.jsonl``: averages over each logging interval, one host sync per interval.

Each line is one :class:`MetricsLine`, and this module alone spells its keys: :class:`MetricsLog`
writes lines, :func:`read_metrics` reads them (every other room gets the typed lines),
:func:`last_step` reads the last line's step from the file's tail, and :func:`keep_up_to` cuts
the file back on resume. The names other rooms log or look up (the monitor's, ``plot``'s) are
the constants below.

Every line carries its format version under ``"format"`` (:data:`METRICS_LINE`): a run resumed
by a newer jepactl holds lines of two releases. Version 1 (jepactl 0.1.0) had no key; version 2
adds it and nothing else. A line of a newer version is refused in one line by every reader; a
line torn by a kill (not a JSON object) is skipped as it always was.

No torch at import (``plot`` and study status read metrics without it); :meth:`MetricsLog.flush`
imports it when training runs anyway.
"""

from __future__ import annotations

import json
import os
import time
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from jepactl.formats import Format, FormatError, NewerFormatError
from jepactl.utils import atomic_write_text, iter_jsonl, warn

if TYPE_CHECKING:
    import torch


def _from_v1(record: dict[str, Any]) -> dict[str, Any]:
    """A version-1 line (jepactl 0.1.0) holds the names of version 2; only the key is new."""
    return record


#: The metrics line's format: version 2 stamps every line with its version under ``format``.
METRICS_LINE = Format("metrics line", 2, key="format", unversioned=1, migrations={1: _from_v1})

#: Names ``jepactl plot`` draws: the step every line has (the x axis), the logged loss, and
#: those the monitor logs (:mod:`jepactl.train.monitor`).
STEP = "step"
LOSS = "loss"
RANKME = "rankme"
PROBE_LINEAR = "probe_linear"
PROBE_KNN = "probe_knn"
#: The step-0 line's accuracy of guessing on the monitor task (%).
PROBE_CHANCE = "probe_chance"
#: The monitor's reasons to suspect a collapse (:attr:`MetricsLine.collapse`).
COLLAPSE = "collapse"
#: The wall time a line was written at (:attr:`MetricsLine.time`).
TIME = "time"
_PROBE = "probe_"
_PIXELS = "_pixels"


def is_probe(name: str) -> bool:
    """Whether ``name`` is an online-probe accuracy (or one of its controls)."""
    return name.startswith(_PROBE)


def pixel_control(name: str) -> str:
    """The name of the raw-pixel control of the probe accuracy ``name``."""
    return name + _PIXELS


def is_control(name: str) -> bool:
    """Whether ``name`` is a step-0 control (raw pixels, chance), a level rather than a curve."""
    return name.endswith(_PIXELS) or name == PROBE_CHANCE


@dataclass(frozen=True)
class MetricsLine(Mapping[str, Any]):
    """One line of ``metrics.jsonl``: a logging interval's averages, or the monitor's step-0
    controls (which have a ``step`` and ``scalars`` only).

    The fields are in the order the line is written; ``scalars`` holds every other number by
    name (the loss terms' means, the objective's diagnostics such as ``grad_norm``, the
    monitor's checks and controls), an open set. Read by name as a mapping too (``line["loss"]``,
    ``"loss" in line``): the fields that are set and the scalars, as the line spells them, less
    the format version. The metric sinks and the tests read lines so.
    """

    step: int
    epoch: int | None = None
    lr: float | None = None
    bad_samples: int | None = None
    nonfinite_skipped: int | None = None
    #: The sum of the loss terms' means (absent from the step-0 controls).
    loss: float | None = None
    scalars: Mapping[str, float] = field(default_factory=dict)
    #: The monitor's reasons to suspect a collapse, when it suspects one.
    collapse: str | None = None
    clips_per_s: float | None = None
    data_wait_frac: float | None = None
    max_mem_gib: float | None = None  # on CUDA only
    time: float | None = None

    def __post_init__(self) -> None:
        clash = set(self.scalars) & (set(_KINDS) | {METRICS_LINE.key, _SCALARS})
        if clash:
            raise ValueError(f"metrics line scalars named as its fields: {sorted(clash)}")

    def __getitem__(self, name: str) -> Any:
        if name in _KINDS:
            value = getattr(self, name)
            if value is None:
                raise KeyError(name)
            return value
        return self.scalars[name]

    def __iter__(self) -> Iterator[str]:
        for f in fields(self):
            if f.name == _SCALARS:
                yield from self.scalars
            elif getattr(self, f.name) is not None:
                yield f.name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def numbers(self) -> dict[str, float]:
        """Every number the line logs, by name (``step`` and ``time`` too)."""
        return {k: v for k, v in self.items() if _is_number(v)}

    def logged(self) -> dict[str, float]:
        """Every number the line logs against its step, as floats: :meth:`numbers` less the
        step and the wall time (what the metric sinks record)."""
        return {k: float(v) for k, v in self.numbers().items() if k not in (STEP, TIME)}

    def to_json(self) -> dict[str, Any]:
        """The line as written: the format version first, then :meth:`items`."""
        return METRICS_LINE.stamp(dict(self))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str | Path) -> MetricsLine:
        """The line ``data`` as read at ``where``, brought to the current version; a
        :class:`~jepactl.formats.NewerFormatError` for a line of a newer jepactl."""
        record = METRICS_LINE.upgrade(data, where)
        del record[METRICS_LINE.key]
        return cls.from_values(record, where)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], where: str | Path) -> MetricsLine:
        """A line of ``values`` by name: a field's name sets the field, any other name is a
        scalar, ``None`` is no value; a :class:`~jepactl.formats.FormatError` for a value of the
        wrong kind."""
        named: dict[str, Any] = {}
        scalars: dict[str, float] = {}
        for name, value in values.items():
            if value is None:  # JSON null: not logged
                continue
            if name == _SCALARS:
                raise FormatError(f"{where}: a metrics line names a value {name!r}")
            if name not in _KINDS:
                scalars[name] = _checked(value, (int, float), name, where)
            else:
                named[name] = _checked(value, _KINDS[name], name, where)
        if not isinstance(named.get(STEP), int):
            raise FormatError(f"{where}: a metrics line without a step")
        return cls(**named, scalars=scalars)


_SCALARS = "scalars"


def _field_kinds() -> dict[str, tuple[type, ...]]:
    """What each named field of :class:`MetricsLine` holds (``int | None`` -> ``(int,)``)."""
    hints = typing.get_type_hints(MetricsLine)
    kinds: dict[str, tuple[type, ...]] = {}
    for f in fields(MetricsLine):
        if f.name == _SCALARS:
            continue
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kind = tuple(a for a in args if a is not type(None))
        kinds[f.name] = (int, float) if kind == (float,) else kind
    return kinds


_KINDS = _field_kinds()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked(value: Any, kind: tuple[type, ...], name: str, where: str | Path) -> Any:
    """``value`` when it is of ``kind`` (a bool is no number), else a one-line FormatError."""
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    wanted = " or ".join(k.__name__ for k in kind)
    raise FormatError(f"{where}: metrics line {name} is {value!r}, not a {wanted}")


class LineSink(Protocol):
    """Where :class:`MetricsLog` sends each line after writing it
    (:class:`~jepactl.train.sinks.Fanout`: TensorBoard, W&B)."""

    def write(self, line: MetricsLine) -> None: ...


class MetricsLog:
    """Accumulates loss terms on the device; ``flush`` reads them back once per interval.

    Under DDP the logged losses are averaged over ranks (one all-reduce per interval).

    Also times the interval on the host: clips/s and the fraction of wall time spent waiting
    for the data loader. No per-step ``.item()``, so the GPU queue is never drained mid-interval.

    Each line written goes to ``sinks`` too (TensorBoard, W&B), after it is in the file: the
    file is the record, the sinks copies.
    """

    def __init__(
        self,
        path: Path | None,
        global_batch: int,
        device: torch.device,
        sinks: LineSink | None = None,
    ) -> None:
        self.path = path
        self.sinks = sinks
        self.device = device
        self.global_batch = global_batch
        self.sums: dict[str, torch.Tensor] = {}
        self.loss_names: set[str] = set()
        self.steps = 0
        self.data_wait = 0.0
        self.t0 = time.perf_counter()

    def add(
        self, losses: dict[str, torch.Tensor], logs: dict[str, torch.Tensor], data_wait: float
    ) -> None:
        """``losses`` are summed into the logged ``loss``; ``logs`` are diagnostics."""
        self.loss_names.update(losses)
        for name, value in {**losses, **logs}.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.steps += 1
        self.data_wait += data_wait

    def untimed(self, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``work`` (the monitor's checks) off the interval's clock, so clips/s and the
        data-wait fraction stay those of training."""
        start = time.perf_counter()
        try:
            return work()
        finally:
            self.t0 += time.perf_counter() - start

    def flush(
        self,
        step: int,
        epoch: int | None = None,
        lr: float | None = None,
        bad_samples: int | None = None,
        nonfinite_skipped: int | None = None,
        **monitor: Any,
    ) -> MetricsLine:
        """Write the interval's line at ``step`` (with the monitor's checks, when given) and
        start the next interval; returns the line."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        means = self._means()
        values: dict[str, Any] = {
            STEP: step, "epoch": epoch, "lr": lr, "bad_samples": bad_samples,
            "nonfinite_skipped": nonfinite_skipped, **monitor,
        }  # fmt: skip
        values[LOSS] = sum(v for n, v in means.items() if n in self.loss_names)
        values.update(means)
        values["clips_per_s"] = self.steps * self.global_batch / elapsed
        values["data_wait_frac"] = self.data_wait / elapsed
        if self.device.type == "cuda":
            import torch

            values["max_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        values[TIME] = time.time()
        line = MetricsLine.from_values(values, "the metrics line being written")
        self.write(line)
        self.sums, self.steps, self.data_wait = {}, 0, 0.0
        self.t0 = time.perf_counter()
        return line

    def _means(self) -> dict[str, float]:
        """The interval's mean of each summed term (over ranks too: one all-reduce)."""
        import torch
        import torch.distributed as dist

        names = list(self.sums)
        values: list[float] = []
        if names:
            stacked = torch.stack([self.sums[n] for n in names])
            if dist.is_initialized():  # every rank calls flush at the same step
                dist.all_reduce(stacked)  # SUM: gloo has no AVG before torch 2.7
                stacked /= dist.get_world_size()
            values = stacked.cpu().tolist()
        return {n: v / max(self.steps, 1) for n, v in zip(names, values, strict=True)}

    def write_controls(self, step: int, controls: Mapping[str, Any]) -> MetricsLine:
        """Write the monitor's ``controls`` (at step 0: the untrained encoder, raw pixels) as
        a line of their own; returns it."""
        line = MetricsLine.from_values({**controls, STEP: step}, "the monitor's controls")
        self.write(line)
        return line

    def write(self, line: MetricsLine) -> None:
        """Append ``line`` to the file (on the logging rank), then send it to the sinks."""
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(line.to_json()) + "\n")
        if self.sinks is not None:
            self.sinks.write(line)


def _lines(
    path: Path, torn: Callable[[str], object] | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``path:line``, record) of each JSON-object line (torn ones skipped, told to ``torn``)."""
    for number, record in iter_jsonl(path, torn):
        yield f"{path}:{number}", record


def read_metrics(path: Path) -> list[MetricsLine]:
    """The lines of ``metrics.jsonl``; a line still being written (or torn) is skipped, a line
    of a newer jepactl refused (:class:`~jepactl.formats.NewerFormatError`)."""
    return [MetricsLine.from_json(record, where) for where, record in _lines(path, None)]


def last_step(path: Path, tail_bytes: int = 8192) -> int | None:
    """The step of the last whole line of ``metrics.jsonl``, read from its last ``tail_bytes``
    only (cheap however long the run); ``None`` without a file or a readable line there. A
    torn or damaged line is passed over; a line of a newer jepactl is refused
    (:class:`~jepactl.formats.NewerFormatError`)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for text in reversed(lines):
        try:
            record = json.loads(text)
        except ValueError:  # torn, or the tail's first line cut
            continue
        if not isinstance(record, dict):
            continue
        try:
            return MetricsLine.from_json(record, path).step
        except NewerFormatError:
            raise
        except FormatError:
            continue
    return None


def keep_up_to(path: Path, step: int) -> int:
    """On resume at ``step``: rewrite ``metrics.jsonl`` atomically with only its lines of
    steps up to ``step`` (later ones will be logged again), each kept as written (so lines of
    an older release stay theirs); returns how many remain. A torn line is dropped with a
    warning."""
    if not path.exists():
        return 0
    kept = [
        json.dumps(record) + "\n"
        for where, record in _lines(path, warn)
        if MetricsLine.from_json(record, where).step <= step
    ]
    atomic_write_text(path, "".join(kept))
    return len(kept)
