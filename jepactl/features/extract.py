"""``jepactl extract-features``: encode a benchmark once with a run's frozen encoder, to HDF5.

The reference protocol re-runs the frozen encoder on every probe batch of every epoch; here
each clip is encoded once, in batches, under ``torch.no_grad`` (and bf16 autocast on CUDA),
with clips decoded in DataLoader workers, and the tokens are cached on disk for any number
of probes.

Cache file ``RUN/features/<bench>/<split>.h5`` (float16 tokens; one clip per HDF5 chunk):

=================  =====================  ==================================================
dataset            shape / type           meaning
=================  =====================  ==================================================
``tokens``         float16 [N, V, L, D]   encoder tokens of clip n, view v (chunk (1,V,L,D))
``labels``         int64 [N]              class of clip n (-1 until the row is written)
``ids``            utf-8 string [N]       clip id, unique within the split (all rows, upfront)
``done``           bool [N]               whether row n is written
=================  =====================  ==================================================

Attributes: ``checkpoint`` (path), ``checkpoint_step``, ``checkpoint_sha256``, ``weights``
(``student`` or ``teacher``: the weights actually used), ``benchmark``, ``split``,
``protocol`` (JSON of the clip protocol, see :meth:`EvalSource.protocol`), ``pooling``,
``grid`` (JSON ``[T', H', W']`` of the unpooled token grid), ``encoder_output``,
``num_classes``, ``classes`` (JSON list of names), ``num_clips``, ``index_sha256``
(fingerprint of the split's ids), ``format_version``, and ``complete``.

``L`` depends on ``pooling``: ``none`` keeps all ``T'·H'·W'`` tokens (t, h, w raster order);
``time`` averages over ``T'`` (``L = H'·W'``); ``space2x2`` average-pools each time step's
``H'×W'`` plane to 2×2 (``L = 4·T'``, time-major, then row, then column); ``mean`` keeps one
token. Encoders trained with deep supervision output several blocks concatenated; the cache
keeps the last block's (LayerNorm'ed) output only, as the reference's evaluation did.

``complete`` is the commit flag: a cache is usable only when it is true. Extraction is
resumable: rows are written by index, and a rerun with the same checkpoint (by sha256) and
settings continues with the rows whose ``done`` is false, so a killed extraction ends with
every id exactly once. The file's structure (chunk index, ids) is fixed when it is created,
under a temporary name renamed into place, so a kill mid-batch only leaves raw bytes of rows
not yet marked done; a batch's tokens and labels are fsynced before its ``done`` flags are
written. A full disk cannot tear a cache: the free space is checked and the whole file
reserved (``fallocate``) before any clip is encoded, and rows are written without HDF5's
chunk cache, so a failed write raises where it happens (docs/reliability.md).
A cache built from another checkpoint or with other settings (or one that cannot be read) is
refused unless ``force=True``, which rebuilds it from scratch; ``force`` keeps (or resumes) a
cache that matches, so delete the file to recompute one that does.

Under ``torchrun`` (``WORLD_SIZE > 1``) rank ``r`` encodes clips ``i ≡ r (mod world)`` into
its own resumable shard ``<split>.rank<r>.h5``; when all shards are complete, rank 0 copies
them into ``<split>.h5`` (written as ``<split>.h5.merging`` and renamed, so the merged file
exists only complete) and deletes the shards. A copy rather than an HDF5 virtual dataset,
because probes then read one plain file with contiguous rows, and the shards can go.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from jepactl.config import Recipe, autocast_bf16, parse_recipe
from jepactl.data.loader import to_model_input
from jepactl.errors import (
    CheckpointError,
    ConfigError,
    DiskFullError,
    JepactlError,
    disk_full,
    format_bytes,
    free_bytes,
    space_errors,
)
from jepactl.evaluation.benchmarks import Benchmark, EvalSource, eval_loader, get_benchmark
from jepactl.grid import TokenGrid
from jepactl.lock import RunLock
from jepactl.models import build_encoder
from jepactl.models.vit import VideoViT
from jepactl.train import checkpoint as ckpt
from jepactl.train.dist import DistInfo, agree, barrier, init_distributed, shutdown
from jepactl.utils import reserve_space, suggestion

__all__ = [
    "POOLS",
    "WEIGHTS",
    "CacheError",
    "FrozenEncoder",
    "cache_path",
    "encode_clips",
    "extract_features",
    "file_sha256",
    "load_frozen_encoder",
    "merge_shards",
    "pool_tokens",
    "pooled_length",
    "projected_bytes",
    "read_cache_attrs",
    "select_weights",
    "shard_path",
]

FORMAT_VERSION = 1
POOLS: tuple[str, ...] = ("none", "time", "space2x2", "mean")
WEIGHTS: tuple[str, ...] = ("auto", "student", "teacher")
#: Above this many bytes in all (unpooled), the size message suggests ``--pool``.
LARGE_CACHE_BYTES = 10 * 1000**3
ENCODER_OUTPUT = "last block, final LayerNorm"
#: Beyond the tokens, a cache file holds per row a label, an id, a done flag and a chunk-index
#: entry, and a fixed header: budgeted generously when checking free space.
ROW_OVERHEAD_BYTES = 128
FILE_OVERHEAD_BYTES = 64 << 10

Pool = Literal["none", "time", "space2x2", "mean"]
BatchCallback = Callable[[str, int, int], None]

#: Attributes that must match for a cache to be reused or continued.
IDENTITY_KEYS: tuple[str, ...] = (
    "format_version",
    "checkpoint_sha256",
    "weights",
    "benchmark",
    "split",
    "protocol",
    "pooling",
    "grid",
    "encoder_output",
    "num_classes",
    "num_clips",
    "index_sha256",
    "shard_rank",
    "shard_world",
)


class CacheError(ConfigError):
    """A feature cache that cannot be used or continued as asked (the message says why)."""


# --------------------------------------------------------------------------------------
# Paths and small helpers
# --------------------------------------------------------------------------------------


def cache_path(run_dir: Path, bench: str, split: str) -> Path:
    """``RUN/features/<bench>/<split>.h5``."""
    return Path(run_dir) / "features" / bench / f"{split}.h5"


def shard_path(run_dir: Path, bench: str, split: str, rank: int) -> Path:
    """``RUN/features/<bench>/<split>.rank<r>.h5``: one rank's shard under torchrun."""
    return Path(run_dir) / "features" / bench / f"{split}.rank{rank}.h5"


