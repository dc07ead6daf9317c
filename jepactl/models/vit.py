"""Video Vision Transformer encoder with 3D RoPE (V-JEPA 2 style), built from timm EVA blocks.

Tokens: a 3D patch embedding (``tubelet x patch x patch`` Conv3d) gives a ``T' x H' x W'`` grid
in (t, h, w) raster order; there is no cls token and no absolute position embedding. Positions
enter every attention layer as 3D rotary embeddings computed from the tokens' flat indices, so
``forward(x, keep=idx)`` encodes only the kept tokens (the student's context) while each one keeps
the position it has in the full clip.

Images are one-frame clips (paper Appendix D, "tubelet length 1"). They go through the same
patch embedding with its kernel summed over the tubelet axis, which is exactly what the video
embedding computes on a static clip of ``tubelet`` copies of the image. This shares all weights
between images and videos, so no parameter sits unused in a video-only batch (which DDP would
otherwise have to be told about).

Other position schemes exist only to reproduce public checkpoints exactly (``docs/checkpoints.md``,
:mod:`jepactl.models.upstream`); the defaults above are unchanged by them:

* ``positions="sincos"``: V-JEPA 1 (``facebookresearch/jepa``): no RoPE, a frozen 3D sin-cos
  table (:func:`sincos_table_3d`) added to the patch tokens before the kept ones are gathered,
  resized to other grids as that code does (truncated along time, else trilinear).
* ``positions="rope-vjepa2"``: V-JEPA 2's rotary layout, whose pair channels turn at different
  frequencies (:class:`~jepactl.models.attention.SinCosRopeAttention`).
* ``rope_grid``: V-JEPA 2.1's ``interpolate_rope``: row and column positions rescaled onto a
  ``rope_grid``-cell grid, ``h * (rope_grid - 1) / (H' - 1)``.
* ``k_bias``: a trained key bias. timm's EVA attention keeps it at zero (a constant key bias
  shifts every score of a query equally, except that RoPE turns it with the key's position), so
  upstream checkpoints, which train one, need it to be exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from timm.models.eva import EvaBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from jepactl.grid import TokenGrid
from jepactl.models.attention import RopeAttention, SinCosRopeAttention
from jepactl.models.rope import RotaryEmbedding3D

LayerNorm = partial(nn.LayerNorm, eps=1e-6)

Positions = Literal["rope", "rope-vjepa2", "sincos"]
#: Position schemes of :class:`VideoViT` (the first is ours; see the module docstring).
POSITIONS: tuple[str, ...] = ("rope", "rope-vjepa2", "sincos")


def sincos_table_3d(dim: int, grid: Sequence[int]) -> torch.Tensor:
    """V-JEPA 1's frozen position table (``get_3d_sincos_pos_embed``, ``uniform_power=True``)
    for a ``(t, h, w)`` token grid: ``[t·h·w, dim]`` float32 in (t, h, w) raster order.

    Each axis gets ``2·ceil(dim / 6)`` channels, ``[sin(p·ω_j), cos(p·ω_j)]`` with
    ``ω_j = 10000^(-j / (n/2))``, ``j < n/2``; the three are concatenated as (t, h, w) and cut
    to ``dim``.
    """
    n = 2 * math.ceil(dim / 6)
    omega = 1.0 / 10000 ** (torch.arange(n // 2, dtype=torch.float64) / (n / 2.0))
    t, h, w = torch.meshgrid(*(torch.arange(g, dtype=torch.float64) for g in grid), indexing="ij")
    parts = []
    for pos in (t, h, w):
        angles = pos.reshape(-1, 1) * omega
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)[:, :dim].float()


def run_block(
    blk: nn.Module, x: torch.Tensor, rope: torch.Tensor | None, recompute: bool
) -> torch.Tensor:
    """``blk(x, rope=rope)``; with ``recompute`` (and gradients on) its activations are not
    kept for the backward pass but recomputed there (``torch.utils.checkpoint``, non-reentrant,
    the random state of drop-path restored): the same values and gradients, less memory, one
    more forward of the block per step."""
    if recompute and torch.is_grad_enabled():
        out: torch.Tensor = checkpoint(blk, x, rope=rope, use_reentrant=False)
        return out
    result: torch.Tensor = blk(x, rope=rope)
    return result


def rope_blocks(
    dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    drop_path: float,
    attention: type[RopeAttention] = RopeAttention,
    k_bias: bool = False,
) -> nn.ModuleList:
    """Pre-norm transformer blocks (timm ``EvaBlock``) whose attention is
    :class:`~jepactl.models.attention.RopeAttention` (it takes the complex rotations of
    :meth:`~jepactl.models.rope.RotaryEmbedding3D.rotations`), or ``attention``. ``k_bias``
    makes the key bias a trained parameter (timm keeps it a zero buffer)."""
    rates = torch.linspace(0, drop_path, depth).tolist() if depth > 1 else [drop_path]
    blocks = nn.ModuleList(
        EvaBlock(
            dim,
            num_heads,
            qkv_bias=True,
            mlp_ratio=mlp_ratio,
            num_prefix_tokens=0,
            drop_path=rates[i],
            norm_layer=LayerNorm,
        )
        for i in range(depth)
    )
    for blk in blocks:
        # RopeAttention is EvaAttention with another forward and no state of its own: switching
        # the class keeps the parameters, their names and the random stream of initialisation
        # (a seed gives the same weights as before it existed).
        attn = blk.attn
        if not isinstance(attn, nn.Module):
            raise TypeError(f"EvaBlock.attn is {type(attn).__name__}")
        attn.__class__ = attention
        if k_bias:  # timm registers a zero buffer; a parameter is trained and saved
            attn._buffers.pop("k_bias")
            attn.k_bias = nn.Parameter(torch.zeros(dim))
    return blocks


def trunc_normal_init(module: nn.Module) -> None:
    """Trunc-normal(0.02) linears and convolutions with zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv3d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_weights(module: nn.Module, blocks: nn.ModuleList) -> None:
    """V-JEPA init: :func:`trunc_normal_init`, then residual projections scaled by
    1/sqrt(2l)."""
    trunc_normal_init(module)
    for layer_id, blk in enumerate(blocks, start=1):
        scale = math.sqrt(2.0 * layer_id)
        for name in ("attn.proj", "mlp.fc2"):
            proj = blk.get_submodule(name)
            if not isinstance(proj, nn.Linear):
                raise TypeError(f"block {layer_id}: {name} is {type(proj).__name__}, not Linear")
            proj.weight.data.div_(scale)


