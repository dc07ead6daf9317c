"""What a feature cache holds and how two are compared, without opening one.

The format's constants (:data:`FORMAT_VERSION`, the encoder output it records, the space
budget per row and per file), the attributes of a new cache (:func:`cache_attrs`) and those
that must match for it to be reused (:data:`IDENTITY_KEYS`), its size
(:func:`projected_bytes`), the error a cache that cannot be used raises (:class:`CacheError`),
and a validated cache's header (:class:`CacheHeader`) with the train/val pairing check
(:func:`check_same_source`). Cut from :mod:`jepactl.features.cache` here because none of it
touches HDF5: that module alone opens the files (and imports h5py), and re-exports every name
defined here. The file layout itself is documented there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jepactl.errors import ConfigError

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


def cache_attrs(
    *,
    checkpoint: str,
    checkpoint_step: int,
    checkpoint_sha256: str,
    weights: str,
    benchmark: str,
    split: str,
    protocol: str,
    pooling: str,
    grid: TokenGrid,
    num_classes: int,
    classes: Sequence[str],
    num_clips: int,
    index_sha256: str,
) -> dict[str, Any]:
    """The attributes of a new cache (``complete`` is added when it is created)."""
    return {
        "format_version": FORMAT_VERSION,
        "checkpoint": checkpoint,
        "checkpoint_step": checkpoint_step,
        "checkpoint_sha256": checkpoint_sha256,
        "weights": weights,
        "benchmark": benchmark,
        "split": split,
        "protocol": protocol,
        "pooling": pooling,
        "grid": json.dumps([grid.t, grid.h, grid.w]),
        "encoder_output": ENCODER_OUTPUT,
        "num_classes": num_classes,
        "classes": json.dumps(list(classes)),
        "num_clips": num_clips,
        "index_sha256": index_sha256,
    }


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