def file_sha256(path: Path, chunk_bytes: int = 8 << 20) -> str:
    """sha256 of a file, read in ``chunk_bytes`` pieces (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def projected_bytes(clips: int, views: int, tokens: int, dim: int) -> int:
    """Bytes of a float16 token cache: clips x views x tokens x dim x 2."""
    return clips * views * tokens * dim * 2


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (numpy scalars and bytes unwrapped)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def read_cache_attrs(path: Path) -> dict[str, Any]:
    """The attributes of a feature cache as plain Python values."""
    with h5py.File(path, "r") as f:
        return {k: _plain(v) for k, v in f.attrs.items()}


# --------------------------------------------------------------------------------------
# The frozen encoder
# --------------------------------------------------------------------------------------


@dataclass
class FrozenEncoder:
    """An encoder rebuilt from a run's checkpoint, in eval mode with gradients off."""

    encoder: VideoViT
    weights: Literal["student", "teacher"]
    checkpoint: Path
    step: int
    sha256: str
    recipe: Recipe
    trained_encoders: list[str]


def _trained_encoders(state: Mapping[str, Any], recipe: Recipe) -> list[str]:
    """Which encoders trained: the checkpoint says so; older ones are judged by the recipe."""
    trained = state.get("trained_encoders")
    if trained:
        return [str(t) for t in trained]
    has_teacher = state.get("teacher") is not None and recipe.objective.teacher == "ema"
    return ["student", "teacher"] if has_teacher else ["student"]


def select_weights(requested: str, trained: Sequence[str], where: str = "the run") -> str:
    """``auto`` = the EMA teacher when it trained, else the student. Asking for the teacher of
    a run that trained none is an error: the reference scored its no-EMA runs on a teacher
    that was a never-trained copy of the initial student, and that must not happen silently."""
    if requested not in WEIGHTS:
        raise ConfigError(f"unknown weights '{requested}'{suggestion(requested, WEIGHTS)}")
    if requested == "auto":
        return "teacher" if "teacher" in trained else "student"
    if requested not in trained:
        raise ConfigError(
            f"{where} trained no EMA {requested} (objective.teacher=none): only "
            f"{', '.join(trained)} weights were trained, and evaluating an untrained encoder "
            "would score a random network; use --weights student (or auto)"
        )
    return requested


