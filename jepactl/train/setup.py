"""Setting a run up, before its first step: the model (fresh, initialised from a checkpoint
file, or resumed), the run directory, the DDP wrapper and the step-indexed data loader.

Each piece is one function the driver (:func:`jepactl.train.loop._train`) calls in a fixed
order; the order matters (the seed set before the model is built gives every rank the same
weights; the per-rank seed is set only after them), so it is written out there, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from jepactl import checkpoint as ckpt
from jepactl.config import Recipe, autocast_bf16, dump_yaml
from jepactl.data.loader import Collator, StepBatchSampler, StepDataset, build_loader, sampling_for
from jepactl.data.sources import Source
from jepactl.dist import DistInfo, barrier
from jepactl.log import LOGGER
from jepactl.masks import build_mask_strategy
from jepactl.models.upstream import LoadedEncoder
from jepactl.optim import build_optimizer
from jepactl.rundir import RunDir
from jepactl.train.checkpointing import restore
from jepactl.train.guard import NonFiniteGuard
from jepactl.train.init import initialise
from jepactl.train.metrics import keep_up_to
from jepactl.train.model import JEPA
from jepactl.utils import derive_seed


@dataclass
class Model:
    """What training updates, as set up: the model and its optimiser at ``step`` (0, or
    where a resumed checkpoint left off), the non-finite guard, and ``saved``: what a
    divergence message names as the last good state."""

    model: JEPA
    optimizer: torch.optim.Optimizer
    guard: NonFiniteGuard
    step: int
    saved: str


def set_up_model(
    recipe: Recipe,
    info: DistInfo,
    found: ckpt.Found | None,
    init: LoadedEncoder | None,
    skip_nonfinite: int,
) -> Model:
    """Build the model with the same weights on every rank, initialise its encoders from
    ``init`` (a new run only) or restore ``found``, then seed each rank's own stream."""
    seed, device = recipe.train.seed, info.device
    torch.manual_seed(seed)  # same initial weights on every rank
    model = JEPA(recipe)
    if found is None and init is not None:  # a resume continues from its own weights
        initialise(model.student, model.teacher, init)
        if info.is_main:
            LOGGER.info(f"encoder initialised from {recipe.model.init_from} ({init.describe()})")
    model = model.to(device)
    optimizer = build_optimizer(model.trainable(), recipe.optim)
    step = restore(found.checkpoint, model, optimizer, info) if found is not None else 0
    guard = NonFiniteGuard(
        skip_nonfinite, device, found.checkpoint.nonfinite_skipped if found else 0
    )
    if found is None:
        torch.manual_seed(derive_seed(seed, "rank", info.rank))
        saved = "nothing was saved yet"
    else:
        saved = f"checkpoints/{found.path.name} (step {step}) is the last good state"
    return Model(model, optimizer, guard, step, saved)


def prepare_run_dir(run: RunDir, recipe: Recipe, info: DistInfo, resume: bool, step: int) -> None:
    """Rank 0 writes the recipe and keeps the metrics of the steps before ``step`` (a new
    run starts them afresh); every rank waits until the directory exists."""
    barrier(info)
    if info.is_main:
        run.write_config(dump_yaml(recipe))
        if resume:
            keep_up_to(run.metrics, step)
        else:
            run.metrics.unlink(missing_ok=True)
    barrier(info)  # the run directory exists before any rank writes into it


def say_start(
    run: RunDir, model: JEPA, recipe: Recipe, info: DistInfo, resume: bool, step: int
) -> None:
    """Rank 0 says what starts: new or resumed, the encoder's size, ranks and precision."""
    if not info.is_main:
        return
    n_params = sum(p.numel() for p in model.student.parameters())
    verb = f"resuming {run.root} at step {step}" if resume else f"starting {run.root}"
    LOGGER.info(
        f"{verb}; encoder {n_params / 1e6:.1f}M params, "
        f"{info.world_size} rank(s) on {info.device.type}, precision "
        f"{'bf16 autocast' if autocast_bf16(recipe.train.precision, info.device.type) else 'fp32'}"
    )


def wrap_ddp(model: JEPA, info: DistInfo) -> torch.nn.Module:
    """``model`` itself on one rank, else its DDP wrapper (the EMA teacher left out of it)."""
    if not info.distributed:
        return model
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, model.teacher_names()
    )
    device = info.device
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,  # buffers are constants (RoPE frequencies)
        # Every term runs every step (ramps multiply by 0), so the graph is static; this
        # also lets terms differentiate inside forward (Hamiltonian's autograd.grad).
        static_graph=True,
    )


def build_step_loader(
    recipe: Recipe, source: Source, info: DistInfo, step: int, end: int
) -> DataLoader:
    """The loader of this rank's batches for steps ``step..end``, each batch a function of
    (seed, step, rank) alone: a resumed run draws what an uninterrupted one would have."""
    seed, device = recipe.train.seed, info.device
    sampler = StepBatchSampler(
        sampling_for(source, seed), recipe.data.batch_size, info.rank, info.world_size, step, end
    )
    collator = Collator(
        [build_mask_strategy(spec) for spec in recipe.masks],
        recipe.model.patch_size,
        recipe.model.tubelet,
        seed,
        info.rank,
    )
    return build_loader(
        StepDataset(source, seed),
        sampler,
        collator,
        recipe.data.num_workers,
        device.type == "cuda",
        seed,
    )
