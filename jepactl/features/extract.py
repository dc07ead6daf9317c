"""``jepactl extract-features``: encode a task once with a run's frozen encoder, to HDF5.

The reference protocol re-runs the frozen encoder on every probe batch of every epoch; here
each clip is encoded once, in batches, under ``torch.no_grad`` (and bf16 autocast on CUDA),
with clips decoded in DataLoader workers, and the tokens are cached on disk
(``RUN/features/<task>/<split>.h5``, format in :mod:`jepactl.features.cache`) for any number
of probes.

Extraction is resumable: rows are written by index, and a rerun with the same checkpoint (by
sha256) and settings continues with the rows whose ``done`` is false, so a killed extraction
ends with every id exactly once. A full disk cannot tear a cache: the free space is checked
and the whole file reserved before any clip is encoded, and rows are written without HDF5's
chunk cache, so a failed write raises where it happens (docs/reliability.md). A cache built
from another checkpoint or with other settings (or one that cannot be read) is refused unless
``force=True``, which rebuilds it from scratch; ``force`` keeps (or resumes) a cache that
matches, so delete the file to recompute one that does.

Under ``torchrun`` (``WORLD_SIZE > 1``) rank ``r`` encodes clips ``i ≡ r (mod world)`` into
its own resumable shard ``<split>.rank<r>.h5``; when all shards are complete, rank 0 copies
them into ``<split>.h5`` (written as ``<split>.h5.merging`` and renamed, so the merged file
exists only complete) and deletes the shards. A copy rather than an HDF5 virtual dataset,
because probes then read one plain file with contiguous rows, and the shards can go.

The raw-pixel baseline (``pixels=RECIPE``, and every later call on a directory whose
``config.yaml`` marks it as one; :mod:`jepactl.features.pixels`) plugs in where the frozen
encoder is loaded: a :class:`~jepactl.features.pixels.PixelBaseline` takes the
:class:`~jepactl.features.encoder.FrozenEncoder`'s place, and everything after (planning,
resuming, shards, merging) is the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from jepactl.dist import DistInfo, agree, barrier, init_distributed, shutdown
from jepactl.errors import ConfigError, DiskFullError, JepactlError, format_bytes, free_bytes
from jepactl.features.benchmarks import Benchmark
from jepactl.features.cache import (
    FILE_OVERHEAD_BYTES,
    ROW_OVERHEAD_BYTES,
    CacheAttrs,
    CacheError,
    CacheStatus,
    CacheWriter,
    cache_attrs,
    cache_status,
    create_cache,
    merge_shards,
    projected_bytes,
    reserve,
)
from jepactl.features.clips import EvalSource, eval_loader
from jepactl.features.encoder import (
    WEIGHTS,
    FrozenEncoder,
    encode_clips,
    load_frozen_encoder,
    token_grid,
)
from jepactl.features.pixels import (
    PixelBaseline,
    PixelEncoder,
    PixelSettings,
    prepare,
    recorded_settings,
)
from jepactl.features.registry import get_benchmark
from jepactl.grid import POOLS, TokenGrid, pooled_length
from jepactl.lock import RunLock
from jepactl.log import LOGGER, progress_bars
from jepactl.rundir import RunDir
from jepactl.utils import suggestion

__all__ = ["extract_features"]

#: Above this many bytes in all (unpooled), the size message suggests ``--pool``.
LARGE_CACHE_BYTES = 10 * 1000**3

BatchCallback = Callable[[str, int, int], None]

#: What a cache is filled from: a run's (or a checkpoint file's) frozen encoder, or raw pixels.
Encoding = FrozenEncoder | PixelBaseline


def _fill(
    path: Path,
    source: EvalSource,
    rows: Sequence[int],
    frozen: Encoding,
    pool: str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    progress: bool,
    on_batch: BatchCallback | None,
) -> None:
    """Encode the rows of ``path`` not yet done (row k of the file is clip ``rows[k]`` of
    ``source``), batch by batch, then mark the cache complete."""
    local_of = {row: k for k, row in enumerate(rows)}
    expected = [source.id(row) for row in rows]
    with CacheWriter(path) as writer:
        pending = [rows[k] for k in writer.pending()]
        written = len(rows) - len(pending)
        bar = tqdm(
            total=len(rows),
            initial=written,
            disable=not (progress and progress_bars()),
            unit="clip",
            desc=f"{source.bench.name}/{source.split}",
            dynamic_ncols=True,
        )
        for batch in eval_loader(source, pending, batch_size, num_workers, device.type == "cuda"):
            local = [local_of[row] for row in batch.rows]
            if [expected[k] for k in local] != batch.ids:
                raise RuntimeError(f"{path}: clips arrived out of order ({batch.ids[:3]} ...)")
            writer.write(local, _half_tokens(frozen, batch.clips, batch.ids, pool, device),
                         batch.labels.numpy())  # fmt: skip
            written += len(local)
            bar.update(len(local))
            if on_batch is not None:
                on_batch(source.split, written, len(rows))
        bar.close()
        writer.finish()


def _half_tokens(
    frozen: Encoding, clips: torch.Tensor, ids: Sequence[str], pool: str, device: torch.device
) -> np.ndarray:
    """The pooled tokens of a batch as float16, refusing non-finite values."""
    feats = encode_clips(frozen.encoder, clips, pool, device).cpu().numpy()
    if not np.isfinite(feats).all():
        raise RuntimeError(
            f"the encoder produced non-finite tokens for {ids[:3]} ...; the checkpoint may "
            "have diverged"
        )
    half = feats.astype(np.float16)
    if not np.isfinite(half).all():
        raise RuntimeError(f"tokens of {ids[:3]} ... exceed float16's range")
    return half


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def _say(info: DistInfo, message: str) -> None:
    """A progress/diagnostic line on stderr (stdout stays for results), from rank 0 only."""
    if info.is_main:
        LOGGER.info(message)


def extract_features(
    run_dir: Path,
    bench: str | Benchmark,
    splits: Sequence[str] = ("train", "val"),
    weights: str = "auto",
    pool: str = "none",
    batch_size: int = 8,
    num_workers: int = 2,
    force: bool = False,
    roots: Mapping[str, str | os.PathLike[str]] | None = None,
    limit: int | None = None,
    progress: bool = True,
    device: str = "auto",
    on_batch: BatchCallback | None = None,
    checkpoint: Path | None = None,
    pixels: str | None = None,
) -> dict[str, Path]:
    """Encode ``splits`` of ``bench`` with ``run_dir``'s frozen encoder into feature caches.

    Args:
        run_dir: a run directory with ``checkpoints/latest.pt``; with ``checkpoint``, the
            directory the caches go to (created if needed).
        bench: a registered benchmark name (or a :class:`Benchmark`).
        splits: which of the benchmark's splits to extract.
        weights: ``auto`` (the EMA teacher if the run trained one, else the student),
            ``student`` or ``teacher`` (an error for a run without a trained teacher).
        pool: ``none``, ``time``, ``space2x2`` or ``mean`` (see the module doc).
        batch_size: clips per forward pass (each clip's ``views`` go in the same pass).
        num_workers: DataLoader worker processes decoding clips.
        force: rebuild caches that do not match (another checkpoint or other settings) from
            scratch instead of refusing them; matching caches are kept or resumed.
        roots: dataset roots by reader name (else ``$JEPACTL_DATA/<name>``).
        limit: at most this many clips per split, spread evenly (tests and demos).
        progress: show a progress bar (rank 0).
        device: ``auto``, ``cpu`` or ``cuda``.
        on_batch: called as ``on_batch(split, rows_done, rows_total)`` after each batch is
            written and flushed (progress reporting; tests use it to simulate a kill).
        checkpoint: encode with this checkpoint file's encoder instead of the run's (any
            layout of :mod:`jepactl.models.upstream`: V-JEPA, V-JEPA 2, the paper's code).
        pixels: a recipe name or YAML path: cache raw pixels cut as its encoder sees them
            instead of an encoder's tokens (:mod:`jepactl.features.pixels`); ``run_dir`` is
            then a directory of its own, marked by the ``config.yaml`` the first call writes,
            and later calls on it (without ``pixels``) cut pixels again.

    Returns:
        ``{split: RUN/features/<bench>/<split>.h5}``, each complete. Under ``torchrun``,
        ranks other than 0 return once their shards are complete; rank 0 returns after
        merging them.
    """
    b = get_benchmark(bench)
    weights = _checked_weights(b, splits, weights, pool, batch_size, checkpoint, pixels)
    run_dir = Path(run_dir)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device)
    try:
        return _extract(
            run_dir, b, list(splits), weights, pool, batch_size, num_workers, force, roots,
            limit, progress and info.is_main, info, on_batch, checkpoint, pixels,
        )  # fmt: skip
    finally:
        if owns_group:
            shutdown(info)


def _checked_weights(
    bench: Benchmark,
    splits: Sequence[str],
    weights: str,
    pool: str,
    batch_size: int,
    checkpoint: Path | None,
    pixels: str | None,
) -> str:
    """Check :func:`extract_features`'s options (a :class:`ConfigError` for a bad one) and
    return the weights to use (``auto`` is ``reference`` under the reference profile)."""
    if bench.profile == "reference" and weights == "auto":
        weights = "reference"  # the EMA teacher, or the initialisation of a run without one
    for split in splits:
        bench.reader_split(split)
    if pool not in POOLS:
        raise ConfigError(f"unknown pooling '{pool}'{suggestion(pool, POOLS)}")
    if weights not in WEIGHTS:
        raise ConfigError(f"unknown weights '{weights}'{suggestion(weights, WEIGHTS)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if pixels is not None and checkpoint is not None:
        raise ConfigError(
            "--pixels and --checkpoint exclude each other: raw pixels need no checkpoint"
        )
    return weights


def _extract(
    run_dir: Path,
    bench: Benchmark,
    splits: list[str],
    weights: str,
    pool: str,
    batch_size: int,
    num_workers: int,
    force: bool,
    roots: Mapping[str, str | os.PathLike[str]] | None,
    limit: int | None,
    progress: bool,
    info: DistInfo,
    on_batch: BatchCallback | None,
    checkpoint: Path | None = None,
    pixels: str | None = None,
) -> dict[str, Path]:
    frozen: Encoding
    baseline = _pixel_baseline(run_dir, bench, weights, info, checkpoint, pixels)
    if baseline is not None:
        frozen = baseline
        token_grid(frozen.encoder, bench.frames, bench.crop)  # clips that fit the encoder
        _say(
            info,
            f"{bench.name}: raw pixels in {baseline.settings.describe()} "
            f"({baseline.encoder.embed_dim} values per token; {baseline.sha256}), no encoder",
        )
    else:
        frozen = load_frozen_encoder(run_dir, weights, info.device, checkpoint=checkpoint)
        token_grid(frozen.encoder, bench.frames, bench.crop)  # clips that fit the encoder
        origin = (
            f"step {frozen.step}, sha256 {frozen.sha256[:12]}; trained: "
            f"{', '.join(frozen.trained_encoders)}"
            if frozen.source == "jepactl"
            else f"{frozen.source}; sha256 {frozen.sha256[:12]}"
        )
        _say(
            info,
            f"{bench.name}: encoding with the {frozen.weights} weights of {frozen.checkpoint} "
            f"({origin})",
        )

    sources = {split: EvalSource(bench, split, roots, limit) for split in splits}
    lock, error = None, None
    if info.is_main:  # one extraction of a benchmark at a time (rank 0 holds it for all)
        try:
            lock = RunLock(RunDir(run_dir).features(bench.name)).acquire()
        except JepactlError as exc:
            error = exc
    agree(info, error)
    try:
        return _write_caches(
            run_dir, bench, frozen, sources, pool, batch_size, num_workers, force, progress,
            info, on_batch,
        )  # fmt: skip
    finally:
        if lock is not None:
            lock.release()


def _pixel_baseline(
    run_dir: Path,
    bench: Benchmark,
    weights: str,
    info: DistInfo,
    checkpoint: Path | None,
    pixels: str | None,
) -> PixelBaseline | None:
    """The pixel baseline to extract (``pixels``, or the one ``run_dir``'s config.yaml
    records), or ``None`` for an encoder. Every rank decides alike: only ``pixels`` given makes
    rank 0 write the config, and then every rank is in pixel mode whatever it reads."""
    if pixels is None:
        recorded = recorded_settings(run_dir)
        if recorded is None:
            return None
        if checkpoint is not None:  # (--pixels with --checkpoint is refused before)
            raise ConfigError(
                f"{run_dir} is a raw-pixel baseline (its config.yaml has 'pixels:'); caches "
                "from --checkpoint need a directory of their own"
            )
        settings = recorded
    else:
        settings = PixelSettings.from_recipe(pixels)
    if weights not in ("auto", "reference"):
        raise ConfigError(f"--weights {weights}: raw pixels have no encoder weights")
    if pixels is not None:
        # clips that fit the cut, before a new directory is marked
        token_grid(PixelEncoder(settings.patch_size, settings.tubelet), bench.frames, bench.crop)
        error: JepactlError | None = None
        try:
            prepare(run_dir, settings, pixels, write=info.is_main)
        except JepactlError as exc:
            error = exc
        agree(info, error)
    return PixelBaseline.of(run_dir, settings, info.device)


@dataclass
class _SplitPlan:
    """The file one split is written to here, its rows (clip indices), identity and status."""

    path: Path
    rows: list[int]
    identity: CacheAttrs
    status: CacheStatus


@dataclass
class _Plan:
    """What :func:`_write_caches` works from: the token layout, each split's merged cache,
    the splits still to write and, for each, the file this rank writes."""

    grid: TokenGrid
    length: int
    dim: int
    merged: dict[str, Path]
    todo: list[str] = field(default_factory=list)
    files: dict[str, _SplitPlan] = field(default_factory=dict)


def _write_caches(
    run_dir: Path,
    bench: Benchmark,
    frozen: Encoding,
    sources: Mapping[str, EvalSource],
    pool: str,
    batch_size: int,
    num_workers: int,
    force: bool,
    progress: bool,
    info: DistInfo,
    on_batch: BatchCallback | None,
) -> dict[str, Path]:
    """Plan, check space for, create and fill the caches of ``sources`` (lock held)."""
    splits = list(sources)
    grid = token_grid(frozen.encoder, bench.frames, bench.crop)
    length, dim = pooled_length(grid, pool), frozen.encoder.embed_dim
    run = RunDir(run_dir)
    plan = _Plan(grid, length, dim, {split: run.cache(bench.name, split) for split in splits})
    _plan_splits(plan, run, bench, frozen, sources, pool, force, info)
    for split in splits:
        if split not in plan.todo:
            _say(info, f"{plan.merged[split]} is complete and current; nothing to do")
    if not plan.todo:
        return plan.merged
    _announce_sizes(plan, bench, sources, pool, info)
    _check_space(plan, bench, info)
    for split in plan.todo:
        _open_file(plan, split, bench, sources[split], info)
        _fill(
            plan.files[split].path, sources[split], plan.files[split].rows, frozen, pool,
            batch_size, num_workers, info.device, progress, on_batch,
        )  # fmt: skip
    if info.world_size > 1:
        _merge(plan, run, bench, info)
    for split in plan.todo:
        _say(info, f"wrote {plan.merged[split]}")
    return plan.merged


def _plan_splits(
    plan: _Plan,
    run: RunDir,
    bench: Benchmark,
    frozen: Encoding,
    sources: Mapping[str, EvalSource],
    pool: str,
    force: bool,
    info: DistInfo,
) -> None:
    """Fill ``plan.todo`` and ``plan.files``: each split's cache status, and the file (the
    merged cache, or under torchrun this rank's shard) and rows this rank writes. Every rank
    raises the first rank's :class:`CacheError`."""
    world, rank = info.world_size, info.rank
    error: JepactlError | None = None
    try:
        for split, source in sources.items():
            n = len(source)
            identity = cache_attrs(
                checkpoint=str(frozen.checkpoint), checkpoint_step=frozen.step,
                checkpoint_sha256=frozen.sha256, weights=frozen.weights, benchmark=bench.name,
                split=split, protocol=source.protocol(), pooling=pool, grid=plan.grid,
                num_classes=bench.num_classes, classes=source.classes, num_clips=n,
                index_sha256=source.fingerprint(),
            )  # fmt: skip
            shape = (n, bench.views, plan.length, plan.dim)
            merged = plan.merged[split]
            status = cache_status(merged, identity, shape, force)
            if status == "complete":
                continue
            plan.todo.append(split)
            if world == 1:
                plan.files[split] = _SplitPlan(merged, list(range(n)), identity, status)
                continue
            if status == "partial" and not force:
                raise CacheError(
                    f"{merged} is an unfinished single-process extraction; finish it "
                    "without torchrun, or pass --force to rebuild it with all ranks"
                )
            shard = run.shard(bench.name, split, rank)
            rows = list(range(rank, n, world))
            shard_identity = identity.for_shard(rank, world)
            shard_status = cache_status(shard, shard_identity, (len(rows), *shape[1:]), force)
            plan.files[split] = _SplitPlan(shard, rows, shard_identity, shard_status)
    except CacheError as exc:
        error = exc
    agree(info, error)


def _announce_sizes(
    plan: _Plan,
    bench: Benchmark,
    sources: Mapping[str, EvalSource],
    pool: str,
    info: DistInfo,
) -> None:
    """Say how large each cache to write will be, and suggest ``--pool`` for a large one."""
    length, dim, grid = plan.length, plan.dim, plan.grid
    for split in plan.todo:
        n = len(sources[split])
        size = projected_bytes(n, bench.views, length, dim)
        _say(
            info,
            f"{bench.name}/{split}: {n:,} clips x {bench.views} view(s) x {length:,} tokens x "
            f"{dim} dims, float16 = {format_bytes(size)} -> {plan.merged[split]}",
        )
    unpooled = projected_bytes(
        sum(len(sources[s]) for s in plan.todo), bench.views, grid.num_tokens, dim
    )
    if pool == "none" and unpooled > LARGE_CACHE_BYTES:
        options = ", ".join(
            f"{p} ({pooled_length(grid, p)} tokens/view) "
            f"{format_bytes(unpooled * pooled_length(grid, p) / grid.num_tokens)}"
            for p in POOLS[1:]
        )
        _say(info, f"that is a large cache; --pool shrinks it: {options}")


def _check_space(plan: _Plan, bench: Benchmark, info: DistInfo) -> None:
    """Create the caches' folder and refuse (on every rank) to start when the new files this
    rank creates would not fit on its disk."""
    folder = plan.merged[plan.todo[0]].parent
    folder.mkdir(parents=True, exist_ok=True)
    new = sum(
        projected_bytes(len(plan.files[s].rows), bench.views, plan.length, plan.dim)
        + len(plan.files[s].rows) * ROW_OVERHEAD_BYTES
        + FILE_OVERHEAD_BYTES
        for s in plan.todo
        if plan.files[s].status in ("missing", "stale")
    )
    free = free_bytes(folder)
    agree(
        info,
        DiskFullError(
            f"the new cache files need {format_bytes(new)} but only {format_bytes(free)} is "
            f"free in {folder}; free some space, choose a smaller --pool, or put RUN/features "
            "on a larger disk (a symbolic link will do)"
        )
        if new > free
        else None,
    )


def _open_file(
    plan: _Plan, split: str, bench: Benchmark, source: EvalSource, info: DistInfo
) -> None:
    """Make ``split``'s file ready to fill: created (from scratch) when missing or stale,
    reserved when resumed; under torchrun rank 0 first drops the merged cache."""
    file = plan.files[split]
    path, rows, status = file.path, file.rows, file.status
    if info.world_size > 1 and info.is_main:  # not current: only the merge may write it again
        plan.merged[split].unlink(missing_ok=True)
    if status in ("missing", "stale"):
        if status == "stale":
            _say(info, f"--force: rebuilding {path} from scratch")
        path.unlink(missing_ok=True)
        ids = [source.id(row) for row in rows]
        create_cache(path, file.identity, (len(rows), bench.views, plan.length, plan.dim), ids)
    elif status == "partial":
        reserve(path)  # a new file was reserved when created; an older one may not be
        if info.is_main:
            _say(info, f"resuming {path}")


def _merge(plan: _Plan, run: RunDir, bench: Benchmark, info: DistInfo) -> None:
    """Under torchrun, once every rank's shards are complete: rank 0 copies each split's
    shards into its merged cache and deletes them."""
    world = info.world_size
    barrier(info)  # every shard of every split is complete
    if info.is_main:
        for split in plan.todo:
            shards = [run.shard(bench.name, split, r) for r in range(world)]
            merge_shards(shards, plan.merged[split])
            for stale in plan.merged[split].parent.glob(f"{split}.rank*.h5"):
                stale.unlink(missing_ok=True)
            _say(info, f"merged {world} shards into {plan.merged[split]}")
