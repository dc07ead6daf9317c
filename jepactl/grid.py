"""The token grid of a clip and index sets over it: the types every room shares.

A clip of ``T`` frames at ``H x W`` pixels becomes a grid of ``T' x H' x W'`` tokens
(``T' = T / tubelet``, ``H' = H / patch``). Tokens are numbered in (t, h, w) raster order:
``n = t * H' * W' + h * W' + w``. Masks are index tensors into that numbering, so the encoder
and predictor can recover every token's 3D position from its index alone.

Owned by neither ``models`` nor ``masks``: both, and ``objectives``, ``data`` and ``features``,
import it, and it imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce


@dataclass(frozen=True)
class TokenGrid:
    """Shape of the token grid of one clip: ``t`` x ``h`` x ``w`` tokens."""

    t: int
    h: int
    w: int

    @property
    def num_tokens(self) -> int:
        return self.t * self.h * self.w

    @classmethod
    def of_clip(cls, frames: int, height: int, width: int, patch: int, tubelet: int) -> TokenGrid:
        """The grid a clip of ``frames x height x width`` pixels becomes; one frame is an image
        (tubelet 1, paper Appendix D)."""
        if height % patch or width % patch:
            raise ValueError(f"frame size {height}x{width} is not a multiple of patch {patch}")
        if frames == 1:
            return cls(1, height // patch, width // patch)
        if frames % tubelet:
            raise ValueError(f"{frames} frames is not a multiple of tubelet {tubelet}")
        return cls(frames // tubelet, height // patch, width // patch)

    def coords(self, idx: torch.Tensor) -> torch.Tensor:
        """Integer (t, h, w) coordinates of flat token indices: ``[...]`` -> ``[..., 3]``."""
        hw = self.h * self.w
        return torch.stack((idx // hw, (idx // self.w) % self.h, idx % self.w), dim=-1)


#: How a clip's tokens can be pooled: keep them all, average over time, average each time step
#: over a 2 x 2 grid of spatial quarters, or average everything.
POOLS: tuple[str, ...] = ("none", "time", "space2x2", "mean")


def pooled_length(grid: TokenGrid, pool: str) -> int:
    """Tokens per clip after ``pool``."""
    return {
        "none": grid.num_tokens,
        "time": grid.h * grid.w,
        "space2x2": grid.t * 4,
        "mean": 1,
    }[pool]


def pool_tokens(tokens: torch.Tensor, grid: TokenGrid, pool: str) -> torch.Tensor:
    """``[B, T'·H'·W', D]`` (t, h, w raster order) -> ``[B, L, D]``, ``L`` =
    :func:`pooled_length` (``space2x2``: per time step, the quarters in raster order)."""
    b, n, _ = tokens.shape
    if n != grid.num_tokens:
        raise ValueError(f"{n} tokens do not form the grid {grid}")
    if pool == "none":
        return tokens
    if pool == "mean":
        return tokens.mean(dim=1, keepdim=True)
    if pool == "time":
        return reduce(tokens, "b (t hw) d -> b hw d", "mean", t=grid.t)
    if pool == "space2x2":
        planes = rearrange(tokens, "b (t h w) d -> (b t) d h w", t=grid.t, h=grid.h, w=grid.w)
        pooled = F.adaptive_avg_pool2d(planes, 2)  # [B·T', D, 2, 2]
        return rearrange(pooled, "(b t) d i j -> b (t i j) d", b=b)
    raise ValueError(f"unknown pooling {pool!r}; one of {', '.join(POOLS)}")


@dataclass
class Masks:
    """Context and target token indices of one mask group for a whole batch.

    ``context``: ``[B, K]`` sorted ascending, the tokens the student encoder sees.
    ``target``: ``[B, M]`` sorted ascending, the tokens the predictor must predict.
    Every sample has the same ``K`` and ``M`` (see :mod:`jepactl.masks.multiblock` for how
    equal lengths are reached without a positional bias). Context and target are disjoint.
    """

    context: torch.Tensor
    target: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Masks:
        return Masks(
            self.context.to(device, non_blocking=non_blocking),
            self.target.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Masks:
        return Masks(self.context.pin_memory(), self.target.pin_memory())
