"""Factorised world-model terms (paper §3.7-3.8, Eq. 7-10, Algorithm 2 lines 2-8).

The encoder output ``z`` (``D`` channels) is split into an appearance part ``Z_app`` (the first
``D_app = floor(D · app_ratio)`` channels) and a dynamics part ``Z_dyn`` (the rest). With deep
supervision ``D`` is the concatenation of the levels, so the split is by depth (levels 1-2 vs.
3-4 at ratio 0.5), as in the reference code; the paper describes a split of one embedding.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from jepactl.objectives.base import (
    GridView,
    StepContext,
    TemporalTokens,
    Term,
    gather_tokens,
    paired,
)
from jepactl.objectives.temporal import hard_weights, masked_mean, mean_over_views, time_diff


def zero_loss(views: list[GridView]) -> torch.Tensor:
    """A 0 that is still connected to the student tokens (every parameter gets a zero
    gradient, so DDP needs no unused-parameter search): the value of a temporal term on a
    clip with too few time steps (``T' < 2``, e.g. single-frame images), as the reference
    skips those."""
    return mean_over_views(lambda v: v.z.sum() * 0.0, views)


def app_channels(dim: int, app_ratio: float) -> int:
    """``D_app = floor(D · app_ratio)``: how many leading channels form ``Z_app``.

    Raises ``ValueError`` unless both parts are non-empty.
    """
    d_app = int(dim * app_ratio)
    if not 0 < d_app < dim:
        raise ValueError(
            f"app_ratio {app_ratio} splits {dim} channels into {d_app} + {dim - d_app}; "
            "both parts must be non-empty"
        )
    return d_app


def check_app_ratio(app_ratio: float) -> None:
    if not 0.0 < app_ratio < 1.0:
        raise ValueError(f"app_ratio must be in (0, 1), got {app_ratio}")


def check_tokens(tokens: str) -> None:
    if tokens not in ("context", "full"):
        raise ValueError(f"tokens must be 'context' or 'full', got {tokens!r}")


def check_hard_weighting(temperature: float, clip_logits: float | None, error: str) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if clip_logits is not None and clip_logits <= 0:
        raise ValueError(f"clip_logits must be > 0 or None, got {clip_logits}")
    if error not in ("mean", "sum"):
        raise ValueError(f"error must be 'mean' or 'sum', got {error!r}")


class FWMStatic(Term):
    """Appearance stability (paper Eq. 7, Algorithm 2 line 7).

    ``L = mean over valid pairs (b, t, h, w) and the D_app channels of
    |Z_app[b, t+1, h, w] - Z_app[b, t, h, w]|``

    Reads ``ctx.views(tokens)`` (``z`` ``[B, T', H', W', D]``, ``pairs`` ``[B, T'-1, H', W']``);
    averaged over the views (mask groups). ``Z_app = z[..., :floor(D · app_ratio)]``. 0 (still
    connected to the graph) when ``T' < 2``.
    """

    def __init__(
        self,
        weight: float = 0.05,
        app_ratio: float = 0.5,
        tokens: TemporalTokens = "context",
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        check_app_ratio(app_ratio)
        check_tokens(tokens)
        self.app_ratio = app_ratio
        self.tokens = tokens

    def loss(self, ctx: StepContext) -> torch.Tensor:
        views = ctx.views(self.tokens)
        if views[0].z.shape[1] < 2:
            return zero_loss(views)

        def one(v: GridView) -> torch.Tensor:
            d_app = app_channels(v.z.shape[-1], self.app_ratio)
            return masked_mean(time_diff(v.z[..., :d_app].float()).abs(), v.pairs)

        return mean_over_views(one, views)


class FWMOrth(Term):
    """Decorrelation of appearance and dynamics channels (paper Eq. 8, Algorithm 2 line 8).

    ``A = Z_app``, ``B = Z_dyn`` over the ``n`` present tokens of a view (pooled over batch,
    time and space), each column centred over those rows (``A_c``, ``B_c``), then

    - ``normalization="covariance"`` (default; the reference code's value): ``L = mean over the
      D_app x D_dyn entries of (A_cᵀ B_c / max(n - 1, 1))²``, the mean squared
      cross-covariance;
    - ``normalization="tokens"`` (Eq. 8 taken literally): ``L = ||A_cᵀ B_c||_F² / n``.

    Why the default is not the literal formula: App. B says λ_s and λ_o are "deliberately
    small to act as regularizers rather than dominant objectives", which holds for the
    covariance reading and fails by four to five orders of magnitude for the literal one (see
    below), so we read Eq. 8's centred features ``C`` as covariance-normalised.

    The two differ by a factor ``n · D_app · D_dyn / (n - 1)²``. **Scale of the paper's value:**
    for unit-variance, uncorrelated features each entry of ``A_cᵀ B_c`` has variance ``≈ n``, so
    ``||A_cᵀ B_c||_F² / n ≈ D_app · D_dyn`` (measured in the tests: 953 for D = 64 and
    n = 1024, where ``32 · 32 = 1024``). At D = 3072 (ViT-B, 4 levels) that is ``≈ 2.4e6``
    and ``λ_o = 0.01`` gives ``≈ 2.4e4``, four to five orders of magnitude above ``L_JEPA``
    (``≈ 0.3-1``), so the paper's formula taken literally dominates the objective; the
    reference's covariance reading is ``≈ 1 / n`` for such features.

    Reads ``ctx.views(tokens)`` (``z``, ``present``); averaged over the views. Masked sums
    select the present rows (no boolean indexing); the product runs in float32 with autocast
    disabled (the reference's matmul silently ran in bf16).
    """

    def __init__(
        self,
        weight: float = 0.01,
        app_ratio: float = 0.5,
        normalization: Literal["tokens", "covariance"] = "covariance",
        tokens: TemporalTokens = "context",
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        check_app_ratio(app_ratio)
        check_tokens(tokens)
        if normalization not in ("tokens", "covariance"):
            raise ValueError(
                f"normalization must be 'tokens' or 'covariance', got {normalization!r}"
            )
        self.app_ratio = app_ratio
        self.normalization = normalization
        self.tokens = tokens

    def loss(self, ctx: StepContext) -> torch.Tensor:
        def one(v: GridView) -> torch.Tensor:
            d = v.z.shape[-1]
            d_app = app_channels(d, self.app_ratio)
            with torch.autocast(v.z.device.type, enabled=False):
                z = v.z.float().reshape(-1, d)
                m = v.present.reshape(-1, 1).to(z.dtype)
                n = m.sum()
                zc = (z - (z * m).sum(0) / n.clamp_min(1)) * m
                cross = zc[:, :d_app].T @ zc[:, d_app:]
            if self.normalization == "tokens":
                return cross.square().sum() / n.clamp_min(1)
            return (cross / (n - 1).clamp_min(1)).square().mean()

        return mean_over_views(one, ctx.views(self.tokens))


class HardWeightedPrediction(Term):
    """Hard-region weighted JEPA prediction loss (paper Eq. 9-10, Algorithm 2 lines 2-4).

    Per mask group ``j``: per-token error ``e[b, k] = ||P_j[b, k] - h̃[b, M^p_j[b, k]]||₁``
    (channel mean for ``error="mean"``, channel sum for ``"sum"``), weights
    ``w = N · softmax(clip(e / τ))`` (detached; :func:`hard_weights`), and

    ``L = 1/J Σ_j mean_{b,k} w[b, k] · e[b, k]``

    With ``error="mean"`` and ``w ≡ 1`` this is exactly the plain L1 ``jepa`` loss. The term is
    additive: the baseline ``jepa`` term stays in the recipe. Gradients flow only through the
    unweighted error ``e`` (the weights are constants).

    Reads ``ctx.predictions[j].target`` ``[B, M, D]``, ``ctx.targets`` ``[B, N, D]`` and
    ``ctx.masks[j].target`` ``[B, M]``.

    Switches (default = paper reading; reference value in brackets):

    - ``error``: ``"mean"`` [``"mean"``]. The paper writes ``‖·‖₁``, but its L1 loss (Eq. 1) is a
      channel mean in the reference, and App. B's "τ = 1 provides a soft attention over the
      per-token error distribution" only holds at that scale: channel sums of a 768- or
      3072-d error (per-channel errors ≈ 0.3-1) are in the hundreds or thousands, so every
      logit would clip at 20 and the weights would be uniform (without clipping: one-hot).
      ``"sum"`` is the literal-norm reading; it also scales the loss by ``D``.
    - ``clip_logits``: ``20.0`` (App. D) [``None``: the reference does not clip].
    - ``per_sample``: ``True`` [``True``]: the softmax runs over each sample's target tokens
      (the paper does not say over which set; the reference normalises per sample).
    - ``temperature``: τ = 1.0 (Table 7).

    The reference skips a group with fewer than 2 targets; here a single token gets weight 1,
    which gives the same value as plain L1 (no skip). The reference casts the weights to bf16;
    here they stay float32.
    """

    def __init__(
        self,
        weight: float = 0.3,
        temperature: float = 1.0,
        clip_logits: float | None = 20.0,
        error: Literal["mean", "sum"] = "mean",
        per_sample: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        check_hard_weighting(temperature, clip_logits, error)
        self.temperature = temperature
        self.clip_logits = clip_logits
        self.error = error
        self.per_sample = per_sample

    def loss(self, ctx: StepContext) -> torch.Tensor:
        terms = []
        w_max = []
        for p, m in paired(ctx.predictions, ctx.masks):
            err = (p.target.float() - gather_tokens(ctx.targets, m.target).float()).abs()
            e = err.mean(dim=-1) if self.error == "mean" else err.sum(dim=-1)
            mask = torch.ones_like(e, dtype=torch.bool)
            w = hard_weights(e, mask, self.temperature, self.clip_logits, self.per_sample)
            terms.append((w * e).mean())
            w_max.append(w.amax())
        ctx.logs[f"{self.name}_max_weight"] = torch.stack(w_max).amax().detach()
        return torch.stack(terms).mean()
