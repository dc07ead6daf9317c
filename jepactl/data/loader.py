"""From a recipe's ``data`` section to batches on the device.

Sampling is a pure function of (seed, step, rank): the batch sampler yields, for each global
step from ``start_step`` on, the indices this rank loads. Resuming at step ``s`` therefore needs
no sampler state, every rank draws a disjoint slice of the same global batch, and DataLoader
workers decode in parallel without coordinating.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from jepactl.config import ConfigError, DataConfig
from jepactl.data.base import Sample, Source
from jepactl.utils import derive_seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_source(cfg: DataConfig, seed: int) -> Source:
    """The dataset reader a recipe names. Only the built-in synthetic source exists so far."""
    if cfg.source == "synth":
        from jepactl.data.synthetic import SyntheticVideoSource

        return SyntheticVideoSource(
            num_frames=cfg.num_frames,
            size=cfg.crop,
            seed=seed,
            length=cfg.synth.length,
            min_objects=cfg.synth.min_objects,
            max_objects=cfg.synth.max_objects,
        )
    raise ConfigError(
        f"data.source '{cfg.source}' is not available yet: only 'synth' (the built-in "
        "procedural source) is implemented; try --set data.source=synth"
    )


class StepBatchSampler(Sampler[list[int]]):
    """This rank's sample indices for global steps ``start_step .. end_step - 1``.

    ``sequential``: step ``s`` takes the global slice ``[s * G, (s + 1) * G)`` modulo the source
    length (every clip of an infinite synthetic source is new). Otherwise each step draws ``G``
    indices with replacement from a generator seeded by ``(seed, step)``.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        rank: int,
        world_size: int,
        seed: int,
        start_step: int,
        end_step: int,
        sequential: bool,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(
                f"data.batch_size {global_batch} is not divisible by the {world_size} ranks"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.seed = seed
        self.start_step = start_step
        self.end_step = end_step
        self.sequential = sequential

    def indices(self, step: int) -> list[int]:
        lo = self.rank * self.local_batch
        if self.sequential:
            first = step * self.global_batch + lo
            return [(first + i) % self.num_samples for i in range(self.local_batch)]
        rng = np.random.default_rng(derive_seed(self.seed, "data", step))
        draw = rng.integers(0, self.num_samples, size=self.global_batch)
        return draw[lo : lo + self.local_batch].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.end_step):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


@dataclass
class Batch:
    clips: torch.Tensor  # uint8 [B, T, H, W, C]
    labels: torch.Tensor  # int64 [B]
    ids: list[str]

    def pin_memory(self) -> Batch:
        return Batch(self.clips.pin_memory(), self.labels.pin_memory(), self.ids)


def collate(samples: list[Sample]) -> Batch:
    return Batch(
        torch.stack([s.clip for s in samples]),
        torch.tensor([s.label for s in samples], dtype=torch.int64),
        [s.id for s in samples],
    )


def _worker_init(_: int) -> None:
    # Pre-emption signals are for the training process, which checkpoints and then shuts the
    # workers down itself; a worker killed first would turn a clean stop into a crash.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_loader(
    source: Source, sampler: StepBatchSampler, num_workers: int, pin_memory: bool
) -> DataLoader:
    """A DataLoader over ``sampler``'s steps; more workers than CPUs would only thrash, so
    ``num_workers`` is capped at the CPUs this process may use (with a note)."""
    cpus = available_cpus()
    if num_workers > cpus:
        print(f"jepactl: data.num_workers={num_workers} > {cpus} CPUs here; using {cpus}")
        num_workers = cpus
    return DataLoader(
        source,  # type: ignore[arg-type]
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )


def to_model_input(clips: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, T, H, W, C]`` -> ImageNet-normalised ``[B, C, T, H, W]`` on clips' device.

    Kept as uint8 through the workers and the host-to-device copy (4x fewer bytes); converted
    once, on the batch, where it is cheapest.
    """
    x = clips.permute(0, 4, 1, 2, 3).to(dtype).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=dtype).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=dtype).view(1, 3, 1, 1, 1)
    return x.sub_(mean).div_(std)
