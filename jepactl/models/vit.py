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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.eva import EvaBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from jepactl.grid import TokenGrid
from jepactl.models.attention import RopeAttention
from jepactl.models.rope import RotaryEmbedding3D

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def run_block(blk: nn.Module, x: torch.Tensor, rope: torch.Tensor, recompute: bool) -> torch.Tensor:
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
    dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path: float
) -> nn.ModuleList:
    """Pre-norm transformer blocks (timm ``EvaBlock``) whose attention is
    :class:`~jepactl.models.attention.RopeAttention`: it takes the complex rotations of
    :meth:`~jepactl.models.rope.RotaryEmbedding3D.rotations`."""
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
        blk.attn.__class__ = RopeAttention
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
    ) -> None:
        super().__init__()
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
        self.rope = RotaryEmbedding3D(embed_dim // num_heads, rope_theta)
        self.blocks = rope_blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path)
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
        if keep is None:
            idx = torch.arange(grid.num_tokens, device=tokens.device).unsqueeze(0)
        else:
            idx = keep
            tokens = tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        rope = self.rope.rotations(grid.coords(idx))
        outs = []
        norms = iter(self.norms)
        for i, blk in enumerate(self.blocks, start=1):
            tokens = run_block(blk, tokens, rope, self.grad_checkpointing)
            if i in self.out_blocks:
                outs.append(next(norms)(tokens))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
