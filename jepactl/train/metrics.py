"""``RUN/metrics.jsonl``: averages over each logging interval, one host sync per interval."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from jepactl.train.sinks import Fanout
from jepactl.utils import read_jsonl


class MetricsLog:
    """Accumulates loss terms on the device; ``flush`` reads them back once per interval.

    Under DDP the logged losses are averaged over ranks (one all-reduce per interval).

    Also times the interval on the host: clips/s and the fraction of wall time spent waiting
    for the data loader. No per-step ``.item()``, so the GPU queue is never drained mid-interval.

    Each record written goes to ``sinks`` too (TensorBoard, W&B), after its line is in the
    file: the file is the record, the sinks copies.
    """

    def __init__(
        self,
        path: Path | None,
        global_batch: int,
        device: torch.device,
        sinks: Fanout | None = None,
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

    def flush(self, **fields: Any) -> dict[str, Any]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        names = list(self.sums)
        values: list[float] = []
        if names:
            stacked = torch.stack([self.sums[n] for n in names])
            if dist.is_initialized():  # every rank calls flush at the same step
                dist.all_reduce(stacked)  # SUM: gloo has no AVG before torch 2.7
                stacked /= dist.get_world_size()
            values = stacked.cpu().tolist()
        record: dict[str, Any] = dict(fields)
        means = {n: v / max(self.steps, 1) for n, v in zip(names, values, strict=True)}
        record["loss"] = sum(v for n, v in means.items() if n in self.loss_names)
        record.update(means)
        record["clips_per_s"] = self.steps * self.global_batch / elapsed
        record["data_wait_frac"] = self.data_wait / elapsed
        if self.device.type == "cuda":
            record["max_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        record["time"] = time.time()
        self.write(record)
        self.sums, self.steps, self.data_wait = {}, 0, 0.0
        self.t0 = time.perf_counter()
        return record

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as it is (the monitor's step-0 controls)."""
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.sinks is not None:
            self.sinks.write(record)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a line still being written (or torn) is skipped."""
    return read_jsonl(path)
