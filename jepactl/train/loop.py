"""``jepactl pretrain``: the training loop (paper Algorithm 1, any objective a recipe lists).

One step: load a batch (uint8, already on its way to the device), sample each mask group,
run the student/predictor/teacher and the recipe's loss terms under autocast, step AdamW,
update the EMA teacher. Everything else (resume, pre-emption, logging) happens at step
boundaries, and nothing in the step reads a value back from the device.

Read :func:`_train` first: the driver, set-up then the loop over steps then shutdown, each a
named piece. Set-up is :mod:`jepactl.train.setup`, the checkpoint boundary
:mod:`jepactl.train.checkpointing`, why a run stops :mod:`jepactl.train.stopping`; one step
and the logging and checkpoint boundaries are :class:`_Loop`'s methods below.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from jepactl.config import ConfigError, Recipe, autocast_bf16
from jepactl.data.loader import Batch, DataQualityError
from jepactl.data.sources import Source, build_source
from jepactl.dist import DistInfo, agree, init_distributed, shutdown
from jepactl.errors import JepactlError
from jepactl.lock import RunLock
from jepactl.log import LOGGER, log_file, progress_bars
from jepactl.models.upstream import LoadedEncoder
from jepactl.models.vit import VideoViT
from jepactl.optim import ema_update, learning_rate, total_steps
from jepactl.recipe import load_recipe
from jepactl.rundir import RunDir
from jepactl.train.checkpointing import find_resume_point, save_checkpoint
from jepactl.train.compiled import RECOMPILE_LIMIT, CompiledStep, compile_decision, fixed_lengths
from jepactl.train.guard import NonFiniteGuard
from jepactl.train.init import check_init, init_overrides, read_init
from jepactl.train.metrics import MetricsLine, MetricsLog
from jepactl.train.model import JEPA
from jepactl.train.monitor import Monitor
from jepactl.train.setup import (
    Model,
    build_step_loader,
    prepare_run_dir,
    say_start,
    set_up_model,
    wrap_ddp,
)
from jepactl.train.sinks import Fanout, Opening
from jepactl.train.stopping import BadSamples, StopFlag, stop_flags
from jepactl.utils import file_sha256, warn


@dataclass
class RunResult:
    run_dir: Path
    step: int
    total_steps: int
    stopped_by_signal: bool
    last_metrics: MetricsLine | None = None

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


def default_run_dir(recipe_name: str) -> Path:
    return Path("runs") / Path(recipe_name).with_suffix("").as_posix().replace("/", "-")


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
    clips = batch.clips.to(device, non_blocking=True)  # uint8: the model normalises it
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
    """The driver: set up (model, run directory, data), the steps with their logging and
    checkpoint boundaries, then shutdown. Each piece is named; the order is the contract
    (exact resume and the kill -9 / SIGTERM tests depend on it)."""
    found = find_resume_point(run_dir, recipe, force, info)
    resume, resumed_from = found is not None, found.path if found is not None else None
    set_up = set_up_model(recipe, info, found, init, skip_nonfinite)
    del found  # the loaded state is in the model now; free its memory
    run, step = RunDir(run_dir), set_up.step
    prepare_run_dir(run, recipe, info, resume, step)
    say_start(run, set_up.model, recipe, info, resume, step)
    compiled = _compiled(recipe, set_up.model, info)
    ddp_model = wrap_ddp(set_up.model, info)
    total = total_steps(recipe.optim)
    end = min(total, max_steps) if max_steps is not None else total
    loader = build_step_loader(recipe, source, info, step, end)
    if info.is_main:
        LOGGER.debug(
            f"steps {step}..{end} of {total}; global batch {recipe.data.batch_size}, "
            f"{recipe.data.num_workers} data workers per rank; metric sinks: "
            f"{', '.join(recipe.tracking.sinks) or 'none'} besides {run.metrics}"
        )
    bad = BadSamples(run_dir, info.rank, recipe.data.max_bad_fraction)
    if resume:
        bad.resume(step)
    elif bad.path.exists():
        bad.path.unlink()
    sinks.opening.resume_step = step if resume else None
    log, bar = _metrics_log(run, recipe, info, sinks), _progress_bar(step, end, progress)
    monitor = Monitor(recipe, info.device) if recipe.monitor.every and info.is_main else None
    loop = _Loop(
        recipe, run_dir, info, set_up, ddp_model, bad, log, bar, monitor, step, end, compiled
    )
    loop.start(resume)
    stop = StopFlag()
    batches = iter(loader)
    try:
        with stop.installed():
            set_up.model.train()
            while loop.step < end:
                batch, waited = _next_batch(batches)
                lr = loop.one_step(batch, waited)
                loop.stopped, too_bad = stop_flags(stop.requested, bad, info)
                loop.boundary(lr, too_bad)
                if too_bad:
                    raise DataQualityError(bad.message())
                if loop.stopped:
                    break
    finally:
        loop.bar.close()
        _shut_down_workers(batches)
        del batches
    _finish(run, info, resumed_from, loop.step, total, loop.stopped)
    return RunResult(run_dir, loop.step, total, loop.stopped, loop.last)


def _compiled(recipe: Recipe, model: JEPA, info: DistInfo) -> CompiledStep | None:
    """The step compiled in place (``train.compile``), or None; the decision is logged."""
    on, why = compile_decision(recipe, info.device)
    if info.is_main:
        LOGGER.info(why if on else f"{why}: the step runs eagerly")
        if on and not all(fixed_lengths(spec) for spec in recipe.masks):
            LOGGER.warning(
                "train.compile with masks cut to the batch minimum: each new mask size "
                f"recompiles the step (at most {RECOMPILE_LIMIT}, then that size runs eagerly); "
                "set masks.N.lengths=fixed for one shape"
            )
    return CompiledStep(model) if on else None


def _metrics_log(run: RunDir, recipe: Recipe, info: DistInfo, sinks: Fanout) -> MetricsLog:
    """The metrics log: rank 0 writes ``metrics.jsonl`` and the sinks; the others only sum."""
    return MetricsLog(
        run.metrics if info.is_main else None,
        recipe.data.batch_size,
        info.device,
        sinks if info.is_main else None,
    )


def _progress_bar(step: int, end: int, progress: bool) -> Any:
    """The step progress bar (drawn where progress bars are on and this rank shows them)."""
    return tqdm(
        total=end,
        initial=step,
        disable=not (progress and progress_bars()),
        unit="step",
        dynamic_ncols=True,
    )


def _next_batch(batches: Iterator[Batch]) -> tuple[Batch, float]:
    """The next batch, and how long the loop waited for it (the data-wait figure)."""
    t_wait = time.perf_counter()
    batch = next(batches)
    return batch, time.perf_counter() - t_wait


@dataclass
class _Loop:
    """What the steps share: the model as set up (``set_up``; its ``saved`` names the last
    good state for a divergence message), where the run stands (``step`` of ``end``), and the
    boundary machinery: metrics log, monitor, progress bar, bad-sample count."""

    recipe: Recipe
    run_dir: Path
    info: DistInfo
    set_up: Model
    ddp_model: torch.nn.Module
    bad: BadSamples
    log: MetricsLog
    bar: Any  # tqdm
    monitor: Monitor | None
    step: int
    end: int
    compiled: CompiledStep | None = None
    stopped: bool = False
    last: MetricsLine | None = None

    @property
    def watched(self) -> VideoViT:
        """The encoder the monitor checks: the EMA teacher where there is one."""
        model = self.set_up.model
        return model.teacher if model.teacher is not None else model.student

    def start(self, resume: bool) -> None:
        """Before the first step of a new run: the monitor's step-0 controls (the untrained
        encoder and raw pixels, what every later check is read against); ``--max-steps 0``
        saves the initialisation, an untrained control encoder."""
        monitor = self.monitor
        if monitor is not None and not resume:
            controls = self.log.untimed(
                lambda: {**monitor.check(self.watched, warn), **monitor.pixel_controls()}
            )
            self.log.write_controls(0, controls)
        if self.step == self.end == 0:
            self._save(snapshot=False)

    def one_step(self, batch: Batch, waited: float) -> float:
        """One optimisation step on ``batch`` (its losses kept for the next log line, a
        skipped update warned of); returns the step's learning rate."""
        step, s = self.step, self.set_up
        if batch.step != step:
            raise RuntimeError(f"data loader is at step {batch.step}, training at {step}")
        lr = learning_rate(step, self.recipe.optim)
        if self.compiled is not None:
            self.compiled.before_step()
        losses, logs, skipped = train_step(
            self.ddp_model, s.model, s.optimizer, batch, step, lr, self.recipe, self.info.device,
            s.guard, self.info,
        )  # fmt: skip
        if self.compiled is not None and self.info.is_main:
            self.compiled.after_step(step + 1)
        self.bad.record(batch)
        self.step = step = step + 1
        if skipped:
            warn(f"step {step}: non-finite loss, update skipped ({s.guard.skipped} of "
                 f"--skip-nonfinite {s.guard.tolerate})")  # fmt: skip
        else:
            self.log.add(losses, logs, waited)
        self.bar.update(1)
        return lr

    def boundary(self, lr: float, too_bad: bool) -> None:
        """After a step: a logging step writes a metrics line (and the monitor's checks), a
        saving step (the end, a stop, too many bad samples, every checkpoint_every) writes the
        checkpoint; either first checks the guard, so nothing of a diverged interval is kept.
        The same decision on every rank: a logging step all-reduces (rank 0 alone watches)."""
        step, cfg, every = self.step, self.recipe.train, self.recipe.monitor.every
        watching = every > 0 and step % every == 0
        logging = step % cfg.log_every == 0 or step == self.end or watching
        saving = self.stopped or too_bad or step == self.end or step % cfg.checkpoint_every == 0
        if logging or saving:
            self.set_up.guard.check(self.info, self.set_up.saved)
        if logging:
            self._log(lr, watching)
        if saving:
            self._save(snapshot=bool(cfg.snapshot_every) and step % cfg.snapshot_every == 0)
            self.set_up.saved = f"checkpoints/latest.pt (step {step}) is the last good state"

    def _log(self, lr: float, watching: bool) -> None:
        """The logging boundary: one metrics line (the monitor's checks in it when due)."""
        step, monitor = self.step, self.monitor
        epoch = (step - 1) // self.recipe.optim.iters_per_epoch
        seen = {}
        if monitor is not None and watching:
            seen = self.log.untimed(lambda: monitor.check(self.watched, warn))
        self.last = self.log.flush(
            step=step, epoch=epoch, lr=lr, bad_samples=self.bad.total,
            nonfinite_skipped=self.set_up.guard.skipped, **seen,
        )  # fmt: skip
        self.bar.set_postfix(loss=f"{self.last.loss:.4f}", clips_s=f"{self.last.clips_per_s:.1f}")

    def _save(self, snapshot: bool) -> None:
        """The checkpoint boundary: ``latest.pt`` (and a snapshot) at this step."""
        s = self.set_up
        save_checkpoint(
            self.run_dir, s.model, s.optimizer, self.step, self.recipe, self.info, snapshot,
            s.guard,
        )  # fmt: skip


def _shut_down_workers(batches: Iterator[Batch]) -> None:
    """Shut the decoding workers down now, also on an error: they ignore SIGTERM (that is the
    trainer's to handle), so leaving them to the interpreter's exit would hang it."""
    shutdown_workers = getattr(batches, "_shutdown_workers", None)
    if shutdown_workers is not None:
        shutdown_workers()


def _finish(
    run: RunDir, info: DistInfo, resumed_from: Path | None, step: int, total: int, stopped: bool
) -> None:
    """Rank 0 says how the run ended (and records the checkpoint of an old run that resumed
    with nothing to do)."""
    if not info.is_main:
        return
    if resumed_from == run.latest and run.checkpoint_record() is None:
        # a run written before checkpoint records were kept, resumed with nothing to do
        run.write_checkpoint_record(step, total, file_sha256(run.latest))
    if stopped:
        LOGGER.info(f"stopped by signal at step {step}; rerun the same command to resume")
    elif step >= total:
        LOGGER.info(f"finished {total} steps; checkpoint in {run.checkpoints}")
    elif step == 0:
        LOGGER.info(f"saved the untrained initialisation (step 0) in {run.checkpoints}")
    else:
        LOGGER.info(f"paused at step {step}/{total}; rerun without --max-steps to go on")
