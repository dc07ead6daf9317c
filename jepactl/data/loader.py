"""From a recipe's ``data`` section to batches (clips and masks) on the device.

Sampling is a pure function of (seed, step, rank): the batch sampler yields, for each global
step from ``start_step`` on, the ``(step, index)`` pairs this rank loads. Resuming at step ``s``
therefore needs no sampler state, every rank draws a disjoint slice of the same global batch,
and DataLoader workers decode in parallel without coordinating.

The collate step also samples the batch's masks, in the worker, from generators derived from
``(seed, step, rank, group)``: masks are ready (and pinned) when the batch arrives, mask
strategies that look at pixels see the raw uint8 clips, and the training step never waits on
a host-side draw.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from jepactl.config import ConfigError, DataConfig
from jepactl.data.base import Sample, Source
from jepactl.masks.base import Masks, MaskStrategy, TokenGrid
from jepactl.utils import available_cpus, derive_seed

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
            frame_stride=cfg.frame_stride,
        )
    raise ConfigError(
        f"data.source '{cfg.source}' is not available yet: only 'synth' (the built-in "
        "procedural source) is implemented; try --set data.source=synth"
    )


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's ``(step, index)`` pairs for global steps ``start_step .. end_step - 1``.

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
            raise ConfigError(
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

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield [(step, i) for i in self.indices(step)]

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


class StepDataset(Dataset[tuple[int, Sample]]):
    """Wraps a source so each sample travels with the step it was drawn for."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Sample]:
        step, index = key
        return step, self.source[index]


@dataclass
class Batch:
    step: int
    clips: torch.Tensor  # uint8 [B, T, H, W, C]
    labels: torch.Tensor  # int64 [B]
    ids: list[str]
    masks: list[Masks]  # one per mask group

    def pin_memory(self) -> Batch:
        return Batch(
            self.step,
            self.clips.pin_memory(),
            self.labels.pin_memory(),
            self.ids,
            [m.pin_memory() for m in self.masks],
        )


class Collator:
    """Stacks a step's samples and samples every mask group for them (runs in the workers)."""

    def __init__(
        self,
        strategies: Sequence[MaskStrategy],
        patch_size: int,
        tubelet: int,
        seed: int,
        rank: int,
    ) -> None:
        self.strategies = list(strategies)
        self.patch_size = patch_size
        self.tubelet = tubelet
        self.seed = seed
        self.rank = rank

    def masks(self, step: int, clips: torch.Tensor) -> list[Masks]:
        """Masks of every group for uint8 clips ``[B, T, H, W, C]`` drawn at ``step``."""
        b, t, h, w, _ = clips.shape
        grid = TokenGrid.of_clip(t, h, w, self.patch_size, self.tubelet)
        out = []
        for group, strategy in enumerate(self.strategies):
            seed = derive_seed(self.seed, "mask", step, self.rank, group)
            out.append(strategy(b, grid, torch.Generator().manual_seed(seed), clips))
        return out

    def __call__(self, items: list[tuple[int, Sample]]) -> Batch:
        step = items[0][0]
        samples = [s for _, s in items]
        clips = torch.stack([s.clip for s in samples])
        labels = torch.tensor([s.label for s in samples], dtype=torch.int64)
        return Batch(step, clips, labels, [s.id for s in samples], self.masks(step, clips))


def _worker_init(_: int) -> None:
    # Pre-emption signals are for the training process, which checkpoints and then shuts the
    # workers down itself; a worker killed first would turn a clean stop into a crash.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def build_loader(
    source: Source,
    sampler: StepBatchSampler,
    collator: Collator,
    num_workers: int,
    pin_memory: bool,
    seed: int,
) -> DataLoader:
    """A DataLoader over ``sampler``'s steps. More workers than CPUs would only thrash, so
    ``num_workers`` is capped at the CPUs this process may use (with a note). The loader gets
    its own generator so creating it never draws from the global RNG (exact resume)."""
    cpus = available_cpus()
    if num_workers > cpus:
        print(f"jepactl: data.num_workers={num_workers} > {cpus} CPUs here; using {cpus}")
        num_workers = cpus
    return DataLoader(
        StepDataset(source),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collator,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None,
        generator=torch.Generator().manual_seed(derive_seed(seed, "loader", sampler.rank)),
    )


@lru_cache(maxsize=8)
def _normalization(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as ``[1, 3, 1, 1, 1]``, made once per device (no per-step copy)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1, 1).to(device)
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1, 1).to(device)
    return mean, std


def to_model_input(clips: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, T, H, W, C]`` -> ImageNet-normalised ``[B, C, T, H, W]`` on clips' device.

    Kept as uint8 through the workers and the host-to-device copy (4x fewer bytes); converted
    once, on the batch, where it is cheapest.
    """
    mean, std = _normalization(clips.device, dtype)
    x = clips.permute(0, 4, 1, 2, 3).to(dtype).div_(255.0)
    return x.sub_(mean).div_(std)
