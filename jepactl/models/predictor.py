"""The JEPA predictor: context tokens + mask tokens at target positions -> target predictions.

Paper Table 1: 8 RoPE transformer blocks, width 256, 8 heads. Context tokens are projected to
the predictor width; each target position gets a learnable, zero-initialised mask token. All of
them attend to each other; positions come from their flat indices through 3D RoPE (order in the
sequence does not matter, so nothing is sorted). The output projection maps back to the encoder
width for the target tokens and, when the context loss is on (V-JEPA 2.1 dense prediction), a
second projection does the same for the context tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from jepactl.grid import TokenGrid
from jepactl.models.rope import RotaryEmbedding3D
from jepactl.models.vit import LayerNorm, init_weights, rope_blocks, run_block


class Predictor(nn.Module):
    """Args:
    in_dim: encoder output width (``out_dim`` of the encoder, e.g. 3072 with deep supervision).
    dim, depth, num_heads, mlp_ratio: predictor transformer size.
    embed: ``linear`` (V-JEPA) or ``mlp`` (``in_dim -> in_dim/4 -> dim`` with GELU, as the
        paper's V-JEPA 2.1 code does for the 4-level input).
    num_mask_tokens: 1 shares the mask token between mask groups (the reference code);
        more gives group ``i`` token ``i % num_mask_tokens``.
    predict_context: also build the context-token output projection.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = 256,
        depth: int = 8,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        embed: str = "linear",
        num_mask_tokens: int = 1,
        predict_context: bool = False,
        rope_theta: float = 10000.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"predictor dim {dim} is not divisible by {num_heads} heads")
        self.embed: nn.Module
        if embed == "linear":
            self.embed = nn.Linear(in_dim, dim)
        elif embed == "mlp":
            hidden = max(dim, in_dim // 4)
            self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        else:
            raise ValueError(f"predictor embed must be 'linear' or 'mlp', got {embed!r}")
        self.mask_tokens = nn.Parameter(torch.zeros(num_mask_tokens, dim))
        self.rope = RotaryEmbedding3D(dim // num_heads, rope_theta)
        self.blocks = rope_blocks(dim, depth, num_heads, mlp_ratio, drop_path)
        self.norm = LayerNorm(dim)
        self.proj = nn.Linear(dim, in_dim)
        self.proj_context = nn.Linear(dim, in_dim) if predict_context else None
        #: recompute block activations in the backward (``train.activation_checkpointing``)
        self.grad_checkpointing = False
        init_weights(self, self.blocks)

    def forward(
        self,
        context: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        grid: TokenGrid,
        mask_index: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``context`` ``[B, K, in_dim]`` at ``context_idx`` ``[B, K]``; targets at ``[B, M]``.

        Returns predictions ``[B, M, in_dim]`` for the targets and, if the predictor was built
        with ``predict_context``, ``[B, K, in_dim]`` for the context tokens (else ``None``).
        """
        b, k = context_idx.shape
        m = target_idx.shape[1]
        ctx = self.embed(context)
        token = self.mask_tokens[mask_index % self.mask_tokens.shape[0]]
        tgt = token.to(ctx.dtype).expand(b, m, -1)
        x = torch.cat((ctx, tgt), dim=1)
        rope = self.rope.rotations(grid.coords(torch.cat((context_idx, target_idx), dim=1)))
        for blk in self.blocks:
            x = run_block(blk, x, rope, self.grad_checkpointing)
        x = self.norm(x)
        pred_ctx = self.proj_context(x[:, :k]) if self.proj_context is not None else None
        return self.proj(x[:, k:]), pred_ctx
