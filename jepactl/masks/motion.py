"""Motion-guided multi-block masking (paper §3.3 Eq. 4, §3.9 AMG / Motion-Future, App. D).

:class:`MotionGuided3D` is :class:`~jepactl.masks.multiblock.MultiBlock3D` with one change:
block origins are not uniform but favour high-motion placements. Block sizes, the context
window, the empty-context redraw and the length equalisation are those of ``MultiBlock3D``.

**Paper reading (the defaults).** Motion energy per token is the mean L1 difference between
consecutive frames at the patch level (App. D). Per pixel, ``m_f = mean_c |x_{f+1} - x_f|`` in
``[0, 1]`` units (raw uint8 pixels / 255) for ``f = 0..T-2``, a copy of ``m_0`` is prepended to
get ``T`` maps, and each token averages the maps over its tubelet frames and patch pixels
(:func:`motion_energy`). The map is divided by its per-clip maximum (floored at ``1e-6``), so it
lies in ``[0, 1]``. A placement is scored by the motion at the block *centre*, averaged over the
block's time span (``score="center"``; blocks are usually full-length tubes, so guidance is then
purely spatial), and drawn with Eq. 4::

    P(center) ∝ exp(α · ‖frame(t+1) − frame(t)‖)          (sampling="exp")

With probability ``fallback_rate`` (paper: 0.1) a block's origin is uniform instead, to keep
covering static regions. Each block is drawn independently, so that per-block coin flip is the
exact mixture ``(1 - r) · P_motion + r · P_uniform``, which is what is sampled.

**The reference** (``spec/reference-objectives.md`` §3.2) departs from the paper. Two of its
departures are exposed as switches:

- ``sampling="power"``: ``P ∝ max(score, 1e-6)^α``, a power law (``= exp(α · log score)``)
  instead of Eq. 4's exponential.
- ``score="block_mean"``: an origin is scored by the mean motion over the whole block volume
  at that origin (a 3-D box filter), not by the motion at the block's centre. The reference
  samples block *origins* (corners) with this score, which is the same distribution.

``MotionGuided3D(sampling="power", score="block_mean")`` is thus the reference's placement
rule. Not reproduced: the reference computes its map from the augmented, ImageNet-*normalised*
clip (here: the raw uint8 pixels the loader hands over, before normalisation), and resizes the
per-frame maps trilinearly to the token grid, which *point-samples* the motion at patch centres
(pixels 7-8 of each 16-pixel patch, the midpoint of each frame pair) instead of averaging over
the patch as the paper says; here it is always the patch average. It also flips its fallback
coin on the global RNG; here all randomness comes from the step's generator.

Clips without motion (a static image repeated, or one-frame images, ``T == 1``) give an all-zero
map, so every placement ties and placement is uniform, as in the reference.

**Paper variants.** Motion-Guided: ``strength=2.0, fallback_rate=0.1`` (the defaults).
AMG-JEPA: ``strength=5.0, fallback_rate=0.0``. Motion-Future: this strategy with
``max_temporal_keep=0.5`` (context only in the first half of time; the target is the full
complement of the context, ``full_complement=True``), with block counts 4 and 1.

The strategy maps pixels to tokens itself, so ``patch_size`` and ``tubelet`` must be the model's
(the recipe sets them); a clip whose token grid disagrees raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from jepactl.grid import TokenGrid
from jepactl.masks.multiblock import EqualizeMode, LengthMode, MultiBlock3D, _check_int

MotionSampling = Literal["exp", "power"]
MotionScore = Literal["center", "block_mean"]
_SAMPLINGS: tuple[str, ...] = ("exp", "power")
_SCORES: tuple[str, ...] = ("center", "block_mean")
_FLOOR = 1e-6


def motion_energy(clips: torch.Tensor, patch_size: int, tubelet: int) -> torch.Tensor:
    """Per-token motion of uint8 clips ``[B, T, H, W, C]``: float ``[B, T', H', W']`` in [0, 1].

    Mean over each token's tubelet frames and patch pixels of the channel-mean absolute
    difference to the previous frame (in ``[0, 1]`` pixel units; frame 0 reuses the first
    difference), divided by the clip's maximum (floored at ``1e-6``). One-frame clips and clips
    without motion give all zeros.
    """
    if clips.ndim != 5 or clips.dtype != torch.uint8:
        raise ValueError(
            f"clips must be uint8 [B, T, H, W, C], got {clips.dtype} {tuple(clips.shape)}"
        )
    b, t, h, w, c = clips.shape
    grid = TokenGrid.of_clip(t, h, w, patch_size, tubelet)
    if t == 1:
        return torch.zeros(b, grid.t, grid.h, grid.w)
    # |x_{f+1} - x_f| stays in uint8; summing each patch's rows first (a reduction across
    # contiguous rows, in int16 while patch_size * 255 fits) and then its columns and channels
    # avoids float copies of whole clips in the workers.
    nxt, prev = clips[:, 1:], clips[:, :-1]
    diff = torch.maximum(nxt, prev).sub_(torch.minimum(nxt, prev))
    row_dtype = torch.int16 if patch_size * 255 <= torch.iinfo(torch.int16).max else torch.int32
    rows = diff.reshape(b * (t - 1) * grid.h, patch_size, w * c).sum(dim=1, dtype=row_dtype)
    sums = rows.reshape(b, t - 1, grid.h, grid.w, patch_size * c)
    sums = sums.sum(dim=-1, dtype=torch.int32).float()
    sums = torch.cat((sums[:, :1], sums), dim=1)  # frame 0 reuses the first difference
    motion = sums.reshape(b, grid.t, tubelet, grid.h, grid.w).mean(dim=2)
    motion /= 255.0 * c * patch_size * patch_size
    peak = motion.flatten(1).amax(dim=1).clamp_min(_FLOOR)
    return motion / peak[:, None, None, None]


def placement_scores(
    motion: torch.Tensor, size: tuple[int, int, int], score: MotionScore = "center"
) -> torch.Tensor:
    """Score of every valid block origin: ``[B, T', H', W']`` -> ``[B, n_t, n_h, n_w]``.

    ``n = extent - length + 1`` per axis. ``"center"``: the motion at the block's spatial
    centre (the central token of an odd side, the mean of the central two tokens of an even
    side, i.e. the bilinear value at the geometric centre), averaged over the block's time
    span. ``"block_mean"``: the mean motion over the whole block volume.
    """
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}")
    t, h, w = size
    _, grid_t, grid_h, grid_w = motion.shape
    if not (1 <= t <= grid_t and 1 <= h <= grid_h and 1 <= w <= grid_w):
        raise ValueError(f"block size {size} does not fit the motion grid {tuple(motion.shape)}")
    if score == "block_mean":
        return F.avg_pool3d(motion[:, None], (t, h, w), stride=1)[:, 0]
    kh, kw = 2 - h % 2, 2 - w % 2
    pooled = F.avg_pool3d(motion[:, None], (t, kh, kw), stride=1)[:, 0]
    top, left = (h - kh) // 2, (w - kw) // 2
    return pooled[:, :, top : top + grid_h - h + 1, left : left + grid_w - w + 1]


def placement_probs(
    motion: torch.Tensor,
    size: tuple[int, int, int],
    strength: float,
    fallback_rate: float = 0.0,
    sampling: MotionSampling = "exp",
    score: MotionScore = "center",
) -> torch.Tensor:
    """Origin probabilities ``[B, n_t, n_h, n_w]`` (each sample sums to 1).

    ``(1 - r) · P_motion + r / n_origins`` with ``P_motion ∝ exp(α · s)`` (``"exp"``, Eq. 4) or
    ``∝ max(s, 1e-6)^α`` (``"power"``, the reference), where ``s`` is
    :func:`placement_scores` and ``α = strength``. Computed as a softmax of the log-weights,
    so a large ``α`` does not overflow.
    """
    if sampling not in _SAMPLINGS:
        raise ValueError(f"sampling must be one of {_SAMPLINGS}, got {sampling!r}")
    scores = placement_scores(motion, size, score)
    log_weights = scores if sampling == "exp" else scores.clamp_min(_FLOOR).log()
    logits = strength * log_weights
    probs = torch.softmax(logits.flatten(1), dim=1)
    if fallback_rate:
        probs = (1.0 - fallback_rate) * probs + fallback_rate / probs.shape[1]
    return probs.view_as(scores)


class MotionGuided3D(MultiBlock3D):
    """Multi-block 3D masking with motion-guided block placement; see the module docstring.

    Args:
        num_blocks, spatial_scale, temporal_scale, aspect_ratio, max_temporal_keep, equalize,
            max_tries: as for :class:`~jepactl.masks.multiblock.MultiBlock3D`.
        strength: ``α >= 0``; 0 gives uniform placement. Paper: 2.0, AMG: 5.0.
        fallback_rate: probability ``r`` in ``[0, 1]`` that a block is placed uniformly.
            Paper: 0.1, AMG: 0.0.
        sampling: ``"exp"`` (Eq. 4, ``P ∝ exp(α · score)``) or ``"power"`` (the reference,
            ``P ∝ max(score, 1e-6)^α``).
        score: ``"center"`` (motion at the block centre over its time span, the paper) or
            ``"block_mean"`` (mean over the block volume, the reference).
        patch_size, tubelet: the model's, to map pixels to tokens.

    ``clips`` (uint8 ``[B, T, H, W, C]``) is required at call time. Origins for a whole batch
    come from one ``torch.multinomial`` on the batch's ``generator``.
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
        *,
        strength: float = 2.0,
        fallback_rate: float = 0.1,
        sampling: MotionSampling = "exp",
        score: MotionScore = "center",
        patch_size: int = 16,
        tubelet: int = 2,
    ) -> None:
        super().__init__(
            num_blocks=num_blocks,
            spatial_scale=spatial_scale,
            temporal_scale=temporal_scale,
            aspect_ratio=aspect_ratio,
            max_temporal_keep=max_temporal_keep,
            equalize=equalize,
            max_tries=max_tries,
            full_complement=full_complement,
            lengths=lengths,
            fixed_quantile=fixed_quantile,
        )
        self.strength = _check_number("strength", strength, 0.0, math.inf)
        self.fallback_rate = _check_number("fallback_rate", fallback_rate, 0.0, 1.0)
        if sampling not in _SAMPLINGS:
            raise ValueError(f"sampling must be one of {_SAMPLINGS}, got {sampling!r}")
        self.sampling: MotionSampling = sampling
        if score not in _SCORES:
            raise ValueError(f"score must be one of {_SCORES}, got {score!r}")
        self.score: MotionScore = score
        self.patch_size = _check_int("patch_size", patch_size, 1)
        self.tubelet = _check_int("tubelet", tubelet, 1)

    def __repr__(self) -> str:
        return (
            f"{super().__repr__()[:-1]}, strength={self.strength}, "
            f"fallback_rate={self.fallback_rate}, sampling={self.sampling!r}, "
            f"score={self.score!r}, patch_size={self.patch_size}, tubelet={self.tubelet})"
        )

    def motion(self, clips: torch.Tensor | None, grid: TokenGrid) -> torch.Tensor:
        """Checked :func:`motion_energy` of ``clips`` on ``grid``: ``[B, T', H', W']``."""
        if clips is None:
            raise ValueError(
                f"{type(self).__name__} needs the pixels: call it with clips "
                "(uint8 [B, T, H, W, C])"
            )
        if clips.ndim != 5 or clips.dtype != torch.uint8:
            raise ValueError(
                f"{type(self).__name__} needs uint8 clips [B, T, H, W, C], "
                f"got {clips.dtype} {tuple(clips.shape)}"
            )
        _, t, h, w, _ = clips.shape
        try:
            clip_grid = TokenGrid.of_clip(t, h, w, self.patch_size, self.tubelet)
        except ValueError as err:
            raise ValueError(
                f"{self!r} cannot map clips of shape {tuple(clips.shape)} to tokens: {err}; "
                "set patch_size and tubelet to the model's"
            ) from err
        if clip_grid != grid:
            raise ValueError(
                f"clips of shape {tuple(clips.shape)} give the token grid {clip_grid} with "
                f"patch_size={self.patch_size}, tubelet={self.tubelet}, but the mask grid is "
                f"{grid}; set patch_size and tubelet to the model's"
            )
        return motion_energy(clips, self.patch_size, self.tubelet)

    def _draw_starts(
        self,
        batch_size: int,
        grid: TokenGrid,
        size: tuple[int, int, int],
        generator: torch.Generator,
        clips: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        motion = self.motion(clips, grid)
        if motion.shape[0] != batch_size:
            raise ValueError(f"got {motion.shape[0]} clips for a batch of {batch_size}")
        probs = placement_probs(
            motion, size, self.strength, self.fallback_rate, self.sampling, self.score
        )
        _, _, n_h, n_w = probs.shape
        flat = torch.multinomial(
            probs.flatten(1), self.num_blocks, replacement=True, generator=generator
        )
        return flat // (n_h * n_w), (flat // n_w) % n_h, flat % n_w


def _check_number(name: str, value: object, low: float, high: float) -> float:
    """A finite number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be finite and in [{low}, {high}], got {value}")
    return float(value)