class VideoViT(nn.Module):
    """ViT over video clips ``[B, C, T, H, W]`` (or images as ``T == 1``).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        patch_size, tubelet: token size in pixels and frames.
        rope_theta: RoPE base frequency.
        drop_path: stochastic depth rate of the last block (linear from 0).
        out_blocks: 1-indexed blocks whose (LayerNorm'ed) outputs are concatenated along
            channels. ``None`` = the last block only. V-JEPA 2.1 deep supervision uses
            e.g. ``(3, 6, 9, 12)`` for ViT-B, giving ``out_dim = 4 * embed_dim``.
        positions: ``rope`` (ours), ``rope-vjepa2`` or ``sincos`` (see the module docstring).
        pos_grid: ``sincos`` only: the ``(t, h, w)`` grid of the stored table (``pos_embed``).
        rope_grid: rotary positions only: V-JEPA 2.1's ``interpolate_rope`` grid, or None.
        k_bias: train a key bias (upstream checkpoints have one).
    """

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        tubelet: int = 2,
        in_chans: int = 3,
        rope_theta: float = 10000.0,
        drop_path: float = 0.0,
        out_blocks: Sequence[int] | None = None,
        positions: Positions = "rope",
        pos_grid: Sequence[int] | None = None,
        rope_grid: int | None = None,
        k_bias: bool = False,
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
        if (positions == "sincos") != (pos_grid is not None):
            raise ValueError("pos_grid is given with positions='sincos', and only then")
        if rope_grid is not None and (positions == "sincos" or rope_grid < 2):
            raise ValueError(f"rope_grid {rope_grid} needs rotary positions and >= 2 cells")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        out = tuple(out_blocks) if out_blocks else (depth,)
        if any(not 1 <= b <= depth for b in out) or list(out) != sorted(set(out)):
            raise ValueError(f"out_blocks {out} must be increasing block numbers in 1..{depth}")
        if out[-1] != depth:  # later blocks would run without ever receiving a gradient
            raise ValueError(f"out_blocks {out} must end with the last block ({depth})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.tubelet = tubelet
        self.out_blocks = out
        self.out_dim = embed_dim * len(out)
        self.patch_embed = nn.Conv3d(
            in_chans,
            embed_dim,
            (tubelet, patch_size, patch_size),
            (tubelet, patch_size, patch_size),
        )
        self.positions = positions
        self.rope_grid = rope_grid
        self.pos_grid = tuple(pos_grid) if pos_grid is not None else None
        self.pos_embed: torch.Tensor | None
        if self.pos_grid is not None:
            if len(self.pos_grid) != 3 or min(self.pos_grid) < 1:
                raise ValueError(f"pos_grid must be 3 positive sizes, got {self.pos_grid}")
            table = sincos_table_3d(embed_dim, self.pos_grid).unsqueeze(0)
            self.register_buffer("pos_embed", table)  # frozen, and saved with the weights
        else:
            self.pos_embed = None
        self.rope = RotaryEmbedding3D(embed_dim // num_heads, rope_theta)
        attention = SinCosRopeAttention if positions == "rope-vjepa2" else RopeAttention
        self.blocks = rope_blocks(
            embed_dim, depth, num_heads, mlp_ratio, drop_path, attention, k_bias
        )
        self.norms = nn.ModuleList(LayerNorm(embed_dim) for _ in out)
        #: recompute block activations in the backward (``train.activation_checkpointing``)
        self.grad_checkpointing = False
        init_weights(self, self.blocks)

    def grid(self, clip_shape: Sequence[int]) -> TokenGrid:
        """Token grid of clips shaped ``[B, C, T, H, W]``."""
        t, h, w = clip_shape[-3:]
        return TokenGrid.of_clip(t, h, w, self.patch_size, self.tubelet)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, N, D]`` in (t, h, w) raster order."""
        if x.shape[2] == 1:  # image: the video kernel summed over time (see module docstring)
            w = self.patch_embed.weight.sum(dim=2)
            y = F.conv2d(x[:, :, 0], w, self.patch_embed.bias, stride=self.patch_size)
            return y.flatten(2).transpose(1, 2)
        return self.patch_embed(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``x`` ``[B, C, T, H, W]``; with ``keep`` ``[B, K]`` only those token indices.

        Returns ``[B, K or N, out_dim]``.
        """
        return self.encode(self.embed(x), self.grid(x.shape), keep)

    def forward_groups(self, x: torch.Tensor, keeps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[forward(x, keep=k) for k in keeps]``, embedding the clip once (the student's
        context for every mask group: one patch embedding, and one in the backward pass)."""
        tokens, grid = self.embed(x), self.grid(x.shape)
        return [self.encode(tokens, grid, k) for k in keeps]

    def encode(
        self, tokens: torch.Tensor, grid: TokenGrid, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The transformer over patch tokens ``[B, N, D]`` from :meth:`embed` (only the indices
        ``keep`` ``[B, K]`` if given); ``[B, K or N, out_dim]``."""
        if self.pos_embed is not None:
            tokens = tokens + self.sincos_positions(grid).to(tokens.dtype)
        if keep is None:
            idx = torch.arange(grid.num_tokens, device=tokens.device).unsqueeze(0)
        else:
            idx = keep
            tokens = tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        rope = self.rotary(grid, idx)
        outs = []
        norms = iter(self.norms)
        for i, blk in enumerate(self.blocks, start=1):
            tokens = run_block(blk, tokens, rope, self.grad_checkpointing)
            if i in self.out_blocks:
                outs.append(next(norms)(tokens))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def rotary(self, grid: TokenGrid, idx: torch.Tensor) -> torch.Tensor | None:
        """What the attention layers take for the tokens ``idx`` ``[B, K]`` of ``grid``: complex
        rotations (``rope``), sin/cos tables (``rope-vjepa2``), or None (``sincos``)."""
        if self.positions == "sincos":
            return None
        coords = grid.coords(idx)
        if self.rope_grid is not None:  # V-JEPA 2.1 interpolate_rope: rows/columns rescaled
            scale = [1.0, 1.0, 1.0]
            for axis, size in ((1, grid.h), (2, grid.w)):
                scale[axis] = (self.rope_grid - 1) / (size - 1) if size > 1 else 0.0
            coords = coords.float() * torch.tensor(scale, device=coords.device)
        if self.positions == "rope-vjepa2":
            return self.rope.vjepa2_tables(coords)
        return self.rope.rotations(coords)

    def sincos_positions(self, grid: TokenGrid) -> torch.Tensor:
        """The stored sin-cos table for ``grid``: as stored on its own grid, its first
        ``grid.t`` time steps for a shorter clip of the same frame size, else resized
        trilinearly (as V-JEPA 1's ``interpolate_pos_encoding``); ``[1, N, D]``."""
        if self.pos_embed is None or self.pos_grid is None:
            raise RuntimeError("this encoder has no sin-cos position table")
        t0, h0, w0 = self.pos_grid
        table = self.pos_embed
        if (grid.t, grid.h, grid.w) == (t0, h0, w0):
            return table
        if (grid.h, grid.w) == (h0, w0) and grid.t < t0:
            return table[:, : grid.num_tokens]
        d = table.shape[-1]
        cube = table.reshape(1, t0, h0, w0, d).permute(0, 4, 1, 2, 3)
        cube = F.interpolate(cube, size=(grid.t, grid.h, grid.w), mode="trilinear")
        return cube.permute(0, 2, 3, 4, 1).reshape(1, grid.num_tokens, d)
