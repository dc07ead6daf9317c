"""The baseline V-JEPA objective: target prediction and distance-weighted context prediction."""

from __future__ import annotations

from typing import Any

import torch

from jepactl.grid import TokenGrid
from jepactl.objectives.base import StepContext, Term, gather_tokens, paired


def regression_error(pred: torch.Tensor, target: torch.Tensor, loss_exp: float) -> torch.Tensor:
    """Elementwise ``|pred - target|^p / p`` in float32 (``p = 1``: plain L1)."""
    diff = (pred.float() - target).abs()
    return diff if loss_exp == 1.0 else diff.pow(loss_exp) / loss_exp


class PredictionLoss(Term):
    """V-JEPA prediction loss (paper Eq. 1, Algorithm 1 line 4).

    ``L = 1/J Σ_j mean_{b,k,c} |P_j[b,k,c] - sg(h̃)[b, M^p_j[b,k], c]|^p / p``

    Reads the predictor's target outputs ``P_j`` ``[B, M, D]`` and the normalised teacher output
    ``h̃`` ``[B, N, D]`` gathered at each group's target indices; ``p = loss_exp`` (1.0: L1).
    """

    def __init__(self, weight: float = 1.0, loss_exp: float = 1.0, **kwargs: Any) -> None:
        super().__init__(weight, **kwargs)
        if loss_exp <= 0:
            raise ValueError(f"loss_exp must be > 0, got {loss_exp}")
        self.loss_exp = loss_exp

    def loss(self, ctx: StepContext) -> torch.Tensor:
        terms = [
            regression_error(p.target, gather_tokens(ctx.targets, m.target), self.loss_exp).mean()
            for p, m in paired(ctx.predictions, ctx.masks)
        ]
        return torch.stack(terms).mean()


def distance_weights(context: torch.Tensor, target: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """``d^(-1/2)``, ``d`` = Euclidean distance from each context token to its nearest target.

    Distances are in token units on the (t, h, w) grid (time counted in tubelets), computed for
    the whole batch at once: ``[B, K, 3] x [B, M, 3] -> [B, K, M] -> min``. Context and target
    are disjoint, so ``d >= 1``. Returns ``[B, K]`` float32.
    """
    d = torch.cdist(grid.coords(context).float(), grid.coords(target).float())
    return d.amin(dim=-1).clamp_min(1.0).rsqrt()


class ContextLoss(Term):
    """Distance-weighted context loss (V-JEPA 2.1 dense prediction; paper §3.1, Table 1).

    ``L = 1/J Σ_j mean_{b,k,c} w_j[b,k] |C_j[b,k,c] - sg(h̃)[b, M^e_j[b,k], c]|^p / p``,
    ``w_j[b,k] = d_j[b,k]^(-1/2)`` with ``d`` the distance to the nearest target token.

    Reads the predictor's context outputs ``C_j`` ``[B, K, D]``, the teacher output at the
    context indices and both index sets. The weights are not renormalised (as in the reference).
    The reference ramps λ from 0 at step 15,000 to 0.5 at step 30,000 (``warmup_start``,
    ``warmup_end``).
    """

    needs_context_predictions = True

    def __init__(self, weight: float = 0.5, loss_exp: float = 1.0, **kwargs: Any) -> None:
        super().__init__(weight, **kwargs)
        if loss_exp <= 0:
            raise ValueError(f"loss_exp must be > 0, got {loss_exp}")
        self.loss_exp = loss_exp

    def loss(self, ctx: StepContext) -> torch.Tensor:
        terms = []
        for p, m in paired(ctx.predictions, ctx.masks):
            if p.context is None:
                raise RuntimeError("ContextLoss needs a predictor built with predict_context")
            err = regression_error(p.context, gather_tokens(ctx.targets, m.context), self.loss_exp)
            w = distance_weights(m.context, m.target, ctx.grid)
            terms.append((err.mean(dim=-1) * w).mean())
        return torch.stack(terms).mean()
