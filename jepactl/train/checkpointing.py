"""A run's state on disk, at the checkpoint boundary: where a run resumes, what a checkpoint
holds, and how it is written (rank 0, atomically, every rank's RNG state in it) and read back.

Cut from the loop (:mod:`jepactl.train.loop`) so that the loop reads as steps and boundaries;
the checkpoint's format itself is :mod:`jepactl.checkpoint`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from jepactl import checkpoint as ckpt
from jepactl.checkpoint import RunCheckpoint
from jepactl.config import (
    RUNTIME_KEYS,
    ConfigError,
    Recipe,
    canonical_data_names,
    config_diff,
    dump_yaml,
    to_dict,
)
from jepactl.dist import DistInfo, agree, broadcast
from jepactl.errors import JepactlError, NonFiniteLossError
from jepactl.optim import total_steps
from jepactl.rundir import RunDir
from jepactl.train.guard import NonFiniteGuard
from jepactl.train.model import JEPA
from jepactl.utils import file_sha256, read_jsonl, warn


def find_resume_point(
    run_dir: Path, recipe: Recipe, force: bool, info: DistInfo
) -> ckpt.Found | None:
    """The checkpoint to resume from (the newest readable one), or None for a new run.

    Rank 0 chooses (moving unreadable files aside, see :func:`~jepactl.checkpoint.
    find_resumable`) and every rank loads what it chose. A different recipe is refused unless
    ``force``: never silently restarts over an existing run (the reference code does, when its
    checkpoint fails to load). Only :data:`RUNTIME_KEYS` may change freely.
    """
    found: ckpt.Found | None = None
    error: JepactlError | None = None
    if info.is_main:
        try:
            found = ckpt.find_resumable(RunDir(run_dir).checkpoints, warn)
        except JepactlError as exc:
            error = exc
    agree(info, error)
    path = broadcast(info, found.path if found is not None else None)
    if path is None:
        return None
    if found is None:
        found = ckpt.Found(path, ckpt.RunCheckpoint.from_state(ckpt.load(path), path))
    # The checkpoint's own copy of the recipe is authoritative (config.yaml is for people).
    # (dataset aliases of older runs, e.g. imagenet100, read as today's names)
    saved = canonical_data_names(yaml.safe_load(found.checkpoint.config))
    diff = config_diff(saved, to_dict(recipe))
    diff = [key for key in diff if key not in RUNTIME_KEYS]
    if diff and not force:
        shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
        raise ConfigError(
            f"{run_dir} holds a run of a different recipe (differs in: {shown}); "
            "pass --force to continue it with the new settings, or choose another --run-dir"
        )
    return found


def keep_records(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite a JSON-lines file atomically with only the records ``keep`` accepts; returns
    how many remain (used on resume, so replayed steps are not recorded twice). A torn line
    (a kill or a full disk mid-write) is dropped with a warning."""
    if not path.exists():
        return 0
    records = [r for r in read_jsonl(path, warn) if keep(r)]
    ckpt.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return len(records)


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    state = ckpt.rng_state()
    if not info.distributed:
        return [state]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, state, group=info.control_group)
    return states


def save_checkpoint(
    run_dir: Path,
    model: JEPA,
    optimizer: torch.optim.Optimizer,
    step: int,
    recipe: Recipe,
    info: DistInfo,
    snapshot: bool,
    guard: NonFiniteGuard,
) -> None:
    """Rank 0 writes ``checkpoints/latest.pt`` atomically (every rank's RNG state included),
    and a snapshot as an independent copy of it. Weights that are not finite are never
    written; a write that fails (a full disk) fails on every rank, the old file intact."""
    rng = _gather_rng(info)
    error: JepactlError | None = None
    if info.is_main:
        try:
            _write_checkpoint(run_dir, model, optimizer, step, recipe, rng, snapshot, guard)
        except JepactlError as exc:
            error = exc
    agree(info, error)


def _write_checkpoint(
    run_dir: Path,
    model: JEPA,
    optimizer: torch.optim.Optimizer,
    step: int,
    recipe: Recipe,
    rng: list[dict[str, Any]],
    snapshot: bool,
    guard: NonFiniteGuard,
) -> None:
    params = list(model.parameters())
    if params and not bool(torch.stack([p.isfinite().all() for p in params]).all()):
        raise NonFiniteLossError(
            f"the weights at step {step} are not finite (the loss was finite: a gradient or "
            "update overflowed); not saved, the last checkpoint is the last good state: lower "
            "optim.lr or set optim.clip_grad, then rerun to resume"
        )
    record = RunCheckpoint(
        step=step,
        config=dump_yaml(recipe),
        student=model.student.state_dict(),
        teacher=model.teacher.state_dict() if model.teacher is not None else None,
        # Which encoders trained: feature extraction must never pick an untrained one.
        trained=["student"] + (["teacher"] if model.teacher is not None else []),
        predictor=model.predictor.state_dict(),
        terms=model.terms.state_dict(),
        optimizer=optimizer.state_dict(),
        rng=rng,
        next_step=step,
        nonfinite_skipped=guard.skipped,
    )
    run = RunDir(run_dir)
    ckpt.atomic_save(record.to_state(), run.latest)
    # the file's step and sha256 beside it, for readers without torch (jepactl study)
    run.write_checkpoint_record(step, total_steps(recipe.optim), file_sha256(run.latest))
    if snapshot:  # an independent file: a torn latest.pt must not take the snapshot with it
        ckpt.atomic_copy(run.latest, run.snapshot(step))


def restore(
    record: RunCheckpoint, model: JEPA, optimizer: torch.optim.Optimizer, info: DistInfo
) -> int:
    """Load a checkpoint into the model and optimizer; returns the step to go on at."""
    model.student.load_state_dict(record.student)
    if model.teacher is not None:
        model.teacher.load_state_dict(record.teacher or {})
    model.predictor.load_state_dict(record.predictor)
    model.terms.load_state_dict(record.terms)
    optimizer.load_state_dict(dict(record.optimizer))
    rng = record.rng
    ckpt.set_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])
    return record.step if record.next_step is None else record.next_step
