"""What a feature cache holds and how two are compared, without opening one.

The format's constants (:data:`FORMAT_VERSION` and :data:`CACHE_FORMAT`, the encoder output it
records, the space budget per row and per file), its attributes as one typed record
(:class:`CacheAttrs`: this module alone spells their names and kinds, and a cache of a newer
jepactl is refused in one line, :class:`NewerCacheError`), those of a new cache
(:func:`cache_attrs`) and those that must match for it to be reused (:data:`IDENTITY_KEYS`),
its size (:func:`projected_bytes`), the error a cache that cannot be used raises
(:class:`CacheError`), and a validated cache's header (:class:`CacheHeader`) with the train/val
pairing check (:func:`check_same_source`). Cut from :mod:`jepactl.features.cache` here because
none of it touches HDF5: that module alone opens the files (and imports h5py), and re-exports
every name defined here. The file layout itself is documented there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jepactl.errors import ConfigError
from jepactl.formats import Format, NewerFormatError

if TYPE_CHECKING:
    from jepactl.grid import TokenGrid


FORMAT_VERSION = 1


ENCODER_OUTPUT = "last block, final LayerNorm"


#: Beyond the tokens, a cache file holds per row a label, an id, a done flag and a chunk-index
#: entry, and a fixed header: budgeted generously when checking free space.
ROW_OVERHEAD_BYTES = 128


FILE_OVERHEAD_BYTES = 64 << 10


Pool = Literal["none", "time", "space2x2", "mean"]
CacheStatus = Literal["missing", "stale", "complete", "partial"]


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
    """A feature cache that cannot be used, continued or merged as asked (the message says
    why): incomplete, malformed, or built from another checkpoint or with other settings."""


#: The cache attributes' format: version 1 since the first release, always stamped under
#: ``format_version`` (a cache without it is of version 1).
CACHE_FORMAT = Format("token cache", FORMAT_VERSION, key="format_version")


class NewerCacheError(CacheError, NewerFormatError):
    """A cache written by a newer jepactl: a :class:`~jepactl.formats.NewerFormatError`, and a
    :class:`CacheError` too, so ``--force`` may rebuild over it as over any cache it cannot
    use."""


@dataclass(frozen=True, kw_only=True)
class CacheAttrs:
    """A token cache's attributes, typed: the record :mod:`jepactl.features.cache` writes
    (:meth:`to_attrs`) and reads (:meth:`from_attrs`) and every other room receives.

    The fields are the attributes, in the order a new cache writes them (see
    :mod:`jepactl.features.cache` for what each means); JSON attributes are parsed
    (``protocol`` a mapping, ``grid`` ``(T', H', W')``, ``classes`` a tuple). ``None`` is an
    attribute the file does not hold: every cache jepactl writes holds all but the shard's
    (``shard_rank``, ``shard_world``), the merge's (``ranks``) and, until it is created,
    ``complete``; a cache made by hand may hold only the four :func:`read_header` needs.
    ``format_version`` is always the current one (:meth:`from_attrs` migrates older ones).
    """

    format_version: int = field(default=FORMAT_VERSION, init=False)
    checkpoint: str | None = None
    checkpoint_step: int | None = None
    checkpoint_sha256: str
    weights: str
    benchmark: str
    split: str | None = None
    protocol: Mapping[str, Any] | None = None
    pooling: str | None = None
    grid: tuple[int, int, int] | None = None
    encoder_output: str | None = None
    num_classes: int
    classes: tuple[str, ...] | None = None
    num_clips: int | None = None
    index_sha256: str | None = None
    shard_rank: int | None = None
    shard_world: int | None = None
    #: The number of shards a merged cache was joined from.
    ranks: int | None = None
    complete: bool | None = None

    @property
    def limit(self) -> int | None:
        """The clip limit of the protocol the cache was built with (``None``: every clip)."""
        limit = (self.protocol or {}).get("limit")
        return int(limit) if limit else None

    @property
    def is_complete(self) -> bool:
        """Whether the extraction finished (``complete`` is true)."""
        return bool(self.complete)

    def for_shard(self, rank: int, world: int) -> CacheAttrs:
        """These attributes for shard ``rank`` of ``world`` of a torchrun extraction."""
        return replace(self, shard_rank=rank, shard_world=world)

    def to_attrs(self) -> dict[str, Any]:
        """The HDF5 attributes, by name, in the order they are written (those set only)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _WRITE.get(f.name, _same)(value)
        return out

    @classmethod
    def from_attrs(cls, raw: Mapping[str, Any], where: str | Path) -> CacheAttrs:
        """The attributes ``raw`` (plain values, as read from ``where``), brought to the
        current format; a one-line :class:`NewerCacheError` for a cache of a newer jepactl, a
        :class:`CacheError` for one missing an attribute it needs or holding one of the wrong
        kind."""
        record = upgrade_attrs(raw, where)
        missing = [k for k in _REQUIRED if k not in record]
        if missing:
            raise CacheError(f"{where}: missing attributes {missing}")
        values = {
            name: _READ.get(name, _text)(record[name], name, where)
            for name in _FIELDS
            if record.get(name) is not None
        }
        return cls(**values)


def upgrade_attrs(raw: Mapping[str, Any], where: str | Path) -> dict[str, Any]:
    """The attributes ``raw`` as a dict brought to the current format (:data:`CACHE_FORMAT`);
    a one-line :class:`NewerCacheError` for a cache of a newer jepactl."""
    try:
        return CACHE_FORMAT.upgrade(raw, where)
    except NewerFormatError as exc:
        raise NewerCacheError(str(exc)) from None


def cache_attrs(
    *,
    checkpoint: str,
    checkpoint_step: int,
    checkpoint_sha256: str,
    weights: str,
    benchmark: str,
    split: str,
    protocol: Mapping[str, Any],
    pooling: str,
    grid: TokenGrid,
    num_classes: int,
    classes: Sequence[str],
    num_clips: int,
    index_sha256: str,
) -> CacheAttrs:
    """The attributes of a new cache, from this jepactl's encoder (``complete`` is added when
    it is created)."""
    return CacheAttrs(
        checkpoint=checkpoint, checkpoint_step=checkpoint_step,
        checkpoint_sha256=checkpoint_sha256, weights=weights, benchmark=benchmark, split=split,
        protocol=protocol, pooling=pooling, grid=(grid.t, grid.h, grid.w),
        encoder_output=ENCODER_OUTPUT, num_classes=num_classes, classes=tuple(classes),
        num_clips=num_clips, index_sha256=index_sha256,
    )  # fmt: skip


#: The attributes :func:`read_header` has always required.
_REQUIRED = ("checkpoint_sha256", "weights", "benchmark", "num_classes")


def _same(value: Any) -> Any:
    return value


def _json(value: Any) -> str:
    """A JSON attribute as written: a mapping with sorted keys (as
    :meth:`~jepactl.features.clips.EvalSource.protocol_json` always wrote it), a sequence as a
    list."""
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True)
    return json.dumps(list(value))


_WRITE: dict[str, Callable[[Any], Any]] = {"protocol": _json, "grid": _json, "classes": _json}


def _text(value: Any, name: str, where: str | Path) -> str:
    """A text attribute (bytes decoded; anything else as its text, as readers always took it)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any, name: str, where: str | Path) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CacheError(f"{where}: attribute {name} is {value!r}, not a whole number") from None


def _flag(value: Any, name: str, where: str | Path) -> bool:
    """A boolean attribute, also when a writer stored it as text ("false")."""
    if isinstance(value, bytes | str):
        return _text(value, name, where).strip().lower() in ("true", "1", "yes")
    return bool(value)


def _parsed(value: Any, name: str, where: str | Path) -> Any:
    try:
        return json.loads(_text(value, name, where))
    except json.JSONDecodeError:
        raise CacheError(f"{where}: attribute {name} is not JSON: {value!r:.80}") from None


def _protocol(value: Any, name: str, where: str | Path) -> Mapping[str, Any] | None:
    protocol = _parsed(value, name, where)
    if protocol is not None and not isinstance(protocol, dict):
        raise CacheError(f"{where}: attribute {name} is not a JSON object: {value!r:.80}")
    return protocol


def _grid(value: Any, name: str, where: str | Path) -> tuple[int, int, int]:
    grid = _parsed(value, name, where)
    if not (isinstance(grid, list) and len(grid) == 3 and all(type(g) is int for g in grid)):
        raise CacheError(f"{where}: attribute {name} is {value!r}, not [T', H', W']")
    return (grid[0], grid[1], grid[2])


def _classes(value: Any, name: str, where: str | Path) -> tuple[str, ...]:
    classes = _parsed(value, name, where)
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CacheError(f"{where}: attribute {name} is {value!r:.80}, not a list of names")
    return tuple(classes)


_Reader = Callable[[Any, str, "str | Path"], Any]
_READ: dict[str, _Reader] = {
    "checkpoint_step": _int, "num_classes": _int, "num_clips": _int, "shard_rank": _int,
    "shard_world": _int, "ranks": _int, "complete": _flag, "protocol": _protocol,
    "grid": _grid, "classes": _classes,
}  # fmt: skip
#: The attributes :meth:`CacheAttrs.from_attrs` reads (``format_version`` is the format's).
_FIELDS = tuple(f.name for f in fields(CacheAttrs) if f.init)


def projected_bytes(clips: int, views: int, tokens: int, dim: int) -> int:
    """Bytes of a float16 token cache: clips x views x tokens x dim x 2."""
    return clips * views * tokens * dim * 2


@dataclass(frozen=True)
class CacheHeader:
    """A validated cache's shape and attributes (no token data read)."""

    path: Path
    n: int
    views: int
    tokens: int
    dim: int
    num_classes: int
    benchmark: str
    checkpoint: str
    checkpoint_step: int
    checkpoint_sha256: str
    weights: str
    pooling: str
    protocol: Any
    #: Every attribute of the cache, typed.
    attrs: CacheAttrs

    @property
    def clip_bytes(self) -> int:
        """Bytes of one clip's tokens (all views) in float16."""
        return self.views * self.tokens * self.dim * 2

    @property
    def nbytes(self) -> int:
        """Bytes of the whole ``tokens`` dataset in float16."""
        return self.n * self.clip_bytes


def check_same_source(train: CacheHeader, val: CacheHeader) -> None:
    """Refuse a train/val pair that is not from one checkpoint, weights, benchmark and pooling
    (and so the same number of tokens per clip: a clip length or crop that differs between the
    splits would give a different token count)."""
    fields = (
        "checkpoint_sha256",
        "weights",
        "benchmark",
        "pooling",
        "tokens",
        "dim",
        "num_classes",
    )
    for what in fields:
        a, b = getattr(train, what), getattr(val, what)
        if a != b:
            raise CacheError(
                f"train and val caches differ in {what}: {a!r} ({train.path}) vs "
                f"{b!r} ({val.path}); re-extract one of them (extract-features --force)"
            )
