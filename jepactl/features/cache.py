"""The feature cache: the one module that writes and reads its HDF5 files.

One file per split, ``RUN/features/<task>/<split>.h5`` (float16 tokens; one clip per chunk):

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
``protocol`` (JSON of the clip protocol, see :meth:`EvalSource.protocol_json`), ``pooling``,
``grid`` (JSON ``[T', H', W']`` of the unpooled token grid), ``encoder_output``,
``num_classes``, ``classes`` (JSON list of names), ``num_clips``, ``index_sha256``
(fingerprint of the split's ids), ``format_version`` (:data:`FORMAT_VERSION`), and
``complete``; a shard of a torchrun extraction also ``shard_rank`` and ``shard_world``, a cache
merged from shards ``ranks``. Readers outside this module get them as one typed
:class:`~jepactl.features.cache_schema.CacheAttrs` (:func:`read_cache_record`); a cache of a
newer format is refused in one line (:class:`~jepactl.features.cache_schema.NewerCacheError`)
by every reader, and by :func:`cache_status` unless ``force`` rebuilds over it.

``L`` depends on ``pooling``: ``none`` keeps all ``T'·H'·W'`` tokens (t, h, w raster order);
``time`` averages over ``T'`` (``L = H'·W'``); ``space2x2`` average-pools each time step's
``H'×W'`` plane to 2×2 (``L = 4·T'``, time-major, then row, then column); ``mean`` keeps one
token (:func:`jepactl.grid.pool_tokens`). Encoders trained with deep supervision output
several blocks concatenated; the cache keeps the last block's (LayerNorm'ed) output only, as
the reference's evaluation did.

``complete`` is the commit flag: a cache is usable only when it is true (:func:`read_header`
refuses any other). The file's structure (chunk index, ids) is fixed when it is created
(:func:`create_cache`), under a temporary name renamed into place, and every byte is reserved
(``fallocate``), so writing rows (:class:`CacheWriter`) changes raw bytes only; a batch's
tokens and labels are fsynced before its ``done`` flags are written, so a kill mid-batch
leaves only rows not yet marked done, and a resumed extraction writes exactly those.

Writers: :func:`create_cache`, :class:`CacheWriter`, :func:`merge_shards`. Readers:
:func:`read_cache_record` (the typed attributes; :func:`read_cache_attrs` gives them as a
dict), :func:`cache_status` (may an existing file be reused or continued?), :func:`read_header`
and :class:`TokenCache` (the probe's view of a complete cache).

What a cache holds without opening one (constants, attributes, identity keys,
:class:`CacheHeader`, :class:`CacheError`) is in :mod:`jepactl.features.cache_schema`, and the
batching of a split's tokens (:class:`~jepactl.features.token_batches.TokenBatches`, the base of
:class:`TokenCache`) in :mod:`jepactl.features.token_batches`: neither touches HDF5. This module
re-exports their names.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import h5py
import numpy as np

from jepactl.errors import disk_full, space_errors
from jepactl.features.cache_schema import (
    CACHE_FORMAT,
    ENCODER_OUTPUT,
    FILE_OVERHEAD_BYTES,
    FORMAT_VERSION,
    IDENTITY_KEYS,
    ROW_OVERHEAD_BYTES,
    CacheAttrs,
    CacheError,
    CacheHeader,
    CacheStatus,
    NewerCacheError,
    Pool,
    cache_attrs,
    check_same_source,
    projected_bytes,
    upgrade_attrs,
)
from jepactl.features.token_batches import SKLEARN_FEATURES, TokenBatches, default_memory_gb
from jepactl.utils import reserve_space

if TYPE_CHECKING:  # torch is imported where tensors are made: reading attributes needs none
    import torch

__all__ = [
    "CACHE_FORMAT",
    "ENCODER_OUTPUT",
    "FILE_OVERHEAD_BYTES",
    "FORMAT_VERSION",
    "IDENTITY_KEYS",
    "ROW_OVERHEAD_BYTES",
    "SKLEARN_FEATURES",
    "CacheAttrs",
    "CacheError",
    "CacheHeader",
    "CacheStatus",
    "CacheWriter",
    "NewerCacheError",
    "Pool",
    "TokenCache",
    "cache_attrs",
    "cache_status",
    "check_same_source",
    "create_cache",
    "default_memory_gb",
    "merge_shards",
    "projected_bytes",
    "read_cache_attrs",
    "read_cache_record",
    "read_header",
    "reserve",
]


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (numpy scalars, 0-d arrays and bytes
    unwrapped)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _plain_attrs(f: h5py.File) -> dict[str, Any]:
    """The attributes of the open cache ``f`` as plain Python values, as stored."""
    return {k: _plain(v) for k, v in f.attrs.items()}


def read_cache_attrs(path: Path) -> dict[str, Any]:
    """The attributes of a feature cache as plain Python values, by name, brought to the
    current format (a one-line :class:`NewerCacheError` for a cache of a newer jepactl); other
    rooms read :func:`read_cache_record`."""
    with h5py.File(path, "r") as f:
        return upgrade_attrs(_plain_attrs(f), path)


def read_cache_record(path: Path) -> CacheAttrs:
    """The attributes of the feature cache at ``path`` as one typed record, complete or not;
    a one-line :class:`NewerCacheError` for a cache of a newer jepactl, a :class:`CacheError`
    for one whose attributes do not follow the schema, an ``OSError`` for no readable HDF5
    file."""
    with h5py.File(path, "r") as f:
        return CacheAttrs.from_attrs(_plain_attrs(f), path)


def create_cache(path: Path, attrs: CacheAttrs, shape: tuple[int, ...], ids: list[str]) -> None:
    """Create an empty cache (all rows not done) with the attributes ``attrs`` under a
    temporary name, then rename it.

    ``tokens`` is chunked one clip per chunk with every chunk allocated now and never
    filled: after creation, writing rows changes raw bytes only, never the file's structure.
    """
    _create(path, attrs.to_attrs(), shape, ids)


def _create(path: Path, attrs: Mapping[str, Any], shape: tuple[int, ...], ids: list[str]) -> None:
    """:func:`create_cache` with the attributes as a dict of names (``attrs``)."""
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
        reserve(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def reserve(path: Path, name: Path | None = None) -> None:
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
    path: Path, new: CacheAttrs, shape: tuple[int, ...]
) -> Literal["complete", "partial"]:
    """Whether an existing cache matches the attributes of a new one (``new``) and ``shape``;
    a :class:`CacheError` naming the first difference if not (a :class:`NewerCacheError` for
    a cache of a newer jepactl)."""
    identity = new.to_attrs()
    hint = "pass --force (force=True) to rebuild it from scratch"
    try:
        with h5py.File(path, "r") as f:
            raw = _plain_attrs(f)
            tokens = f.get("tokens")
            found = (tuple(tokens.shape), str(tokens.dtype)) if tokens is not None else None
            has_all = all(k in f for k in ("labels", "ids", "done"))
    except OSError as exc:
        raise CacheError(f"{path} cannot be read ({exc}); {hint}") from None
    try:
        attrs = upgrade_attrs(raw, path)
    except NewerCacheError as exc:  # never silently rebuilt over: --force says so
        raise NewerCacheError(f"{exc}, or {hint} with this jepactl") from None
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


def cache_status(
    path: Path, identity: CacheAttrs, shape: tuple[int, ...], force: bool
) -> CacheStatus:
    """What to do with ``path`` for a cache of the attributes ``identity``: nothing there
    (``missing``), a cache that does not match (or is of a newer jepactl) but ``force`` allows
    rebuilding (``stale``), or a matching ``complete``/``partial`` one."""
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
    _create(tmp, {**common, "ranks": world}, shape, ids)
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


class CacheWriter:
    """Writes rows into a cache made by :func:`create_cache`, then marks it complete.

    No chunk cache (``rdcc_nbytes=0``), and the datasets held open: every write reaches the
    file in the call that makes it, so a failure (a full disk) is raised there. With a cache,
    h5py reports it only when the chunk is evicted, from a destructor that cannot raise: the
    error is printed and lost while the rows are marked done.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.ExitStack() as stack:
            self._sync_fd = os.open(path, os.O_RDONLY)
            stack.callback(os.close, self._sync_fd)
            stack.enter_context(space_errors(path))  # a space error becomes DiskFullError
            self._file = stack.enter_context(h5py.File(path, "r+", rdcc_nbytes=0))
            self._stack = stack.pop_all()
        self._tokens = self._file["tokens"]
        self._labels = self._file["labels"]
        self._done = self._file["done"]

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return bool(self._stack.__exit__(exc_type, exc, tb))  # an ExitStack returns a bool

    def pending(self) -> list[int]:
        """Rows (file order) not yet done."""
        return [int(k) for k in np.flatnonzero(~self._done[:])]

    def write(self, rows: Sequence[int], tokens: np.ndarray, labels: np.ndarray) -> None:
        """Write float16 ``tokens`` ``[B, V, L, D]`` and ``labels`` ``[B]`` into ``rows``; they
        reach the disk (fsync) before the rows are marked done."""
        for a, b, j in _runs(rows):
            self._tokens[a:b] = tokens[j : j + b - a]
            self._labels[a:b] = labels[j : j + b - a]
        self._file.flush()
        os.fsync(self._sync_fd)
        for a, b, _ in _runs(rows):
            self._done[a:b] = True
        self._file.flush()

    def finish(self) -> None:
        """Mark the cache complete (every row must be done) and sync it."""
        if not self._done[:].all():
            raise RuntimeError(f"{self.path}: rows left undone after extraction")
        self._file.attrs["complete"] = True
        self._file.flush()
        os.fsync(self._sync_fd)


