"""``jepactl pretrain``: the training loop (paper Algorithm 1, any objective a recipe lists).

One step: load a batch (uint8, already on its way to the device), sample each mask group,
run the student/predictor/teacher and the recipe's loss terms under autocast, step AdamW,
update the EMA teacher. Everything else (resume, pre-emption, logging) happens at step
boundaries, and nothing in the step reads a value back from the device.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from jepactl import checkpoint as ckpt
from jepactl.checkpoint import CHECKPOINT_VERSION
from jepactl.config import (
    RUNTIME_KEYS,
    ConfigError,
    Recipe,
    autocast_bf16,
    canonical_data_names,
    config_diff,
    dump_yaml,
    to_dict,
)
from jepactl.data.loader import (
    Batch,
    Collator,
    DataQualityError,
    StepBatchSampler,
    StepDataset,
    build_loader,
    sampling_for,
    to_model_input,
)
from jepactl.data.sources import Source, build_source
from jepactl.dist import DistInfo, agree, barrier, broadcast, init_distributed, shutdown
from jepactl.errors import JepactlError, NonFiniteLossError
from jepactl.lock import RunLock
from jepactl.log import LOGGER, log_file, progress_bars
from jepactl.masks import build_mask_strategy
from jepactl.models.upstream import LoadedEncoder
from jepactl.optim import build_optimizer, ema_update, learning_rate, total_steps
from jepactl.recipe import load_recipe
from jepactl.rundir import RunDir
from jepactl.train.guard import NonFiniteGuard
from jepactl.train.init import check_init, init_overrides, initialise, read_init
from jepactl.train.metrics import MetricsLog
from jepactl.train.model import JEPA
from jepactl.train.monitor import Monitor
from jepactl.train.sinks import Fanout, Opening
from jepactl.utils import derive_seed, file_sha256, read_jsonl, warn


@dataclass
class RunResult:
    run_dir: Path
    step: int
    total_steps: int
    stopped_by_signal: bool
    last_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


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


def default_run_dir(recipe_name: str) -> Path:
    return Path("runs") / Path(recipe_name).with_suffix("").as_posix().replace("/", "-")


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
        found = ckpt.Found(path, ckpt.load(path))
    # The checkpoint's own copy of the recipe is authoritative (config.yaml is for people).
    # (dataset aliases of older runs, e.g. imagenet100, read as today's names)
    saved = canonical_data_names(yaml.safe_load(found.state["config"]))
    diff = config_diff(saved, to_dict(recipe))
    diff = [key for key in diff if key not in RUNTIME_KEYS]
    if diff and not force:
        shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
        raise ConfigError(
            f"{run_dir} holds a run of a different recipe (differs in: {shown}); "
            "pass --force to continue it with the new settings, or choose another --run-dir"
        )
    return found


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


def train_step(
    ddp_model: torch.nn.Module,
    model: JEPA,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    step: int,
    lr: float,
    recipe: Recipe,
    device: torch.device,
    guard: NonFiniteGuard,
    info: DistInfo,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool]:
    """One optimisation step: forward every term under autocast, backward, (clip,) AdamW, EMA.

    ``ddp_model`` is ``model`` or its DDP wrapper. Returns the weighted loss terms and the
    diagnostics, still on the device, and whether the update was skipped (a non-finite loss
    under ``--skip-nonfinite``; the guard is told of every step).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    clips = to_model_input(batch.clips.to(device, non_blocking=True))
    masks = [m.to(device, non_blocking=True) for m in batch.masks]
    bf16 = autocast_bf16(recipe.train.precision, device.type)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        losses, logs = ddp_model(clips, masks, step)
    loss = torch.stack(list(losses.values())).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    logs = {**logs, "grad_norm": grad_norm(model)}
    finite = guard.observe(losses, step + 1)
    if guard.skips and guard.skip(finite, step + 1, info):
        optimizer.zero_grad(set_to_none=True)
        return losses, logs, True
    if recipe.optim.clip_grad is not None:
        params = [p for m in model.trainable() for p in m.parameters()]
        torch.nn.utils.clip_grad_norm_(params, recipe.optim.clip_grad)
    optimizer.step()
    if model.teacher is not None:
        ema_update(model.teacher, model.student, recipe.optim.ema)
    return losses, logs, False


