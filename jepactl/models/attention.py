"""Self-attention with 3D RoPE for the encoder and predictor blocks.

timm's ``EvaAttention`` rotates q and k separately, each with a slice, a negation, a stack and
two products, plus a concatenation with the (here empty) prefix tokens, in every block.
:class:`RopeAttention` keeps its parameters and their names (checkpoints are unchanged) and
rotates q and k together as one complex product with the rotations of
:meth:`jepactl.models.rope.RotaryEmbedding3D.rotations`, computed once per forward. Attention
itself is PyTorch's fused ``scaled_dot_product_attention`` (measured faster than timm's
non-fused path on CPU in fp32, ``docs/performance.md``; the fused kernels on GPU).

:class:`SinCosRopeAttention` is the same attention with V-JEPA 2's rotary layout, which is not a
rotation of channel pairs (see :meth:`jepactl.models.rope.RotaryEmbedding3D.vjepa2_tables`) and
so needs real sin/cos tables; it exists to reproduce V-JEPA 2 checkpoints exactly
(``docs/checkpoints.md``) and is never the default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.eva import EvaAttention


def rotate_pairs(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair ``(x[..., 2j], x[..., 2j+1])`` of ``x`` ``[..., N, head_dim]``
    by the unit complex ``rotations[..., N, j]`` (broadcast over the leading dimensions);
    computed in float32, returned in ``x``'s dtype.

    ``rotations`` may also be real, ``[..., N, head_dim / 2, 2]`` holding ``(cos, sin)``, the
    form a compiled step uses: ``(a, b) -> (a·cos − b·sin, a·sin + b·cos)``, the same numbers.
    """
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    if not rotations.is_complex():
        a, b = pairs.unbind(-1)
        cos, sin = rotations.unbind(-1)
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)
    turned = torch.view_as_complex(pairs) * rotations
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)


def rotate_sincos(x: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """``x * cos + rot(x) * sin`` with ``rot`` mapping each pair ``(a, b)`` to ``(-b, a)``, for
    ``x`` ``[..., N, head_dim]`` and ``tables = cat([sin, cos], -1)`` ``[..., N, 2 * head_dim]``
    (broadcast over the leading dimensions); computed in float32, returned in ``x``'s dtype."""
    sin, cos = tables.chunk(2, dim=-1)
    xf = x.float()
    pairs = xf.reshape(*xf.shape[:-1], -1, 2)
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (xf * cos + turned * sin).to(x.dtype)


class RopeAttention(EvaAttention):
    """``EvaAttention`` (fused qkv, q/v biases) taking ``rope`` as complex rotations
    ``[B, 1, N, head_dim / 2]``; no prefix tokens, no q/k norm, no attention mask."""

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal or self.qkv is None:
            raise ValueError("RopeAttention supports fused qkv without masks only")
        b, n, c = x.shape
        qb, kb, vb = self.q_bias, self.k_bias, self.v_bias
        bias = None if qb is None or kb is None or vb is None else torch.cat((qb, kb, vb))
        qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # [3, B, H, N, hd]
        qk, v = qkv[:2], qkv[2]
        if rope is not None:
            qk = self.rotate(qk, rope)
        q, k = qk.unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0
        )
        out = self.norm(out.transpose(1, 2).reshape(b, n, c))
        return self.proj_drop(self.proj(out))

    def rotate(self, qk: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """Turn q and k (stacked, ``[2, B, H, N, head_dim]``) by the positions in ``rope``."""
        return rotate_pairs(qk, rope)


class SinCosRopeAttention(RopeAttention):
    """:class:`RopeAttention` taking ``rope`` as real tables ``cat([sin, cos], -1)`` ``[B, 1, N,
    2 * head_dim]`` (V-JEPA 2's layout, :meth:`~jepactl.models.rope.RotaryEmbedding3D.
    vjepa2_tables`), applied with :func:`rotate_sincos`."""

    def rotate(self, qk: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        return rotate_sincos(qk, rope)
