"""V-JEPA multi-block 3D masking, without the reference's temporal bias.

This follows V-JEPA multi-block masking (Bardes et al., "Revisiting Feature Prediction for
Learning Visual Representations from Video", 2024; ``src/masks/multiseq_multiblock3d.py`` in
the V-JEPA / V-JEPA 2 code). One mask group draws a block size ``(t, h, w)`` once per batch,
places ``num_blocks`` such blocks independently in every sample (overlaps allowed), makes their
union the prediction target and the rest the context. The paper trains with two groups: a
short-range one (8 blocks at ``spatial_scale=0.15``, about 5x5 tokens on a 14x14 plane) and a
long-range one (2 blocks at ``spatial_scale=0.7``, about 12x12 tokens).

**Equal lengths and the bias of the reference.** A batch needs the same number of context
(and target) tokens in every sample. The reference takes each sample's token indices in
ascending order and truncates all of them to the batch minimum, keeping the *lowest* indices.
Because tokens are numbered in (t, h, w) raster order, that drops context from the *end of the
clip*: in the long-range group at batch size 24 only about 3% of the last time step's context
survives, so the encoder almost never sees late frames and the predictor almost never uses
them. :class:`MultiBlock3D` instead keeps, in every sample, a uniformly random subset of the
batch-minimum size (``equalize="random"``, the default), so each time step keeps the same
fraction of its context on average. ``equalize="truncate"`` reproduces the reference exactly
and exists only to reproduce results of the biased original. Tokens dropped by either rule are
neither context nor target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from jepactl.grid import Masks, TokenGrid

EqualizeMode = Literal["random", "truncate"]
_EQUALIZE_MODES: tuple[str, ...] = ("random", "truncate")
LengthMode = Literal["batch-min", "fixed"]
_LENGTH_MODES: tuple[str, ...] = ("batch-min", "fixed")
#: ``lengths: fixed``: batches drawn (from a generator of seed 0) to choose the fixed lengths,
#: and how many redraws a batch may take before the sizes are called unreachable.
CALIBRATION_BATCHES = 256
MAX_REDRAWS = 100


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_fraction(name: str, value: object) -> float:
    """A float in ``(0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def _check_aspect_ratio(value: object) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"aspect_ratio must be a pair (min, max), got {value!r}")
    low, high = value
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ValueError(f"aspect_ratio bounds must be numbers, got {value!r}")
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"aspect_ratio bounds must be finite and > 0, got {value!r}")
    if low > high:
        raise ValueError(f"aspect_ratio must satisfy min <= max, got {value!r}")
    return float(low), float(high)