def grad_norm(model: JEPA) -> torch.Tensor:
    """The global L2 norm of every trainable gradient (after DDP's all-reduce), on the device:
    one fused ``foreach`` norm, no host sync."""
    grads = [p.grad for m in model.trainable() for p in m.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(model.parameters()).device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


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
    state = {
        "version": CHECKPOINT_VERSION,
        "step": step,
        "student": model.student.state_dict(),
        "teacher": model.teacher.state_dict() if model.teacher is not None else None,
        # Which encoders trained: feature extraction must never pick an untrained one.
        "trained_encoders": ["student"] + (["teacher"] if model.teacher is not None else []),
        "predictor": model.predictor.state_dict(),
        "terms": model.terms.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng,
        "data": {"next_step": step},
        "nonfinite_skipped": guard.skipped,
        "config": dump_yaml(recipe),
    }
    run = RunDir(run_dir)
    ckpt.atomic_save(state, run.latest)
    # the file's step and sha256 beside it, for readers without torch (jepactl study)
    run.write_checkpoint_record(step, total_steps(recipe.optim), file_sha256(run.latest))
    if snapshot:  # an independent file: a torn latest.pt must not take the snapshot with it
        ckpt.atomic_copy(run.latest, run.snapshot(step))


def restore(
    state: dict[str, Any], model: JEPA, optimizer: torch.optim.Optimizer, info: DistInfo
) -> int:
    """Load a checkpoint's state into the model and optimizer; returns the step to go on at."""
    model.student.load_state_dict(state["student"])
    if model.teacher is not None:
        model.teacher.load_state_dict(state["teacher"])
    model.predictor.load_state_dict(state["predictor"])
    model.terms.load_state_dict(state["terms"])
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    ckpt.set_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])
    return int(state["data"]["next_step"])


def pretrain(
    recipe_name: str,
    overrides: Sequence[str] = (),
    run_dir: Path | None = None,
    max_steps: int | None = None,
    force: bool = False,
    progress: bool = True,
    skip_nonfinite: int = 0,
    init_from: Path | None = None,
) -> RunResult:
    """Train (or resume) the run in ``run_dir``. Stops at the recipe's end, at ``max_steps``,
    or at the first step boundary after SIGTERM/SIGINT, always with a checkpoint written.

    ``skip_nonfinite``: skip the update of up to this many steps whose loss is not finite
    (over the run's whole life); by default the first one stops the run.
    ``init_from``: a checkpoint file whose encoder initialises the student and teacher
    before step 0 (:mod:`jepactl.train.init`); sets ``model.init_from`` and what the weights
    need (``model.positions``, ...) before the recipe's own ``--set`` overrides.
    """
    if max_steps is not None and max_steps < 0:
        raise ConfigError(f"--max-steps must be >= 0, got {max_steps}")
    if skip_nonfinite < 0:
        raise ConfigError(f"--skip-nonfinite must be >= 0, got {skip_nonfinite}")
    init = read_init(init_from) if init_from is not None else None
    if init is not None and init_from is not None:
        overrides = [*init_overrides(init, init_from), *overrides]
    recipe = load_recipe(recipe_name, overrides)
    if recipe.model.init_from:
        init = init or read_init(Path(recipe.model.init_from))
        check_init(recipe.model, init)  # before the run directory is touched
    run_dir = run_dir or default_run_dir(recipe_name)
    info = init_distributed(recipe.train.device)
    try:
        # Everything that can fail on bad input fails here, before the run directory is touched.
        sinks = Fanout(recipe.tracking.sinks, Opening(RunDir(run_dir), recipe))
        source = build_source(recipe.data, recipe.train.seed)
        if recipe.data.batch_size % info.world_size:
            raise ConfigError(
                f"data.batch_size {recipe.data.batch_size} is not divisible by "
                f"{info.world_size} ranks"
            )
        # the lock is held until this run ends, however it ends; the sinks close then too
        with _run_lock(run_dir, info), _run_log(run_dir, info), sinks:
            return _train(
                recipe, source, run_dir, max_steps, force, progress and info.is_main, info,
                skip_nonfinite, sinks, init,
            )  # fmt: skip
    finally:
        shutdown(info)