# --------------------------------------------------------------------------------------
# Reading a complete cache (the probe's side)
# --------------------------------------------------------------------------------------


def read_header(path: Path) -> CacheHeader:
    """Open ``path``, check the schema and that the extraction finished, and return its header.

    Raises:
        FileNotFoundError: no file at ``path``.
        NewerCacheError: a cache of a newer jepactl (one line naming both format versions).
        CacheError: ``complete`` is false or missing, some row is not ``done``, or the datasets
            or attributes do not follow the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no token cache at {path}")
    with h5py.File(path, "r") as f:
        attrs = CacheAttrs.from_attrs(_plain_attrs(f), path)
        if not attrs.is_complete:
            raise CacheError(
                f"{path}: the extraction did not finish (complete=false); "
                "re-run extract-features to resume it"
            )
        n, views, length, dim = _token_shape(f, path)
    return CacheHeader(
        path=path,
        n=n,
        views=views,
        tokens=length,
        dim=dim,
        num_classes=attrs.num_classes,
        benchmark=attrs.benchmark,
        checkpoint=attrs.checkpoint or "",
        checkpoint_step=-1 if attrs.checkpoint_step is None else attrs.checkpoint_step,
        checkpoint_sha256=attrs.checkpoint_sha256,
        weights=attrs.weights,
        pooling=attrs.pooling or "none",
        protocol=attrs.protocol,
        attrs=attrs,
    )


def _token_shape(f: h5py.File, path: Path) -> tuple[int, int, int, int]:
    """``(N, V, L, D)`` of the open cache ``f``, its datasets checked against the schema and
    every row done; a :class:`CacheError` naming the first thing that is not."""
    for name in ("tokens", "labels"):
        if name not in f:
            raise CacheError(f"{path}: missing dataset {name!r}")
    tokens = f["tokens"]
    if tokens.ndim != 4:
        raise CacheError(f"{path}: tokens must be [N, V, L, D], got shape {tokens.shape}")
    n, views, length, dim = (int(s) for s in tokens.shape)
    if min(n, views, length, dim) < 1:
        raise CacheError(f"{path}: empty tokens dataset, shape {tokens.shape}")
    if f["labels"].shape != (n,):
        raise CacheError(f"{path}: labels shape {f['labels'].shape} != ({n},)")
    if "done" in f and not bool(np.all(f["done"][:])):
        missing = int(n - np.count_nonzero(f["done"][:]))
        raise CacheError(f"{path}: marked complete but {missing} rows are not done")
    return n, views, length, dim


class TokenCache(TokenBatches):
    """One split's tokens, in memory when they fit ``max_memory_gb``, else streamed from disk.

    Labels are always in memory. Rows are addressed by their index in the file.
    """

    def __init__(self, path: Path, max_memory_gb: float | None = None, chunk_rows: int = 256):
        import torch

        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.header = read_header(path)
        self.path = self.header.path
        self.chunk_rows = chunk_rows
        budget = default_memory_gb() if max_memory_gb is None else max_memory_gb
        self.budget_bytes = int(budget * 2**30)
        with h5py.File(self.path, "r") as f:
            labels = np.asarray(f["labels"][:], dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.header.num_classes):
            raise CacheError(
                f"{self.path}: labels outside [0, {self.header.num_classes}) "
                f"(min {labels.min()}, max {labels.max()})"
            )
        self.labels = torch.from_numpy(labels)
        self.in_memory = self.header.nbytes <= self.budget_bytes
        self._tokens: torch.Tensor | None = self._load_all() if self.in_memory else None

    def _load_all(self) -> torch.Tensor:
        import torch

        h = self.header
        out = torch.empty((h.n, h.views, h.tokens, h.dim), dtype=torch.float16)
        dest = out.numpy()
        with h5py.File(self.path, "r") as f:
            ds = f["tokens"]
            for s in range(0, h.n, self.chunk_rows):
                e = min(s + self.chunk_rows, h.n)
                ds.read_direct(dest, source_sel=np.s_[s:e], dest_sel=np.s_[s:e])
        return out

    def _read_slabs(
        self, bounds: Sequence[tuple[int, int]]
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, end, tokens[start:end])`` per slab, from memory or read from disk."""
        import torch

        if self._tokens is not None:
            for s, e in bounds:
                yield s, e, self._tokens[s:e]
            return
        with h5py.File(self.path, "r") as f:
            ds = f["tokens"]
            for s, e in bounds:
                yield s, e, torch.from_numpy(ds[s:e])
