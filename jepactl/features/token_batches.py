"""How a probe walks one split's tokens once they are in memory or read slab by slab.

:class:`TokenBatches` holds everything :class:`~jepactl.features.cache.TokenCache` does with
rows it has read: one shuffled training epoch (a global shuffle in memory, windows of randomly
ordered slabs when streaming), evaluation batches in file order, and the scikit-learn probe's
per-view features (:data:`SKLEARN_FEATURES`); :func:`default_memory_gb` is the memory budget
that decides between the two modes. Cut from :mod:`jepactl.features.cache` here because none
of it opens an HDF5 file: ``TokenCache`` (a subclass, still defined there) loads the labels and
tokens and reads the slabs (``_load_all``, ``_read_slabs``), the only parts that need h5py.
torch is imported where tensors are made, as in that module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from jepactl.features.cache_schema import CacheHeader


SKLEARN_FEATURES: tuple[str, ...] = ("mean", "flat")
"""Inputs of the scikit-learn probe: token means, or all (pooled) tokens concatenated."""


def default_memory_gb() -> float:
    """Half of this machine's physical memory, in GiB (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**31
    except (ValueError, OSError, AttributeError):
        return 8.0


class TokenBatches:
    """The batching of one split's tokens; :class:`~jepactl.features.cache.TokenCache` reads
    them (``_tokens`` when in memory, ``_read_slabs`` otherwise) and sets these attributes."""

    header: CacheHeader
    path: Path
    chunk_rows: int
    budget_bytes: int
    labels: torch.Tensor
    in_memory: bool
    _tokens: torch.Tensor | None

    @property
    def mode(self) -> str:
        """``"memory"`` or ``"stream"``."""
        return "memory" if self.in_memory else "stream"

    def release(self) -> None:
        """Drop the in-memory tokens."""
        self._tokens = None

    def _chunk_bounds(self, rows: torch.Tensor) -> list[tuple[int, int]]:
        """The ``chunk_rows`` slabs that hold at least one of ``rows``."""
        import torch

        used = torch.unique(rows // self.chunk_rows).tolist()
        return [(c * self.chunk_rows, min((c + 1) * self.chunk_rows, self.header.n)) for c in used]

    def _read_slabs(
        self, bounds: Sequence[tuple[int, int]]
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, end, tokens[start:end])`` per slab, from memory or read from disk (by
        :meth:`jepactl.features.cache.TokenCache._read_slabs`)."""
        raise NotImplementedError

    def _window_slabs(self) -> int:
        """Slabs held at once when streaming (at least one)."""
        slab_bytes = self.chunk_rows * self.header.clip_bytes
        return max(1, self.budget_bytes // max(1, slab_bytes))

    def train_batches(
        self, rows: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch over every (clip, view) of ``rows``: ``([B, L, D] fp16, [B])``.

        All batches are full except possibly the last. In memory the shuffle is global; when
        streaming it is over windows of randomly ordered slabs, carrying leftovers forward.
        """
        import torch

        views = self.header.views
        if self._tokens is not None:
            ex_row = rows.repeat_interleave(views)
            ex_view = torch.arange(views).repeat(len(rows))
            perm = torch.randperm(len(ex_row), generator=generator)
            for i in range(0, len(perm), batch_size):
                idx = perm[i : i + batch_size]
                r, v = ex_row[idx], ex_view[idx]
                yield self._tokens[r, v], self.labels[r]
            return
        member = torch.zeros(self.header.n, dtype=torch.bool)
        member[rows] = True
        bounds = self._chunk_bounds(rows)
        order = torch.randperm(len(bounds), generator=generator).tolist()
        window = self._window_slabs()
        carry_x: torch.Tensor | None = None
        carry_y: torch.Tensor | None = None
        for w in range(0, len(order), window):
            xs, ys = [], []
            for s, _e, block in self._read_slabs([bounds[j] for j in order[w : w + window]]):
                local = torch.nonzero(member[s : s + len(block)]).squeeze(1)
                xs.append(block[local].flatten(0, 1))
                ys.append(self.labels[s + local].repeat_interleave(views))
            if carry_x is not None and carry_y is not None:
                xs.insert(0, carry_x)
                ys.insert(0, carry_y)
            x, y = torch.cat(xs), torch.cat(ys)
            perm = torch.randperm(len(x), generator=generator)
            full = len(perm) - len(perm) % batch_size
            for i in range(0, full, batch_size):
                idx = perm[i : i + batch_size]
                yield x[idx], y[idx]
            carry_x, carry_y = x[perm[full:]], y[perm[full:]]
        if carry_x is not None and carry_y is not None and len(carry_x):
            yield carry_x, carry_y

    def eval_batches(
        self, rows: torch.Tensor, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``rows`` in ascending file order, all views: ``([B, V, L, D] fp16, [B])``."""
        import torch

        rows = torch.sort(rows).values
        if self._tokens is not None:
            for i in range(0, len(rows), batch_size):
                r = rows[i : i + batch_size]
                yield self._tokens[r], self.labels[r]
            return
        member = torch.zeros(self.header.n, dtype=torch.bool)
        member[rows] = True
        for s, _e, block in self._read_slabs(self._chunk_bounds(rows)):
            local = torch.nonzero(member[s : s + len(block)]).squeeze(1)
            for i in range(0, len(local), batch_size):
                idx = local[i : i + batch_size]
                yield block[idx], self.labels[s + idx]

    def clip_features(self, rows: torch.Tensor, how: str = "mean") -> torch.Tensor:
        """Per-view features ``[len(rows), V, F]`` float32, in ascending row order: the token
        mean (``how="mean"``, ``F = D``) or all tokens concatenated in cache order
        (``how="flat"``, ``F = L·D``: keeps where and when each token is)."""
        import torch

        if how not in SKLEARN_FEATURES:
            raise ValueError(f"features must be one of {SKLEARN_FEATURES}, got {how!r}")
        reduce = (lambda x: x.float().mean(dim=2)) if how == "mean" else (
            lambda x: x.float().flatten(2)
        )  # fmt: skip
        feats = [reduce(x) for x, _ in self.eval_batches(rows, self.chunk_rows)]
        if not feats:
            width = self.header.dim if how == "mean" else self.header.tokens * self.header.dim
            return torch.empty(0, self.header.views, width)
        return torch.cat(feats)
