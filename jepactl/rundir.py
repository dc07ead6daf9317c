"""A run directory: every path inside it, and the read and write of its small files.

::

    RUN/
      config.yaml                  the resolved recipe (written by pretrain)
      metrics.jsonl                one JSON line per logged step
      bad_samples[.rank<r>].jsonl  clips replaced because they would not decode
      checkpoints/latest.pt        the last good state; step_<n>.pt snapshots beside it
      checkpoints/latest.json      what latest.pt holds (step, total steps, sha256), so a study
                                   reads a run's progress without torch (see CheckpointRecord)
      features/<task>/<split>.h5   frozen-encoder token caches (extract-features)
      probes/<task>-<kind>.json    probe results of `probe`, one per task and probe kind
                                   (``ProbeResult.kind``); runs written before the kind
                                   was in the name hold probes/<task>.json
      probes/synth-motion-<task>[-<protocol>].json   results of `synth-motion`
      log.txt                      pretrain's status messages, timestamped
      tensorboard/                 TensorBoard event files (tracking.sinks: [tensorboard])
      wandb/                       Weights & Biases files (tracking.sinks: [wandb])
      export/                      the encoder as safetensors + config.json (jepactl export)
      .lock                        held by the one process writing the run

No other module spells these names. Imports neither torch nor the models, so ``compare`` and
the CLI's listing commands stay light.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jepactl.utils import atomic_write_text

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "latest.pt"
LATEST_RECORD = "latest.json"
FEATURES = "features"
PROBES = "probes"
CACHE_SUFFIX = ".h5"
LOG = "log.txt"
TENSORBOARD = "tensorboard"
WANDB = "wandb"
EXPORT = "export"


@dataclass(frozen=True)
class RunDir:
    """The folder of one pretraining run (``RunDir(path)``; it need not exist yet)."""

    root: Path

    def __init__(self, root: Path | str | RunDir) -> None:
        object.__setattr__(self, "root", Path(root))

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    # -- paths -------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    def bad_samples(self, rank: int = 0) -> Path:
        """Each rank appends to a file of its own: appends to one file are not atomic on NFS."""
        return self.root / ("bad_samples.jsonl" if rank == 0 else f"bad_samples.rank{rank}.jsonl")

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def latest(self) -> Path:
        return self.checkpoints / LATEST

    @property
    def latest_record(self) -> Path:
        return self.checkpoints / LATEST_RECORD

    def snapshot(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:07d}.pt"

    def features(self, task: str) -> Path:
        """The folder of one task's caches (locked while being extracted)."""
        return self.root / FEATURES / task

    def cache(self, task: str, split: str) -> Path:
        return self.features(task) / f"{split}{CACHE_SUFFIX}"

    def shard(self, task: str, split: str, rank: int) -> Path:
        return self.features(task) / f"{split}.rank{rank}{CACHE_SUFFIX}"

    @property
    def probes(self) -> Path:
        return self.root / PROBES

    def result(self, name: str) -> Path:
        return self.probes / f"{name}.json"

    @property
    def log(self) -> Path:
        return self.root / LOG

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def wandb(self) -> Path:
        """The folder Weights & Biases writes into (``wandb.init(dir=RUN)`` makes it)."""
        return self.root / WANDB

    @property
    def wandb_id(self) -> Path:
        """The W&B run id, kept so a resumed run continues the same W&B run."""
        return self.wandb / "jepactl-run-id.txt"

    @property
    def export(self) -> Path:
        return self.root / EXPORT

    # -- questions ---------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether pretraining has written this folder's ``config.yaml``."""
        return self.config.is_file()

    def has_checkpoint(self) -> bool:
        return self.latest.is_file()

    def result_files(self) -> list[Path]:
        """Every probe result, by name (hidden files such as half-written temporaries left out)."""
        if not self.probes.is_dir():
            return []
        return sorted(
            p for p in self.probes.glob("*.json") if p.is_file() and not p.name.startswith(".")
        )

    # -- small files -------------------------------------------------------------------
    def read_config(self) -> Any:
        """The parsed ``config.yaml`` (raises ``OSError`` or ``yaml.YAMLError``)."""
        return yaml.safe_load(self.config.read_text())

    def write_config(self, text: str) -> None:
        atomic_write_text(self.config, text)

    def write_checkpoint_record(self, step: int, total_steps: int, sha256: str) -> None:
        """Record what ``checkpoints/latest.pt`` (just written) holds, beside it."""
        st = self.latest.stat()
        record = CheckpointRecord(step, total_steps, sha256, st.st_size, st.st_mtime_ns)
        atomic_write_text(self.latest_record, json.dumps(dataclasses.asdict(record)) + "\n")

    def checkpoint_record(self) -> CheckpointRecord | None:
        """What ``checkpoints/latest.pt`` holds, or ``None`` when there is no checkpoint, no
        record (a run written before records were kept) or a record of another file (a crash
        between the checkpoint's rename and the record's, or a checkpoint moved aside)."""
        try:
            data = json.loads(self.latest_record.read_text())
            st = self.latest.stat()
            record = CheckpointRecord(
                int(data["step"]), int(data["total_steps"]), str(data["sha256"]),
                int(data["size"]), int(data["mtime_ns"]),
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record if (record.size, record.mtime_ns) == (st.st_size, st.st_mtime_ns) else None


@dataclass(frozen=True)
class CheckpointRecord:
    """``checkpoints/latest.json``: the step and sha256 of ``latest.pt``, and the run's total
    steps, tied to the file by its size and modification time."""

    step: int
    total_steps: int
    sha256: str
    size: int
    mtime_ns: int

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


#: The probe kinds a result can have (:attr:`jepactl.probe.records.ProbeResult.kind`): each
#: head, the scikit-learn linear probe, and each torch head selected by the lr x wd sweep.
PROBE_KINDS: tuple[str, ...] = (
    "attentive",
    "attentive-reference",
    "linear",
    "linear-sklearn",
    "attentive-sweep",
    "attentive-reference-sweep",
    "linear-sweep",
)


def result_stem(task: str, kind: str) -> str:
    """The name (``probes/<name>.json``) of ``task``'s result from a ``kind`` probe: the kind
    is part of it, so an attentive, a linear and a swept probe of one task never overwrite
    each other."""
    return f"{task}-{kind}"


def runs_under(base: Path) -> Iterator[RunDir]:
    """The runs directly below ``base`` that have a checkpoint."""
    for latest in base.glob(f"*/{CHECKPOINTS}/{LATEST}"):
        yield RunDir(latest.parent.parent)


def latest_run(base: Path) -> RunDir | None:
    """The run below ``base`` whose checkpoint was written last, or ``None``."""
    runs = list(runs_under(base))
    return max(runs, key=lambda r: r.latest.stat().st_mtime) if runs else None