@contextlib.contextmanager
def _run_lock(run_dir: Path, info: DistInfo) -> Iterator[None]:
    """Rank 0 holds the run directory's lock; every rank fails if it cannot be had."""
    lock, error = None, None
    if info.is_main:
        try:
            lock = RunLock(run_dir, ", or choose another --run-dir").acquire()
        except JepactlError as exc:
            error = exc
    agree(info, error)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _run_log(run_dir: Path, info: DistInfo) -> contextlib.AbstractContextManager[None]:
    """Rank 0 copies every message to ``RUN/log.txt`` while the run is held."""
    return log_file(RunDir(run_dir).log) if info.is_main else contextlib.nullcontext()


def _train(
    recipe: Recipe,
    source: Source,
    run_dir: Path,
    max_steps: int | None,
    force: bool,
    progress: bool,
    info: DistInfo,
    skip_nonfinite: int,
    sinks: Fanout,
    init: LoadedEncoder | None = None,
) -> RunResult:
    found = find_resume_point(run_dir, recipe, force, info)
    resume = found is not None
    resumed_from = found.path if found is not None else None
    seed, device = recipe.train.seed, info.device
    torch.manual_seed(seed)  # same initial weights on every rank
    model = JEPA(recipe)
    if found is None and init is not None:  # a resume continues from its own weights
        initialise(model.student, model.teacher, init)
        if info.is_main:
            LOGGER.info(f"encoder initialised from {recipe.model.init_from} ({init.describe()})")
    model = model.to(device)
    optimizer = build_optimizer(model.trainable(), recipe.optim)
    step = restore(found.state, model, optimizer, info) if found is not None else 0
    guard = NonFiniteGuard(
        skip_nonfinite, device, int(found.state.get("nonfinite_skipped", 0)) if found else 0
    )
    if found is None:
        torch.manual_seed(derive_seed(seed, "rank", info.rank))
        saved = "nothing was saved yet"
    else:
        saved = f"checkpoints/{found.path.name} (step {step}) is the last good state"
    del found  # the loaded state is in the model now; free its memory

    barrier(info)
    run = RunDir(run_dir)
    metrics_path = run.metrics
    if info.is_main:
        run.write_config(dump_yaml(recipe))
        if resume:
            keep_records(metrics_path, lambda r: r.get("step", step + 1) <= step)
        else:
            metrics_path.unlink(missing_ok=True)
    barrier(info)  # the run directory exists before any rank writes into it

    n_params = sum(p.numel() for p in model.student.parameters())
    if info.is_main:
        verb = f"resuming {run_dir} at step {step}" if resume else f"starting {run_dir}"
        LOGGER.info(
            f"{verb}; encoder {n_params / 1e6:.1f}M params, "
            f"{info.world_size} rank(s) on {device.type}, precision "
            f"{'bf16 autocast' if autocast_bf16(recipe.train.precision, device.type) else 'fp32'}"
        )

    ddp_model: torch.nn.Module = model
    if info.distributed:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, model.teacher_names()
        )
        ddp_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,  # buffers are constants (RoPE frequencies)
            # Every term runs every step (ramps multiply by 0), so the graph is static; this
            # also lets terms differentiate inside forward (Hamiltonian's autograd.grad).
            static_graph=True,
        )

    total = total_steps(recipe.optim)
    end = min(total, max_steps) if max_steps is not None else total
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
    loader = build_loader(
        StepDataset(source, seed),
        sampler,
        collator,
        recipe.data.num_workers,
        device.type == "cuda",
        seed,
    )
    if info.is_main:
        LOGGER.debug(
            f"steps {step}..{end} of {total}; global batch {recipe.data.batch_size}, "
            f"{recipe.data.num_workers} data workers per rank; metric sinks: "
            f"{', '.join(recipe.tracking.sinks) or 'none'} besides {metrics_path}"
        )
    bad = BadSamples(run_dir, info.rank, recipe.data.max_bad_fraction)
    if resume:
        bad.resume(step)
    elif bad.path.exists():
        bad.path.unlink()
    sinks.opening.resume_step = step if resume else None
    log = MetricsLog(
        metrics_path if info.is_main else None,
        recipe.data.batch_size,
        device,
        sinks if info.is_main else None,
    )
    cfg = recipe.train
    bar = tqdm(
        total=end,
        initial=step,
        disable=not (progress and progress_bars()),
        unit="step",
        dynamic_ncols=True,
    )
    stop = StopFlag()
    last: dict[str, Any] = {}
    stopped = False

    monitor = Monitor(recipe, device) if recipe.monitor.every and info.is_main else None
    watched = model.teacher if model.teacher is not None else model.student
    if monitor is not None and not resume:
        # The untrained encoder and raw pixels, the controls every later check is read against.
        controls = log.untimed(lambda: {**monitor.check(watched, warn), **monitor.pixel_controls()})
        log.write({"step": 0, **controls})
    if step == end == 0:
        # --max-steps 0 on a new run: save the initialisation, an untrained control encoder.
        save_checkpoint(run_dir, model, optimizer, 0, recipe, info, False, guard)
    batches = iter(loader)
    try:
        with stop.installed():
            model.train()
            while step < end:
                t_wait = time.perf_counter()
                batch = next(batches)
                waited = time.perf_counter() - t_wait

                if batch.step != step:
                    raise RuntimeError(f"data loader is at step {batch.step}, training at {step}")
                lr = learning_rate(step, recipe.optim)
                losses, logs, skipped = train_step(
                    ddp_model, model, optimizer, batch, step, lr, recipe, device, guard, info
                )
                bad.record(batch)
                step += 1
                if skipped:
                    warn(f"step {step}: non-finite loss, update skipped ({guard.skipped} of "
                         f"--skip-nonfinite {guard.tolerate})")  # fmt: skip
                else:
                    log.add(losses, logs, waited)
                bar.update(1)
                stopped, too_bad = stop_flags(stop.requested, bad, info)

                # the same on every rank: a logging step all-reduces (rank 0 alone watches)
                watching = recipe.monitor.every > 0 and step % recipe.monitor.every == 0
                logging = step % cfg.log_every == 0 or step == end or watching
                saving = stopped or too_bad or step == end or step % cfg.checkpoint_every == 0
                if logging or saving:
                    guard.check(info, saved)  # before anything of a diverged interval is kept
                if logging:
                    epoch = (step - 1) // recipe.optim.iters_per_epoch
                    seen = {}
                    if monitor is not None and watching:
                        seen = log.untimed(lambda: monitor.check(watched, warn))
                    last = log.flush(
                        step=step, epoch=epoch, lr=lr, bad_samples=bad.total,
                        nonfinite_skipped=guard.skipped, **seen,
                    )  # fmt: skip
                    bar.set_postfix(
                        loss=f"{last['loss']:.4f}", clips_s=f"{last['clips_per_s']:.1f}"
                    )
                if saving:
                    snapshot = bool(cfg.snapshot_every) and step % cfg.snapshot_every == 0
                    save_checkpoint(run_dir, model, optimizer, step, recipe, info, snapshot, guard)
                    saved = f"checkpoints/latest.pt (step {step}) is the last good state"
                if too_bad:
                    raise DataQualityError(bad.message())
                if stopped:
                    break
    finally:
        bar.close()
        # Shut the decoding workers down now, also on an error: they ignore SIGTERM (that is
        # the trainer's to handle), so leaving them to the interpreter's exit would hang it.
        shutdown_workers = getattr(batches, "_shutdown_workers", None)
        if shutdown_workers is not None:
            shutdown_workers()
        del batches
    if info.is_main and resumed_from == run.latest and run.checkpoint_record() is None:
        # a run written before checkpoint records were kept, resumed with nothing to do
        run.write_checkpoint_record(step, total, file_sha256(run.latest))
    if info.is_main:
        if stopped:
            LOGGER.info(f"stopped by signal at step {step}; rerun the same command to resume")
        elif step >= total:
            LOGGER.info(f"finished {total} steps; checkpoint in {run.checkpoints}")
        elif step == 0:
            LOGGER.info(f"saved the untrained initialisation (step 0) in {run.checkpoints}")
        else:
            LOGGER.info(f"paused at step {step}/{total}; rerun without --max-steps to go on")
    return RunResult(run_dir, step, total, stopped, last)
