"""Honest model selection: a held-out slice of the *training* clips picks the head.

An lr x wd grid of heads trains at once, every head fed the same batch, so the cache is read
once per epoch for the whole grid. A seeded ``holdout`` fraction of the training clips is kept
out of training and picks the head; only then is the val cache opened, and only the selected
head is scored on it. (The reference's UCF sweep and V-JEPA 2's multi-head eval report the
best head on val, which overstates accuracy.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from jepactl.probe.result import topk_accuracy
from jepactl.utils import derive_seed


def mean_nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of ``labels`` under ``probs`` ``[n, C]``."""
    if len(labels) == 0:
        return float("nan")
    p = probs.gather(1, labels.unsqueeze(1)).clamp_min(1e-12)
    return -p.log().mean().item()


def split_holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``n`` clip rows into (train, holdout), both sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {fraction}")
    n_hold = round(fraction * n)
    if n_hold < 1 or n_hold >= n:
        raise ValueError(f"holdout={fraction} of {n} training clips leaves an empty side")
    g = torch.Generator().manual_seed(derive_seed(seed, "probe-holdout"))
    perm = torch.randperm(n, generator=g)
    return torch.sort(perm[n_hold:]).values, torch.sort(perm[:n_hold]).values


def select(
    configs: Sequence[tuple[float, float]],
    hold_probs: Sequence[torch.Tensor],
    hold_labels: torch.Tensor,
    losses: Sequence[float],
    holdout: float,
) -> tuple[int, dict[str, Any]]:
    """The index of the best head on the holdout and the sweep's record (every grid point).

    Best held-out top-1; ties go to the lower held-out NLL, then to grid order.
    """
    grid = [
        {
            "lr": lr,
            "wd": wd,
            "holdout_top1": round(topk_accuracy(p, hold_labels, 1), 4),
            "holdout_nll": round(mean_nll(p, hold_labels), 6),
            "train_loss": loss,
        }
        for (lr, wd), p, loss in zip(configs, hold_probs, losses, strict=True)
    ]
    best = min(
        range(len(grid)), key=lambda i: (-grid[i]["holdout_top1"], grid[i]["holdout_nll"], i)
    )
    record = {
        "selection_split": "train-holdout",
        "holdout_fraction": holdout,
        "n_holdout": len(hold_labels),
        "grid": grid,
        "selected": dict(grid[best]),
    }
    return best, record