def load_frozen_encoder(
    run_dir: Path,
    weights: str = "auto",
    device: torch.device | str = "cpu",
    attempts: int = 3,
) -> FrozenEncoder:
    """Rebuild ``RUN/checkpoints/latest.pt``'s encoder (``weights_only`` load) with the chosen
    weights. The sha256 is of exactly the bytes loaded: a checkpoint replaced by a training
    run in the meantime (atomic rename: a new inode) is noticed and the load retried."""
    path = Path(run_dir) / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no checkpoint ({path}); train it with `jepactl pretrain`")
    for _ in range(attempts):
        before = os.stat(path)
        sha = file_sha256(path)
        try:
            state = ckpt.load(path, mmap=True)
        except PermissionError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"{path} cannot be loaded ({ckpt.why_unreadable(path, exc)}); `jepactl pretrain` "
                "on the run falls back to its newest readable snapshot"
            ) from None
        after = os.stat(path)
        same = (before.st_ino, before.st_size, before.st_mtime_ns) == (
            after.st_ino,
            after.st_size,
            after.st_mtime_ns,
        )
        if same:
            break
    else:
        raise ConfigError(f"{path} kept changing while it was read; try again")
    for key in ("config", "student", "step"):
        if key not in state:
            raise ConfigError(f"{path} is not a jepactl checkpoint (no '{key}')")
    recipe = parse_recipe(yaml.safe_load(state["config"]))
    trained = _trained_encoders(state, recipe)
    chosen = select_weights(weights, trained, where=str(run_dir))
    weights_state = state.get(chosen)
    if weights_state is None:
        raise ConfigError(f"{path} holds no {chosen} weights")
    encoder = build_encoder(recipe.model)
    encoder.load_state_dict(weights_state)
    encoder.requires_grad_(False).eval().to(device)
    return FrozenEncoder(
        encoder=encoder,
        weights=chosen,  # type: ignore[arg-type]
        checkpoint=path.resolve(),
        step=int(state["step"]),
        sha256=sha,
        recipe=recipe,
        trained_encoders=trained,
    )


# --------------------------------------------------------------------------------------
# Encoding and pooling
# --------------------------------------------------------------------------------------


def token_grid(encoder: VideoViT, frames: int, crop: int) -> TokenGrid:
    """The encoder's token grid for ``frames x crop x crop`` clips (a ConfigError if none)."""
    try:
        return TokenGrid.of_clip(frames, crop, crop, encoder.patch_size, encoder.tubelet)
    except ValueError as exc:
        raise ConfigError(
            f"clips of {frames} frames at {crop}px do not fit the encoder (patch "
            f"{encoder.patch_size}, tubelet {encoder.tubelet}): {exc}"
        ) from None


def pooled_length(grid: TokenGrid, pool: str) -> int:
    """Tokens per view after ``pool``."""
    return {
        "none": grid.num_tokens,
        "time": grid.h * grid.w,
        "space2x2": grid.t * 4,
        "mean": 1,
    }[pool]


def pool_tokens(tokens: torch.Tensor, grid: TokenGrid, pool: str) -> torch.Tensor:
    """``[B, T'·H'·W', D]`` (t, h, w raster order) -> ``[B, L, D]`` (see the module doc)."""
    b, n, d = tokens.shape
    if n != grid.num_tokens:
        raise ValueError(f"{n} tokens do not form the grid {grid}")
    if pool == "none":
        return tokens
    if pool == "mean":
        return tokens.mean(dim=1, keepdim=True)
    x = tokens.view(b, grid.t, grid.h, grid.w, d)
    if pool == "time":
        return x.mean(dim=1).reshape(b, grid.h * grid.w, d)
    if pool == "space2x2":
        planes = x.permute(0, 1, 4, 2, 3).reshape(b * grid.t, d, grid.h, grid.w)
        pooled = F.adaptive_avg_pool2d(planes, 2)  # [B·T', D, 2, 2]
        return pooled.reshape(b, grid.t, d, 4).transpose(2, 3).reshape(b, grid.t * 4, d)
    raise ConfigError(f"unknown pooling '{pool}'{suggestion(pool, POOLS)}")


