"""Shared helpers for terms over the token grid: masked means and hard-region weights.

Everything here avoids boolean indexing (which needs the number of selected elements on the
host, i.e. a GPU synchronisation): positions are selected by multiplying with masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from jepactl.objectives.base import GridView


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``[*S, *C]`` over the positions where ``mask`` ``[*S]`` is set and
    over all trailing channels ``C``; 0 (with gradient) if nothing is selected."""
    m = mask.to(values.dtype).reshape(*mask.shape, *([1] * (values.dim() - mask.dim())))
    channels = math.prod(values.shape[mask.dim() :])
    return (values * m).sum() / (mask.sum() * channels).clamp_min(1)


def time_diff(x: torch.Tensor) -> torch.Tensor:
    """``x[:, t + 1] - x[:, t]`` along the time axis (dim 1) of a grid tensor."""
    return x[:, 1:] - x[:, :-1]


def mean_over_views(fn: Callable[[GridView], torch.Tensor], views: list[GridView]) -> torch.Tensor:
    """Average a per-view loss over the views (mask groups), as the reference averages over
    the (fpc group, mask) pairs."""
    return torch.stack([fn(v) for v in views]).mean()


def hard_weights(
    errors: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    clip_logits: float | None,
    per_sample: bool,
) -> torch.Tensor:
    """Hard-region weights of paper Eq. 9, detached: ``w_i = N · softmax(e_i / τ)``.

    ``errors``: per-token errors ``[B, ...]``; ``mask``: which tokens take part (same shape).
    The softmax runs over the selected tokens of each sample (``per_sample``) or of the whole
    batch; logits are clipped to ``[-clip, clip]`` (paper App. D; ``None`` = no clipping, the
    reference code). ``N`` is the number of selected tokens in the softmax, so the weights
    average 1 over them. Unselected positions get weight 0.
    """
    with torch.no_grad():
        logits = errors.float() / max(temperature, 1e-6)
        if clip_logits is not None:
            logits = logits.clamp(-clip_logits, clip_logits)
        start = 1 if per_sample else 0  # softmax over each sample's tokens, or all of them
        dims = tuple(range(start, errors.dim()))
        logits = logits.masked_fill(~mask, float("-inf"))
        # A group with no selected token would be all -inf; keep it finite (its weights are 0).
        logits = torch.where(mask.any(dim=dims, keepdim=True), logits, torch.zeros_like(logits))
        probs = torch.softmax(logits.flatten(start), dim=-1).view_as(errors) * mask
        count = mask.sum(dim=dims, keepdim=True).clamp_min(1)
        return probs * count
