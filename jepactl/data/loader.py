"""From a recipe's ``data`` section to batches (clips and masks) on the device.

Sampling is a pure function of (seed, step, rank): the batch sampler yields, for each global
step from ``start_step`` on, the ``(step, index)`` pairs this rank loads, and every random
choice about a sample (clip start, crop, flip, a replacement for a broken file) is seeded from
(seed, step, index). Resuming at step ``s``
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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import DataLoader, Dataset, Sampler

from jepactl.data.base import Sample
from jepactl.data.sources import MixtureSource, Source, SyntheticSource, replacement
from jepactl.errors import ConfigError, JepactlError
from jepactl.grid import Masks, TokenGrid
from jepactl.masks.base import MaskStrategy
from jepactl.utils import available_cpus, derive_seed, warn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Sampling(Protocol):
    """Draws the global batch of a step (every rank computes the same draw)."""

    def draw(self, step: int, size: int) -> list[int]: ...


@dataclass
class Sequential:
    """Step ``s`` takes ``[s * G, (s + 1) * G)`` modulo the length: every synthetic clip is new."""

    num_samples: int

    def draw(self, step: int, size: int) -> list[int]:
        return [(step * size + i) % self.num_samples for i in range(size)]


@dataclass
class Epochs:
    """Passes over the dataset without replacement: global sample ``g = step · G + j`` is item
    ``perm_e[g mod N]`` of epoch ``e = g // N``'s permutation, seeded by (seed, epoch). Every
    item is seen once per pass (a draw with replacement would see about 63 % of them), and the
    position is a pure function of the step, so resuming needs no sampler state."""

    num_samples: int
    seed: int

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(derive_seed(self.seed, "epoch", epoch)).permutation(
            self.num_samples
        )

    def draw(self, step: int, size: int) -> list[int]:
        first = step * size
        out: list[int] = []
        for epoch in range(first // self.num_samples, (first + size - 1) // self.num_samples + 1):
            perm = self._cached(epoch)
            lo = max(first, epoch * self.num_samples) - epoch * self.num_samples
            hi = min(first + size, (epoch + 1) * self.num_samples) - epoch * self.num_samples
            out += perm[lo:hi].tolist()
        return out

    def _cached(self, epoch: int) -> np.ndarray:
        if getattr(self, "_epoch", None) != epoch:
            self._epoch, self._perm = epoch, self.permutation(epoch)
        return self._perm


@dataclass
class Mixture:
    """A weighted mixture *with replacement*: each draw picks dataset ``d`` with probability
    ``w_d`` and then a uniform item of it, so the realised mix is the recipe's weights (the
    V-JEPA sampler drew without replacement, which gives the datasets' size ratio instead).

    Clips of different lengths cannot share a batch: datasets are grouped by clip length (a
    one-frame image clip vs a 16-frame video clip). Each step draws its whole batch from one
    group, chosen by a low-discrepancy (Weyl) sequence over steps, ``x_s = frac(u + s·φ)``
    with ``u`` from the seed and φ the golden-ratio conjugate, so the share of each group's
    batches tracks the group's total weight to within a few steps over any stretch of the run
    (independent coin flips per step would wander by several percent over hundreds of steps).
    Within the group, every sample picks its dataset with the within-group weights. The draw
    depends on (seed, step) only, so every rank gets the same kind of batch at the same step
    and DDP stays in step; each dataset's share of all samples is its weight.
    """

    offsets: list[int]  # start of each dataset in the global index; last = total length
    weights: list[float]
    frames: list[int]  # clip length of each dataset
    seed: int

    def group(self, step: int) -> list[int]:
        """The datasets (indices) step ``step`` draws from: one clip-length group."""
        frames = np.asarray(self.frames)
        kinds = sorted(set(self.frames))
        w = np.asarray(self.weights, dtype=np.float64)
        kind_w = np.asarray([w[frames == k].sum() for k in kinds])
        phase = np.random.default_rng(derive_seed(self.seed, "mixture-phase")).random()
        x = (phase + step * 0.6180339887498949) % 1.0
        kind = kinds[int(np.searchsorted(np.cumsum(kind_w / kind_w.sum()), x, side="right"))]
        return np.flatnonzero(frames == kind).tolist()

    def draw(self, step: int, size: int) -> list[int]:
        rng = np.random.default_rng(derive_seed(self.seed, "data", step))
        members = np.asarray(self.group(step))
        w = np.asarray(self.weights, dtype=np.float64)[members]
        parts = rng.choice(members, size=size, p=w / w.sum())
        sizes = np.diff(self.offsets)
        local = (rng.random(size) * sizes[parts]).astype(np.int64)
        return (np.asarray(self.offsets)[parts] + local).tolist()


def sampling_for(source: Source, seed: int) -> Sampling:
    """Sequential for the synthetic source, a weighted mixture (with replacement) for several
    datasets, else epochs without replacement."""
    if isinstance(source, SyntheticSource):
        return Sequential(len(source))
    if isinstance(source, MixtureSource):
        frames = [s.clip_frames(0) for s in source.sources]
        return Mixture(source.offsets, source.weights, frames, seed)
    return Epochs(len(source), seed)


class StepBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """This rank's ``(step, position, index)`` triples for global steps ``start_step ..
    end_step - 1``: its slice of the global batch that ``sampling`` draws for the step. The
    position in the global batch keys the sample's randomness, so an item drawn twice in one
    step gets two different crops."""

    def __init__(
        self,
        sampling: Sampling,
        global_batch: int,
        rank: int,
        world_size: int,
        start_step: int,
        end_step: int,
    ) -> None:
        if global_batch % world_size:
            raise ConfigError(
                f"data.batch_size {global_batch} is not divisible by the {world_size} ranks"
            )
        self.sampling = sampling
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.start_step = start_step
        self.end_step = end_step

    def indices(self, step: int) -> list[int]:
        lo = self.rank * self.local_batch
        return self.sampling.draw(step, self.global_batch)[lo : lo + self.local_batch]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        lo = self.rank * self.local_batch
        for step in range(self.start_step, self.end_step):
            yield [(step, lo + j, i) for j, i in enumerate(self.indices(step))]

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


#: Consecutive failed replacements after which a sample is given up on (the dataset is broken).
MAX_REPLACEMENTS = 20


class DataQualityError(JepactlError, RuntimeError):
    """Too many samples failed to decode: the dataset needs attention, not more training."""

    exit_code = 1


class StepDataset(Dataset[tuple[int, Sample, list[dict[str, str]]]]):
    """Loads ``(step, position, index)`` with the randomness derived from (seed, step,
    position).

    A sample that fails to open or decode (:class:`~jepactl.data.decode.DecodeError`, or an
    ``OSError`` from the file system or image library) is replaced by a deterministic random
    stand-in of the same kind, and the failure is reported with the batch (``Batch.bad``) so
    the training process can record it: one corrupt file never stops a run. Any other
    exception is a bug or a configuration error and propagates.
    """

    def __init__(self, source: Source, seed: int) -> None:
        self.source = source
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[int, Sample, list[dict[str, str]]]:
        from jepactl.data.decode import DecodeError

        step, position, index = key
        bad: list[dict[str, str]] = []
        rng = np.random.default_rng(derive_seed(self.seed, "replace", step, position))
        i = index
        for attempt in range(MAX_REPLACEMENTS):
            try:
                seed = derive_seed(self.seed, "sample", step, position, attempt)
                return step, self.source.load(i, seed), bad
            except (DecodeError, OSError) as exc:  # one broken file: record and replace it
                message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
                bad.append({"path": self.source.path(i), "error": message, "step": str(step)})
                i = replacement(self.source, i, rng)
        raise DataQualityError(
            f"{MAX_REPLACEMENTS} samples in a row failed to load (first: {bad[0]['path']}: "
            f"{bad[0]['error']}); check the dataset with `jepactl data check`"
        )


@dataclass
class Batch:
    step: int
    clips: torch.Tensor  # uint8 [B, T, H, W, C]
    labels: torch.Tensor  # int64 [B]
    ids: list[str]
    masks: list[Masks]  # one per mask group
    bad: list[dict[str, str]] = field(default_factory=list)  # samples replaced in this batch

    def pin_memory(self) -> Batch:
        return Batch(
            self.step,
            self.clips.pin_memory(),
            self.labels.pin_memory(),
            self.ids,
            [m.pin_memory() for m in self.masks],
            self.bad,
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

    def __call__(self, items: list[tuple[int, Sample, list[dict[str, str]]]]) -> Batch:
        """Stack one step's samples (from :class:`StepDataset`) and sample their masks."""
        step = items[0][0]
        samples = [s for _, s, _ in items]
        clips = torch.stack([s.clip for s in samples])
        labels = torch.tensor([s.label for s in samples], dtype=torch.int64)
        bad = [b for _, _, item_bad in items for b in item_bad]
        return Batch(step, clips, labels, [s.id for s in samples], self.masks(step, clips), bad)