def encode_clips(
    encoder: VideoViT,
    clips: torch.Tensor,
    pool: str = "none",
    device: torch.device | None = None,
    bf16: bool | None = None,
) -> torch.Tensor:
    """uint8 clips ``[B, V, T, H, W, C]`` -> pooled float32 tokens ``[B, V, L, D]`` on
    ``device``: ImageNet-normalised, encoded under ``no_grad`` (with bf16 autocast when ``bf16``,
    by default on CUDA only), the last block's output only (see the module doc), pooled in
    float32."""
    device = device or next(encoder.parameters()).device
    b, v = clips.shape[:2]
    flat = clips.reshape(b * v, *clips.shape[2:]).to(device, non_blocking=True)
    x = to_model_input(flat)
    grid = encoder.grid(x.shape)
    if bf16 is None:  # as training's precision "auto": bf16 autocast on CUDA only
        bf16 = autocast_bf16("auto", device.type)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        tokens = encoder(x)
    with torch.no_grad():
        tokens = tokens[..., -encoder.embed_dim :].float()
        pooled = pool_tokens(tokens, grid, pool)
    return pooled.reshape(b, v, *pooled.shape[1:])


# --------------------------------------------------------------------------------------
# Cache files
# --------------------------------------------------------------------------------------


def _create_cache(path: Path, attrs: Mapping[str, Any], shape: tuple[int, ...], ids: list[str]):
    """Create an empty cache (all rows not done) under a temporary name, then rename it.

    ``tokens`` is chunked one clip per chunk with every chunk allocated now and never
    filled: after creation, writing rows changes raw bytes only, never the file's structure.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.creating")
    n = shape[0]
    try:
        with space_errors(path, projected_bytes(*shape)), h5py.File(tmp, "w") as f:
            if n > 0:
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_chunk((1, *shape[1:]))
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
                space = h5py.h5s.create_simple(shape)
                h5py.h5d.create(f.id, b"tokens", h5py.h5t.IEEE_F16LE, space, dcpl=dcpl)
            else:
                f.create_dataset("tokens", shape=shape, dtype="float16")
            f.create_dataset("labels", data=np.full(n, -1, dtype=np.int64))
            f.create_dataset(
                "ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8")
            )
            f.create_dataset("done", data=np.zeros(n, dtype=bool))
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs["complete"] = n == 0
        _reserve(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reserve(path: Path, name: Path | None = None) -> None:
    """Allocate every byte of the cache file on disk now (``fallocate``), so writing rows can
    never run out of space half-way: a cache that does not fit fails here, before any clip is
    encoded. A no-op where the file system cannot reserve space (rows are then still only
    marked done once written and synced)."""
    fd = os.open(path, os.O_RDWR)
    try:
        reserve_space(fd, os.fstat(fd).st_size)
    except OSError as exc:
        raise disk_full(name or path, os.fstat(fd).st_size, exc) from None
    finally:
        os.close(fd)


def _check_existing(
    path: Path, identity: Mapping[str, Any], shape: tuple[int, ...]
) -> Literal["complete", "partial"]:
    """Whether an existing cache matches ``identity`` and ``shape``; a :class:`CacheError`
    naming the first difference if not."""
    hint = "pass --force (force=True) to rebuild it from scratch"
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            tokens = f.get("tokens")
            found = (tuple(tokens.shape), str(tokens.dtype)) if tokens is not None else None
            has_all = all(k in f for k in ("labels", "ids", "done"))
    except OSError as exc:
        raise CacheError(f"{path} cannot be read ({exc}); {hint}") from None
    if attrs.get("checkpoint_sha256") != identity["checkpoint_sha256"]:
        raise CacheError(
            f"{path} was built from another checkpoint (step {attrs.get('checkpoint_step')}, "
            f"sha256 {str(attrs.get('checkpoint_sha256'))[:12]}) than the run's current one "
            f"(step {identity['checkpoint_step']}, sha256 {identity['checkpoint_sha256'][:12]}); "
            f"{hint}"
        )
    for key in IDENTITY_KEYS:
        if attrs.get(key) != identity.get(key):
            raise CacheError(
                f"{path} was built with other settings ({key}: {attrs.get(key)!r}, now "
                f"{identity.get(key)!r}); {hint}, or choose the settings it was built with"
            )
    if found != (shape, "float16") or not has_all:
        raise CacheError(f"{path} has an unexpected layout (tokens {found}); {hint}")
    return "complete" if attrs.get("complete") else "partial"


def _status(
    path: Path, identity: Mapping[str, Any], shape: tuple[int, ...], force: bool
) -> Literal["missing", "stale", "complete", "partial"]:
    """What to do with ``path``: nothing there (``missing``), a cache that does not match but
    ``force`` allows rebuilding (``stale``), or a matching ``complete``/``partial`` one."""
    if not path.exists():
        return "missing"
    try:
        return _check_existing(path, identity, shape)
    except CacheError:
        if force:
            return "stale"
        raise


def _runs(local: Sequence[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive row numbers: ``(first row, end row, offset in batch)``."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for j in range(1, len(local) + 1):
        if j == len(local) or local[j] != local[j - 1] + 1:
            out.append((local[start], local[j - 1] + 1, start))
            start = j
    return out


def _fill(
    path: Path,
    source: EvalSource,
    rows: Sequence[int],
    frozen: FrozenEncoder,
    pool: str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    progress: bool,
    on_batch: BatchCallback | None,
) -> None:
    """Encode the rows of ``path`` not yet done (row k of the file is clip ``rows[k]`` of
    ``source``), batch by batch, then set ``complete``."""
    local_of = {row: k for k, row in enumerate(rows)}
    expected = [source.id(row) for row in rows]
    # No chunk cache (rdcc_nbytes=0), and the datasets held open: every write reaches the
    # file in the call that makes it, so a failure (a full disk) is raised there. With a
    # cache, h5py reports it only when the chunk is evicted, from a destructor that cannot
    # raise: the error is printed and lost while the rows are marked done.
    sync_fd = os.open(path, os.O_RDONLY)
    try:
        with space_errors(path), h5py.File(path, "r+", rdcc_nbytes=0) as f:
            tokens, labels_ds, done_ds = f["tokens"], f["labels"], f["done"]
            done = done_ds[:]
            pending = [rows[k] for k in np.flatnonzero(~done)]
            written = len(rows) - len(pending)
            bar = tqdm(
                total=len(rows),
                initial=written,
                disable=not progress,
                unit="clip",
                desc=f"{source.bench.name}/{source.split}",
                dynamic_ncols=True,
            )
            loader = eval_loader(source, pending, batch_size, num_workers, device.type == "cuda")
            for batch in loader:
                local = [local_of[row] for row in batch.rows]
                if [expected[k] for k in local] != batch.ids:
                    raise RuntimeError(f"{path}: clips arrived out of order ({batch.ids[:3]} ...)")
                feats = encode_clips(frozen.encoder, batch.clips, pool, device).cpu().numpy()
                if not np.isfinite(feats).all():
                    raise RuntimeError(
                        f"the encoder produced non-finite tokens for {batch.ids[:3]} ...; the "
                        "checkpoint may have diverged"
                    )
                half = feats.astype(np.float16)
                if not np.isfinite(half).all():
                    raise RuntimeError(f"tokens of {batch.ids[:3]} ... exceed float16's range")
                labels = batch.labels.numpy()
                # Tokens and labels reach the disk (fsync) before the rows are marked done.
                for a, b, j in _runs(local):
                    tokens[a:b] = half[j : j + b - a]
                    labels_ds[a:b] = labels[j : j + b - a]
                f.flush()
                os.fsync(sync_fd)
                for a, b, _ in _runs(local):
                    done_ds[a:b] = True
                f.flush()
                written += len(local)
                bar.update(len(local))
                if on_batch is not None:
                    on_batch(source.split, written, len(rows))
            bar.close()
            if not done_ds[:].all():
                raise RuntimeError(f"{path}: rows left undone after extraction")
            f.attrs["complete"] = True
            f.flush()
        os.fsync(sync_fd)
    finally:
        os.close(sync_fd)


def merge_shards(shards: Sequence[Path], out: Path, block_bytes: int = 256 << 20) -> None:
    """Join complete shards (shard ``r`` holds clips ``r, r + W, r + 2W, ...``) into ``out``.

    Rows are copied in blocks of about ``block_bytes``, into ``out.merging``, which is renamed
    to ``out`` once complete; the shards are left in place (the caller deletes them).
    """
    world = len(shards)
    metas = []
    for r, shard in enumerate(shards):
        attrs = read_cache_attrs(shard)
        if not attrs.get("complete"):
            raise CacheError(f"{shard} is not complete; rerun the extraction to finish it")
        if (attrs.get("shard_rank"), attrs.get("shard_world")) != (r, world):
            raise CacheError(
                f"{shard} is shard {attrs.get('shard_rank')} of {attrs.get('shard_world')}, "
                f"expected shard {r} of {world}"
            )
        metas.append(attrs)
    strip = {"shard_rank", "shard_world", "complete"}
    common = {k: v for k, v in metas[0].items() if k not in strip}
    for shard, attrs in zip(shards, metas, strict=True):
        for key in IDENTITY_KEYS:
            if key not in strip and attrs.get(key) != common.get(key):
                raise CacheError(f"{shard} differs from {shards[0]} in {key}")
    n = int(common["num_clips"])
    with h5py.File(shards[0], "r") as f0:
        shape = (n, *f0["tokens"].shape[1:])
    ids: list[str] = [""] * n
    for r, shard in enumerate(shards):
        with h5py.File(shard, "r") as f:
            shard_ids = f["ids"].asstr()[:].tolist()
        if len(shard_ids) != len(range(r, n, world)):
            raise CacheError(
                f"{shard} holds {len(shard_ids)} rows, expected {len(range(r, n, world))}"
            )
        ids[r::world] = shard_ids
    tmp = out.with_name(f"{out.name}.merging")
    tmp.unlink(missing_ok=True)
    _create_cache(tmp, {**common, "ranks": world}, shape, ids)
    row_bytes = max(1, int(np.prod(shape[1:])) * 2)
    block = max(1, block_bytes // row_bytes)
    try:
        with space_errors(out), h5py.File(tmp, "r+", rdcc_nbytes=0) as g:
            for r, shard in enumerate(shards):
                with h5py.File(shard, "r") as f:
                    m = f["tokens"].shape[0]
                    for a in range(0, m, block):
                        b = min(m, a + block)
                        g["tokens"][r + a * world : r + b * world : world] = f["tokens"][a:b]
                    if m:
                        g["labels"][r::world] = f["labels"][:]
            g["done"][:] = True
            g.attrs["complete"] = True
            g.flush()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def _say(info: DistInfo, message: str) -> None:
    """A progress/diagnostic line on stderr (stdout stays for results), from rank 0 only."""
    if info.is_main:
        print(f"jepactl: {message}", file=sys.stderr, flush=True)


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
) -> dict[str, Path]:
    """Encode ``splits`` of ``bench`` with ``run_dir``'s frozen encoder into feature caches.

    Args:
        run_dir: a run directory with ``checkpoints/latest.pt``.
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

    Returns:
        ``{split: RUN/features/<bench>/<split>.h5}``, each complete. Under ``torchrun``,
        ranks other than 0 return once their shards are complete; rank 0 returns after
        merging them.
    """
    b = get_benchmark(bench)
    for split in splits:
        b.reader_split(split)
    if pool not in POOLS:
        raise ConfigError(f"unknown pooling '{pool}'{suggestion(pool, POOLS)}")
    if weights not in WEIGHTS:
        raise ConfigError(f"unknown weights '{weights}'{suggestion(weights, WEIGHTS)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    run_dir = Path(run_dir)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device)
    try:
        return _extract(
            run_dir, b, list(splits), weights, pool, batch_size, num_workers, force, roots,
            limit, progress and info.is_main, info, on_batch,
        )  # fmt: skip
    finally:
        if owns_group:
            shutdown(info)


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
) -> dict[str, Path]:
    frozen = load_frozen_encoder(run_dir, weights, info.device)
    token_grid(frozen.encoder, bench.frames, bench.crop)  # clips that fit the encoder
    _say(
        info,
        f"{bench.name}: encoding with the {frozen.weights} weights of {frozen.checkpoint} "
        f"(step {frozen.step}, sha256 {frozen.sha256[:12]}; trained: "
        f"{', '.join(frozen.trained_encoders)})",
    )

    sources = {split: EvalSource(bench, split, roots, limit) for split in splits}
    lock, error = None, None
    if info.is_main:  # one extraction of a benchmark at a time (rank 0 holds it for all)
        try:
            lock = RunLock(cache_path(run_dir, bench.name, splits[0]).parent).acquire()
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


def _write_caches(
    run_dir: Path,
    bench: Benchmark,
    frozen: FrozenEncoder,
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
    world, rank = info.world_size, info.rank
    merged = {split: cache_path(run_dir, bench.name, split) for split in splits}
    todo: list[str] = []
    plans: dict[str, tuple[Path, list[int], dict[str, Any], str]] = {}
    error: JepactlError | None = None
    try:
        for split, source in sources.items():
            n = len(source)
            identity: dict[str, Any] = {
                "format_version": FORMAT_VERSION,
                "checkpoint": str(frozen.checkpoint),
                "checkpoint_step": frozen.step,
                "checkpoint_sha256": frozen.sha256,
                "weights": frozen.weights,
                "benchmark": bench.name,
                "split": split,
                "protocol": source.protocol_json(),
                "pooling": pool,
                "grid": json.dumps([grid.t, grid.h, grid.w]),
                "encoder_output": ENCODER_OUTPUT,
                "num_classes": bench.num_classes,
                "classes": json.dumps(source.classes),
                "num_clips": n,
                "index_sha256": source.fingerprint(),
            }
            shape = (n, bench.views, length, dim)
            status = _status(merged[split], identity, shape, force)
            if status == "complete":
                continue
            todo.append(split)
            if world == 1:
                plans[split] = (merged[split], list(range(n)), identity, status)
                continue
            if status == "partial" and not force:
                raise CacheError(
                    f"{merged[split]} is an unfinished single-process extraction; finish it "
                    "without torchrun, or pass --force to rebuild it with all ranks"
                )
            shard = shard_path(run_dir, bench.name, split, rank)
            rows = list(range(rank, n, world))
            shard_identity = {**identity, "shard_rank": rank, "shard_world": world}
            shard_status = _status(shard, shard_identity, (len(rows), *shape[1:]), force)
            plans[split] = (shard, rows, shard_identity, shard_status)
    except CacheError as exc:
        error = exc
    agree(info, error)

    for split in splits:
        if split not in todo:
            _say(info, f"{merged[split]} is complete and current; nothing to do")
    if not todo:
        return merged
    total = 0
    for split in todo:
        n = len(sources[split])
        size = projected_bytes(n, bench.views, length, dim)
        total += size
        _say(
            info,
            f"{bench.name}/{split}: {n:,} clips x {bench.views} view(s) x {length:,} tokens x "
            f"{dim} dims, float16 = {format_bytes(size)} -> {merged[split]}",
        )
    unpooled = projected_bytes(
        sum(len(sources[s]) for s in todo), bench.views, grid.num_tokens, dim
    )
    if pool == "none" and unpooled > LARGE_CACHE_BYTES:
        options = ", ".join(
            f"{p} ({pooled_length(grid, p)} tokens/view) "
            f"{format_bytes(unpooled * pooled_length(grid, p) / grid.num_tokens)}"
            for p in POOLS[1:]
        )
        _say(info, f"that is a large cache; --pool shrinks it: {options}")
    folder = merged[todo[0]].parent
    folder.mkdir(parents=True, exist_ok=True)
    new = sum(
        projected_bytes(len(plans[s][1]), bench.views, length, dim)
        + len(plans[s][1]) * ROW_OVERHEAD_BYTES
        + FILE_OVERHEAD_BYTES
        for s in todo
        if plans[s][3] in ("missing", "stale")
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

    for split in todo:
        path, rows, identity, status = plans[split]
        if world > 1 and info.is_main:  # not current: only the merge may write it again
            merged[split].unlink(missing_ok=True)
        if status in ("missing", "stale"):
            if status == "stale":
                _say(info, f"--force: rebuilding {path} from scratch")
            path.unlink(missing_ok=True)
            ids = [sources[split].id(row) for row in rows]
            _create_cache(path, identity, (len(rows), bench.views, length, dim), ids)
        elif status == "partial":
            _reserve(path)  # a new file was reserved when created; an older one may not be
            if info.is_main:
                _say(info, f"resuming {path}")
        _fill(
            path, sources[split], rows, frozen, pool, batch_size, num_workers, info.device,
            progress, on_batch,
        )  # fmt: skip

    if world > 1:
        barrier(info)  # every shard of every split is complete
        if info.is_main:
            for split in todo:
                shards = [shard_path(run_dir, bench.name, split, r) for r in range(world)]
                merge_shards(shards, merged[split])
                for stale in merged[split].parent.glob(f"{split}.rank*.h5"):
                    stale.unlink(missing_ok=True)
                _say(info, f"merged {world} shards into {merged[split]}")
    for split in todo:
        _say(info, f"wrote {merged[split]}")
    return merged
