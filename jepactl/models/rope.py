"""3D rotary position embedding for video tokens (V-JEPA 2 style, frequencies interleaved).

Each attention head's channels are split into three equal chunks of ``2 * ((head_dim // 3) // 2)``
channels that rotate with the token's time, row and column index respectively; the few channels
left over (4 of 64 for ViT-B) are not rotated. Positions are the integer (t, h, w) coordinates
decoded from each token's flat index, so a masked sequence needs no extra bookkeeping: a kept
token carries exactly the rotation it would have in the full clip.

The output follows timm's ``apply_rot_embed_cat`` layout (``cat([sin, cos], -1)`` with each
frequency repeated for its channel pair), so timm's EVA attention applies it unchanged. Unlike
the V-JEPA 2 code (``.repeat`` instead of ``repeat_interleave``, kept there for checkpoint
compatibility), every channel pair gets its own frequency. That layout is still available, for
loading V-JEPA 2 checkpoints exactly, as :meth:`RotaryEmbedding3D.vjepa2_tables`.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding3D(nn.Module):
    """Maps token coordinates ``[B, N, 3]`` to rotary sin/cos tables ``[B, 1, N, 2 * head_dim]``."""

    inv_freq: torch.Tensor  # buffer [axis_dim / 2]

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        axis_dim = 2 * ((head_dim // 3) // 2)
        if axis_dim == 0:
            raise ValueError(f"head_dim {head_dim} is too small for 3D RoPE (needs >= 6)")
        self.head_dim = head_dim
        self.axis_dim = axis_dim
        inv_freq = theta ** (-torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        # [B, N, 3, axis_dim / 2] angles, then each frequency repeated for its channel pair.
        angles = coords.to(self.inv_freq.dtype).unsqueeze(-1) * self.inv_freq
        return self._tables(angles.repeat_interleave(2, dim=-1).flatten(-2))

    def _tables(self, angles: torch.Tensor) -> torch.Tensor:
        """``cat([sin, cos], -1)`` of per-channel ``angles`` ``[B, N, 3 * axis_dim]``, the
        unrotated channels padded with angle 0, as ``[B, 1, N, 2 * head_dim]``."""
        sin, cos = angles.sin(), angles.cos()
        rest = self.head_dim - sin.shape[-1]
        if rest:
            sin = torch.cat((sin, sin.new_zeros((*sin.shape[:-1], rest))), dim=-1)
            cos = torch.cat((cos, cos.new_ones((*cos.shape[:-1], rest))), dim=-1)
        return torch.cat((sin, cos), dim=-1).unsqueeze(1)

    def rotations(self, coords: torch.Tensor) -> torch.Tensor:
        """The same rotations as unit complex numbers, one per channel pair: ``[B, 1, N,
        head_dim / 2]`` complex64, ``exp(i·angle)`` (angle 0 for the unrotated channels).

        Rotating a pair ``(x0, x1)`` by its angle is multiplying ``x0 + i·x1`` by this number,
        which is what :class:`jepactl.models.attention.RopeAttention` does for q and k at once:
        one complex product per block instead of timm's slice, negate, stack and two products.
        Under ``torch.compile`` they come as real ``(cos, sin)`` pairs instead (see below);
        :func:`jepactl.models.attention.rotate_pairs` takes either.
        """
        angles = (coords.to(self.inv_freq.dtype).unsqueeze(-1) * self.inv_freq).flatten(-2)
        rest = self.head_dim // 2 - angles.shape[-1]
        if rest:
            angles = torch.cat((angles, angles.new_zeros((*angles.shape[:-1], rest))), dim=-1)
        if torch.compiler.is_compiling():
            # The same rotations as real (cos, sin) pairs ``[B, 1, N, head_dim / 2, 2]``:
            # inductor cannot lower complex arithmetic, and fuses this form into the
            # attention's other element-wise work. Eager keeps the complex product, 2-3x
            # faster than any real form on the CPU (docs/performance.md).
            return torch.stack((angles.cos(), angles.sin()), dim=-1).unsqueeze(1)
        return torch.polar(torch.ones_like(angles), angles).unsqueeze(1)

    def vjepa2_tables(self, coords: torch.Tensor) -> torch.Tensor:
        """V-JEPA 2's rotary tables, ``cat([sin, cos], -1)`` ``[B, 1, N, 2 * head_dim]``.

        ``facebookresearch/vjepa2`` builds each axis chunk's angles with ``.repeat(..., 2)``
        instead of ``repeat_interleave(2)`` (kept there for checkpoint compatibility, their PR
        #15): within a chunk of ``axis_dim`` channels, channel ``c`` turns with frequency
        ``inv_freq[c mod axis_dim / 2]``, so the two channels of a pair turn at different
        frequencies and the operation is not a rotation. It cannot be written as the complex
        product of :meth:`rotations`; :func:`jepactl.models.attention.rotate_sincos` applies
        these tables (``x * cos + rot(x) * sin``, their formula).
        """
        angles = coords.to(self.inv_freq.dtype).unsqueeze(-1) * self.inv_freq  # [B, N, 3, F]
        return self._tables(torch.cat((angles, angles), dim=-1).flatten(-2))  # [B, N, 3 * axis_dim]