def _worker_init(_: int) -> None:
    # Pre-emption signals are for the training process, which checkpoints and then shuts the
    # workers down itself; a worker killed first would turn a clean stop into a crash.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def build_loader(
    dataset: StepDataset,
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
        warn(f"data.num_workers={num_workers} > {cpus} CPUs here; using {cpus}")
        num_workers = cpus
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collator,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        timeout=600 if num_workers else 0,  # a hung read (e.g. a stalled network mount)
        prefetch_factor=4 if num_workers else None,
        generator=torch.Generator().manual_seed(derive_seed(seed, "loader", sampler.rank)),
    )


def _normalization_stats(
    device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as ``[1, 3, 1, 1, 1]``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1, 1).to(device)
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1, 1).to(device)
    return mean, std


#: Made once per device in eager code (no per-step copy); a compiled step makes them as
#: constants of its graph instead (Dynamo does not trace through a cache).
_normalization = lru_cache(maxsize=8)(_normalization_stats)


def to_model_input(clips: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, T, H, W, C]`` -> ImageNet-normalised ``[B, C, T, H, W]`` on clips' device.

    Kept as uint8 through the workers and the host-to-device copy (4x fewer bytes); converted
    once, on the batch, where it is cheapest.
    """
    stats = _normalization_stats if torch.compiler.is_compiling() else _normalization
    mean, std = stats(clips.device, dtype)
    x = rearrange(clips, "b t h w c -> b c t h w").to(dtype).div_(255.0)
    return x.sub_(mean).div_(std)
