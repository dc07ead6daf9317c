"""Latent-dynamics terms (paper §3.6 and §3.8, Eq. 5, 6, 11; Algorithm 2 lines 9-13).

All four read the student tokens on the token grid (``ctx.views(tokens)``: each mask group's
context tokens scattered onto the grid, or one full-clip forward) and the normalised targets
``h = ctx.target_grid`` ``[B, T', H', W', D]`` with a stop-gradient. Per-view losses are averaged
over the views (mask groups), as the reference averages over its mask configurations. On
clips with fewer time steps than a term needs (``T' < 2``, e.g. single-frame images; Spectral:
``T' < 4``) the term is 0, still connected to the graph, as the reference skips it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.objectives.base import GridView, ModelDims, StepContext, TemporalTokens, Term
from jepactl.objectives.factorized import (
    app_channels,
    check_app_ratio,
    check_hard_weighting,
    check_tokens,
    zero_loss,
)
from jepactl.objectives.temporal import hard_weights, masked_mean, mean_over_views, time_diff


class Delta(Term):
    """Delta-JEPA (paper Eq. 5): student temporal differences match the teacher's.

    ``L = mean over valid pairs (b, t, h, w) and channels of
    |(z[t+1] - z[t]) - sg(h[t+1] - h[t])|``

    Reads ``ctx.views(tokens)`` (``z`` ``[B, T', H', W', D]``, ``pairs``) and
    ``ctx.target_grid``. No ``loss_exp`` (the reference uses plain L1 here).
    """

    def __init__(
        self, weight: float = 0.5, tokens: TemporalTokens = "context", **kwargs: Any
    ) -> None:
        super().__init__(weight, **kwargs)
        check_tokens(tokens)
        self.tokens = tokens

    def loss(self, ctx: StepContext) -> torch.Tensor:
        views = ctx.views(self.tokens)
        if views[0].z.shape[1] < 2:
            return zero_loss(views)
        dh = ctx.target_delta

        def one(v: GridView) -> torch.Tensor:
            return masked_mean((time_diff(v.z.float()) - dh).abs(), v.pairs)

        return mean_over_views(one, views)


class LatentDynamics(Term):
    """LD-JEPA (paper Eq. 6) and its hard-weighted form LD-HW (Eq. 11, Algorithm 2 l. 9-13).

    A dynamics head ``DynHead = Linear(D_in -> hidden), GELU, Linear(hidden -> D)`` (built in
    :meth:`setup`) predicts the teacher's temporal difference from the student token at ``t``:
    ``Δ̂ = DynHead(z[t])``, ``Δh = sg(h[t+1] - h[t])``, both ``[B, T'-1, H', W', D]``. The head
    runs on the whole grid; the loss reads only the valid pairs. Per-token error
    ``e = ||Δ̂ - Δh||₁`` (channel mean or sum, see ``error``).

    - ``hard_weighting=False`` (LD): ``L = mean over valid pairs of e`` (for ``error="mean"``:
      the mean over valid pairs and channels of ``|Δ̂ - Δh|``).
    - ``hard_weighting=True`` (LD-HW): ``w = N · softmax(clip(e / τ))`` over the valid tokens
      (detached, :func:`hard_weights`), ``L = mean over valid pairs of w · e``. Same
      normalisation as LD, so ``w ≡ 1`` gives LD exactly.

    ``input="dynamics"`` (FWM-HW-LD, App. D): the head reads only ``Z_dyn = z[..., D_app:]``,
    ``D_app = floor(D · app_ratio)`` (a tensor slice before the first linear, ``D_in = D -
    D_app``); ``input="all"`` (LD-JEPA) reads all ``D`` channels.

    Switches (default = paper reading; reference value in brackets):

    - ``error``: ``"mean"`` [``"mean"``]. The paper's ``‖·‖₁`` is implemented as a channel mean,
      which is what its L1 loss (Eq. 1) is, and App. B's "τ = 1 provides a soft attention over
      the per-token error distribution" only holds at that scale: channel sums of a 768- or
      3072-d error are in the hundreds or thousands, so every logit would clip at 20 and the
      weights would be uniform. ``"sum"`` is the literal-norm reading (it also scales the LD
      value by ``D``).
    - ``clip_logits``: ``20.0`` (App. D) [``None``].
    - ``per_sample``: ``False`` [``False``]: one softmax over all valid tokens of the batch and
      all time steps (the reference's pooling; the paper is silent); ``True``: per sample.
    - ``reference_no_grad``: ``False`` [``True`` in the reference's LD-HW runs].
      **Reproduction only.** The reference computes the whole LD-HW value under
      ``torch.no_grad``, so it is a logged constant: the encoder gets no LD signal and the
      dynamics head never trains. This switch reproduces that (the head is also frozen, so the
      optimiser and DDP ignore it, as they saw no gradient for it in the reference). It
      requires ``hard_weighting=True``: plain LD had gradients in the reference.
    """

    def __init__(
        self,
        weight: float = 1.0,
        hidden: int = 256,
        input: Literal["all", "dynamics"] = "all",
        app_ratio: float = 0.5,
        hard_weighting: bool = False,
        temperature: float = 1.0,
        clip_logits: float | None = 20.0,
        error: Literal["mean", "sum"] = "mean",
        per_sample: bool = False,
        reference_no_grad: bool = False,
        tokens: TemporalTokens = "context",
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if input not in ("all", "dynamics"):
            raise ValueError(f"input must be 'all' or 'dynamics', got {input!r}")
        check_app_ratio(app_ratio)
        check_hard_weighting(temperature, clip_logits, error)
        check_tokens(tokens)
        if reference_no_grad and not hard_weighting:
            raise ValueError(
                "reference_no_grad reproduces the reference's gradient-free LD-HW branch; "
                "it needs hard_weighting=True"
            )
        self.hidden = hidden
        self.input = input
        self.app_ratio = app_ratio
        self.hard_weighting = hard_weighting
        self.temperature = temperature
        self.clip_logits = clip_logits
        self.error = error
        self.per_sample = per_sample
        self.reference_no_grad = reference_no_grad
        self.tokens = tokens
        self.head: nn.Sequential | None = None
        self.d_app = 0

    def setup(self, dims: ModelDims) -> None:
        d = dims.out_dim
        self.d_app = app_channels(d, self.app_ratio) if self.input == "dynamics" else 0
        self.head = nn.Sequential(
            nn.Linear(d - self.d_app, self.hidden), nn.GELU(), nn.Linear(self.hidden, d)
        )
        if self.reference_no_grad:
            self.head.requires_grad_(False)

    def loss(self, ctx: StepContext) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("LatentDynamics.setup(dims) must run before loss()")
        head = self.head
        # Fetch the cached views and targets outside any no_grad scope: other terms share them.
        views = ctx.views(self.tokens)
        if views[0].z.shape[1] < 2:
            return zero_loss(views)
        dh = ctx.target_delta
        w_max: list[torch.Tensor] = []

        def one(v: GridView) -> torch.Tensor:
            pred = head(v.z[:, :-1, ..., self.d_app :]).float()
            err = (pred - dh).abs()
            e = err.mean(dim=-1) if self.error == "mean" else err.sum(dim=-1)
            if not self.hard_weighting:
                return masked_mean(e, v.pairs)
            w = hard_weights(e, v.pairs, self.temperature, self.clip_logits, self.per_sample)
            w_max.append(w.amax())
            return masked_mean(w * e, v.pairs)

        if self.reference_no_grad:
            with torch.no_grad():
                out = mean_over_views(one, views)
        else:
            out = mean_over_views(one, views)
        if w_max:
            ctx.logs[f"{self.name}_max_weight"] = torch.stack(w_max).amax().detach()
        return out


class Spectral(Term):
    """Spectral-JEPA (paper §3.6; reference formula): frequency-weighted L1 of temporal spectra.

    At the spatial positions present at every time step (``S[b, h, w] = all_t present``):
    ``F(x)_f`` = unnormalised rFFT over time (``f = 0 .. T'/2``), ``ω = linspace(0.1, 1, bins)``
    (DC to Nyquist), and

    ``L = mean over S, bins f and channels of ω_f · |F(z)_f - F(sg(h))_f|`` (complex modulus).

    Reads ``ctx.views(tokens)`` (``z``, ``present``) and ``ctx.target_grid``. Needs ``T' >= 4``;
    with fewer time steps the term is 0 (still connected to the graph), as the reference skips
    it. Positions whose tube is cut short (batch-minimum truncation) are excluded.
    """

    min_steps = 4

    def __init__(
        self, weight: float = 1.0, tokens: TemporalTokens = "context", **kwargs: Any
    ) -> None:
        super().__init__(weight, **kwargs)
        check_tokens(tokens)
        self.tokens = tokens

    def loss(self, ctx: StepContext) -> torch.Tensor:
        views = ctx.views(self.tokens)
        h = ctx.target_grid.detach().float()
        if h.shape[1] < self.min_steps:
            return zero_loss(views)
        fh = torch.fft.rfft(h, dim=1)
        omega = torch.linspace(0.1, 1.0, fh.shape[1], device=h.device)

        def one(v: GridView) -> torch.Tensor:
            diff = (torch.fft.rfft(v.z.float(), dim=1) - fh).abs()  # [B, bins, H, W, D]
            weighted = diff * omega.view(1, -1, 1, 1, 1)
            return masked_mean(weighted.movedim(1, 3), v.present.all(dim=1))

        return mean_over_views(one, views)


class LTC(Term):
    """LTC-JEPA (paper §3.6; reference formula): latent temporal contrast with a margin.

    On valid pairs: ``s⁺ = cos(z[t], h[t])``, ``s⁻ = cos(z[t], h[t+1])`` (over channels,
    eps 1e-8; ``h`` stop-gradded), and

    ``L = mean over valid pairs of max(0, margin - s⁺ + s⁻)``

    Reads ``ctx.views(tokens)`` (``z``, ``pairs``) and ``ctx.target_grid``.
    """

    def __init__(
        self,
        weight: float = 0.5,
        margin: float = 0.5,
        tokens: TemporalTokens = "context",
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        check_tokens(tokens)
        self.margin = margin
        self.tokens = tokens

    def loss(self, ctx: StepContext) -> torch.Tensor:
        views = ctx.views(self.tokens)
        if views[0].z.shape[1] < 2:
            return zero_loss(views)
        h = ctx.target_grid.detach().float()

        def one(v: GridView) -> torch.Tensor:
            z = v.z[:, :-1].float()
            pos = F.cosine_similarity(z, h[:, :-1], dim=-1, eps=1e-8)
            neg = F.cosine_similarity(z, h[:, 1:], dim=-1, eps=1e-8)
            return masked_mean(F.relu(self.margin - pos + neg), v.pairs)

        return mean_over_views(one, views)