class MultiBlock3D:
    """V-JEPA multi-block 3D mask strategy (one mask group); see the module docstring.

    Args:
        num_blocks: blocks placed per sample; their union is the target.
        spatial_scale: fraction of the ``H' x W'`` token plane covered by one block.
        temporal_scale: fraction of the ``T'`` time steps spanned by one block (1.0 gives
            full-length tubes).
        aspect_ratio: ``(min, max)`` of the uniform block aspect ratio ``h / w``.
        max_temporal_keep: context may only use the first ``max(1, floor(T' * keep))`` time
            steps. As in the reference, tokens at later time steps join the target.
        equalize: how every sample is cut to the batch-minimum number of context (and target)
            tokens: ``"random"`` keeps a uniformly random subset (unbiased, default);
            ``"truncate"`` keeps the lowest indices, reproducing the reference and its bias
            against late time steps.
        max_tries: how often a sample whose context came out empty is redrawn before a
            ``RuntimeError`` is raised.
        full_complement: the target is every token that is not (kept) context, after the
            equal-length cut, so nothing is left out (future-predictive masking: with
            ``max_temporal_keep=0.5`` the target is the masked first half plus the whole second
            half). Otherwise the target is the union of the blocks, cut to equal length.
        lengths: ``"batch-min"`` (default) cuts every sample to the batch's minimum context
            and target counts, which change from batch to batch. ``"fixed"`` cuts to the same
            two counts in every batch, so a compiled step (``train.compile``) sees one shape
            and compiles once: the counts are the ``fixed_quantile`` quantiles of the batch
            minima over :data:`CALIBRATION_BATCHES` batches drawn from seed 0 for this batch
            size and grid (uniform placement, identical on every rank), and a batch whose
            minima fall short is redrawn. ``docs/performance.md`` measures what this does to
            the mask statistics.
        fixed_quantile: see ``lengths``, in ``(0, 0.5)``; lower keeps fewer tokens and redraws
            less often (each count falls short in a ``fixed_quantile`` share of batches, so at
            most twice that share is redrawn).

    All randomness comes from the ``generator`` given to :meth:`__call__` (a CPU
    ``torch.Generator``), so the same generator state yields the same masks.
    """

    def __init__(
        self,
        num_blocks: int = 8,
        spatial_scale: float = 0.15,
        temporal_scale: float = 1.0,
        aspect_ratio: Sequence[float] = (0.75, 1.5),
        max_temporal_keep: float = 1.0,
        equalize: EqualizeMode = "random",
        max_tries: int = 20,
        full_complement: bool = False,
        lengths: LengthMode = "batch-min",
        fixed_quantile: float = 0.1,
    ) -> None:
        self.num_blocks = _check_int("num_blocks", num_blocks, 1)
        self.spatial_scale = _check_fraction("spatial_scale", spatial_scale)
        self.temporal_scale = _check_fraction("temporal_scale", temporal_scale)
        self.aspect_ratio = _check_aspect_ratio(aspect_ratio)
        self.max_temporal_keep = _check_fraction("max_temporal_keep", max_temporal_keep)
        if equalize not in _EQUALIZE_MODES:
            raise ValueError(f"equalize must be one of {_EQUALIZE_MODES}, got {equalize!r}")
        self.equalize: EqualizeMode = equalize
        self.max_tries = _check_int("max_tries", max_tries, 0)
        if not isinstance(full_complement, bool):
            raise ValueError(f"full_complement must be true or false, got {full_complement!r}")
        self.full_complement = full_complement
        if lengths not in _LENGTH_MODES:
            raise ValueError(f"lengths must be one of {_LENGTH_MODES}, got {lengths!r}")
        self.lengths: LengthMode = lengths
        self.fixed_quantile = _check_fraction("fixed_quantile", fixed_quantile)
        if self.fixed_quantile >= 0.5:  # context and target minima move in opposite directions
            raise ValueError(f"fixed_quantile must be below 0.5, got {fixed_quantile}")
        self._fixed: dict[tuple[int, TokenGrid], tuple[int, int]] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_blocks={self.num_blocks}, "
            f"spatial_scale={self.spatial_scale}, temporal_scale={self.temporal_scale}, "
            f"aspect_ratio={self.aspect_ratio}, max_temporal_keep={self.max_temporal_keep}, "
            f"equalize={self.equalize!r}, max_tries={self.max_tries}, "
            f"full_complement={self.full_complement}, lengths={self.lengths!r}, "
            f"fixed_quantile={self.fixed_quantile})"
        )

    def block_size(self, grid: TokenGrid, generator: torch.Generator) -> tuple[int, int, int]:
        """Draw the ``(t, h, w)`` block size shared by the whole batch (one uniform draw)."""
        _check_grid(grid)
        low, high = self.aspect_ratio
        ratio = low + torch.rand(1, generator=generator).item() * (high - low)
        t = max(1, int(grid.t * self.temporal_scale))
        num_spatial = int(grid.h * grid.w * self.spatial_scale)
        h = min(grid.h, max(1, round(math.sqrt(num_spatial * ratio))))
        w = min(grid.w, max(1, round(math.sqrt(num_spatial / ratio))))
        return t, h, w

    def context_window(self, grid: TokenGrid) -> int:
        """Number of leading time steps the context may use."""
        return max(1, int(grid.t * self.max_temporal_keep))

    def sample_context(
        self,
        batch_size: int,
        grid: TokenGrid,
        generator: torch.Generator,
        clips: torch.Tensor | None = None,
        uniform: bool = False,
    ) -> torch.Tensor:
        """Dense context mask before length equalisation: bool ``[B, T', H', W']``.

        The target is its complement. :meth:`__call__` starts with exactly this draw, so the
        same generator state gives the mask from which :meth:`__call__` subsamples. ``clips``
        is handed to :meth:`_draw_starts` (the redraw of empty-context samples passes the
        clips of just those samples). ``uniform`` places the blocks as this class does, even in
        a subclass that places them otherwise (the calibration of ``lengths: fixed``).
        """
        _check_int("batch_size", batch_size, 1)
        size = self.block_size(grid, generator)
        window = torch.arange(grid.t) < self.context_window(grid)
        context = self._draw_context(batch_size, grid, size, window, generator, clips, uniform)
        empty = ~context.flatten(1).any(dim=1)
        tries = 0
        while bool(empty.any()):
            if tries == self.max_tries:
                raise RuntimeError(
                    f"{self!r} left {int(empty.sum())} of {batch_size} samples without context "
                    f"tokens after {self.max_tries} redraws on grid {grid} with block size "
                    f"(t, h, w) = {size}; lower num_blocks or spatial_scale/temporal_scale, "
                    "or raise max_temporal_keep"
                )
            redrawn = None if clips is None else clips[empty]
            context[empty] = self._draw_context(
                int(empty.sum()), grid, size, window, generator, redrawn, uniform
            )
            empty = ~context.flatten(1).any(dim=1)
            tries += 1
        return context

    def __call__(
        self,
        batch_size: int,
        grid: TokenGrid,
        generator: torch.Generator,
        clips: torch.Tensor | None = None,
    ) -> Masks:
        """Sample one mask group; ``clips`` goes to :meth:`_draw_starts` (ignored here: uniform
        placement does not depend on pixels)."""
        context, num_context, num_target = self._draw_lengths(batch_size, grid, generator, clips)
        target = ~context
        if self.equalize == "random":
            # One score per token; context and target are disjoint, so both subsets are
            # independent uniform draws.
            scores = torch.rand(context.shape, generator=generator)
            kept = _random_subset(context, num_context, scores)
            if self.full_complement:
                return Masks(kept, _complement(kept, grid.num_tokens))
            return Masks(kept, _random_subset(target, num_target, scores))
        kept = _lowest(context, num_context)
        if self.full_complement:
            return Masks(kept, _complement(kept, grid.num_tokens))
        return Masks(kept, _lowest(target, num_target))

    def _draw_lengths(
        self,
        batch_size: int,
        grid: TokenGrid,
        generator: torch.Generator,
        clips: torch.Tensor | None,
    ) -> tuple[torch.Tensor, int, int]:
        """A dense context mask ``[B, N]`` and the context and target counts to cut it to:
        the batch minima, or (``lengths: fixed``) the fixed counts, redrawing until they fit."""
        fixed = self.fixed_lengths(batch_size, grid) if self.lengths == "fixed" else None
        for _ in range(MAX_REDRAWS):
            context = self.sample_context(batch_size, grid, generator, clips).flatten(1)
            num_context = int(context.sum(dim=1).min())
            num_target = int((~context).sum(dim=1).min())
            if fixed is None:
                return context, num_context, num_target
            if num_context >= fixed[0] and (self.full_complement or num_target >= fixed[1]):
                return context, fixed[0], fixed[1]
        raise RuntimeError(
            f"{self!r}: no batch of {MAX_REDRAWS} reached the fixed lengths {fixed} on grid "
            f"{grid}; lower fixed_quantile or use lengths: batch-min"
        )

    def fixed_lengths(self, batch_size: int, grid: TokenGrid) -> tuple[int, int]:
        """The context and target counts of ``lengths: fixed`` for this batch size and grid:
        the ``fixed_quantile`` quantiles of the batch minima of :data:`CALIBRATION_BATCHES`
        uniform draws from a generator of seed 0 (the same on every rank and in every worker).
        With ``full_complement`` the target count follows from the context count."""
        key = (batch_size, grid)
        if key not in self._fixed:
            gen = torch.Generator().manual_seed(0)
            minima = []
            for _ in range(CALIBRATION_BATCHES):
                context = self.sample_context(batch_size, grid, gen, uniform=True).flatten(1)
                minima.append((context.sum(dim=1).min(), (~context).sum(dim=1).min()))
            counts = torch.tensor(minima, dtype=torch.float64)
            low = torch.quantile(counts, self.fixed_quantile, dim=0, interpolation="lower")
            num_context = max(1, int(low[0]))
            num_target = grid.num_tokens - num_context if self.full_complement else int(low[1])
            self._fixed[key] = (num_context, max(1, num_target))
        return self._fixed[key]

    def _draw_context(
        self,
        batch_size: int,
        grid: TokenGrid,
        size: tuple[int, int, int],
        window: torch.Tensor,
        generator: torch.Generator,
        clips: torch.Tensor | None = None,
        uniform: bool = False,
    ) -> torch.Tensor:
        """Place ``num_blocks`` blocks per sample; bool context ``[B, T', H', W']``."""
        draw = MultiBlock3D._draw_starts if uniform else type(self)._draw_starts
        starts = draw(self, batch_size, grid, size, generator, clips)
        return self._place(grid, size, window, starts)

    @staticmethod
    def _place(
        grid: TokenGrid,
        size: tuple[int, int, int],
        window: torch.Tensor,
        starts: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Blocks of ``size`` at ``starts`` (each ``[B, num_blocks]``); the context is what no
        block covers inside the time ``window``: bool ``[B, T', H', W']``."""
        inside = []
        for start, length, extent in zip(starts, size, (grid.t, grid.h, grid.w), strict=True):
            pos = torch.arange(extent)
            inside.append((pos >= start[..., None]) & (pos < start[..., None] + length))
        in_t, in_h, in_w = inside  # [B, num_blocks, extent] each
        blocks = in_t[..., :, None, None] & in_h[..., None, :, None] & in_w[..., None, None, :]
        return ~blocks.any(dim=1) & window[:, None, None]

    def _draw_starts(
        self,
        batch_size: int,
        grid: TokenGrid,
        size: tuple[int, int, int],
        generator: torch.Generator,
        clips: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block origins: start ``t``, ``h`` and ``w`` token, each int64 ``[B, num_blocks]``.

        Uniform over every position where the block fits. Subclasses override this to choose
        origins (e.g. from the pixels in ``clips``, which holds exactly the ``batch_size``
        samples being placed); everything else about the masks stays the same.
        """
        shape = (batch_size, self.num_blocks)
        starts = [
            torch.randint(0, extent - length + 1, shape, generator=generator)
            for length, extent in zip(size, (grid.t, grid.h, grid.w), strict=True)
        ]
        return starts[0], starts[1], starts[2]


def _check_grid(grid: TokenGrid) -> None:
    if min(grid.t, grid.h, grid.w) < 1:
        raise ValueError(f"token grid must have at least one token per axis, got {grid}")


def _random_subset(mask: torch.Tensor, k: int, scores: torch.Tensor) -> torch.Tensor:
    """Per row, ``k`` uniformly random indices where ``mask`` is set, sorted ascending."""
    keys = torch.where(mask, scores, torch.inf)
    return keys.topk(k, dim=1, largest=False).indices.sort(dim=1).values


def _complement(kept: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Per row, every index not in ``kept`` ``[B, K]``, ascending (``[B, N - K]``)."""
    taken = torch.zeros(kept.shape[0], num_tokens, dtype=torch.bool).scatter_(1, kept, True)
    return _lowest(~taken, num_tokens - kept.shape[1])


def _lowest(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the ``k`` lowest indices where ``mask`` is set (the reference's truncation)."""
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :k]
