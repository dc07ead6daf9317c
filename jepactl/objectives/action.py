"""Action-conditioned terms (paper §3.9: AC-JEPA and FAC-JEPA; reference formula)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.objectives.base import GridView, ModelDims, StepContext, TemporalTokens, Term
from jepactl.objectives.factorized import app_channels, check_app_ratio, check_tokens, zero_loss
from jepactl.objectives.temporal import masked_mean, mean_over_views, time_diff


def patch_mean_motion(clips: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """Per-token RGB patch-mean differences between consecutive tubelets.

    ``μ[b, c, t, h, w]`` = mean of ``clips`` ``[B, C, T, H, W]`` over the tubelet's frames and
    the patch's pixels (``avg_pool3d`` with kernel ``(tubelet, patch, patch)``); returns
    ``μ[t+1] - μ[t]`` as ``[B, T'-1, H', W', C]`` float32, without gradient.
    """
    with torch.no_grad():
        mu = F.avg_pool3d(clips.float(), kernel_size=(tubelet, patch, patch))
        return time_diff(mu.movedim(1, -1))


class ActionConditioned(Term):
    """AC-JEPA / FAC-JEPA: predict per-token pixel motion from the student token at ``t``.

    Target (no gradient, from the normalised pixels ``ctx.clips`` ``[B, 3, T, H, W]``):
    ``a[b, t, h, w, c] = μ[t+1] - μ[t]``, ``μ`` the RGB mean over a token's tubelet frames and
    patch pixels (:func:`patch_mean_motion`), keeping the first ``target_dim`` channels.

    Head (built in :meth:`setup`): ``Linear(D_in -> hidden), GELU, Linear(hidden -> target_dim)``
    on ``z[t]`` over the whole grid ``[B, T'-1, H', W', D_in]``, and

    ``L = mean over valid pairs and the target_dim channels of |head(z[t]) - a[t]|`` (L1; the
    reference's comment says MSE, its code is L1).

    ``input="dynamics"`` (FAC-JEPA): the head reads only ``Z_dyn = z[..., D_app:]``,
    ``D_app = floor(D · app_ratio)``; ``input="all"`` (AC-JEPA): all ``D`` channels.
    Reads ``ctx.views(tokens)``, ``ctx.clips``. With ``T' < 2`` (single-frame images) there is
    no pair and the term is 0. The reference casts the target to bf16; here it stays float32.
    """

    def __init__(
        self,
        weight: float = 1.0,
        hidden: int = 256,
        target_dim: int = 3,
        input: Literal["all", "dynamics"] = "all",
        app_ratio: float = 0.5,
        tokens: TemporalTokens = "context",
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if not 1 <= target_dim <= 3:
            raise ValueError(f"target_dim must be 1, 2 or 3 (RGB channels), got {target_dim}")
        if input not in ("all", "dynamics"):
            raise ValueError(f"input must be 'all' or 'dynamics', got {input!r}")
        check_app_ratio(app_ratio)
        check_tokens(tokens)
        self.hidden = hidden
        self.target_dim = target_dim
        self.input = input
        self.app_ratio = app_ratio
        self.tokens = tokens
        self.head: nn.Sequential | None = None
        self.d_app = 0
        self.patch = 0
        self.tubelet = 0

    def setup(self, dims: ModelDims) -> None:
        d = dims.out_dim
        self.d_app = app_channels(d, self.app_ratio) if self.input == "dynamics" else 0
        self.patch = dims.patch_size
        self.tubelet = dims.tubelet
        self.head = nn.Sequential(
            nn.Linear(d - self.d_app, self.hidden),
            nn.GELU(),
            nn.Linear(self.hidden, self.target_dim),
        )

    def loss(self, ctx: StepContext) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("ActionConditioned.setup(dims) must run before loss()")
        head = self.head
        views = ctx.views(self.tokens)
        if ctx.clips.shape[2] // self.tubelet < 2:
            return zero_loss(views)
        target = patch_mean_motion(ctx.clips, self.patch, self.tubelet)[..., : self.target_dim]

        def one(v: GridView) -> torch.Tensor:
            z = v.z[:, :-1, ..., self.d_app :]
            if target.shape[:4] != z.shape[:4]:
                raise ValueError(
                    f"pixel motion grid {tuple(target.shape[1:4])} does not match the token "
                    f"grid {tuple(z.shape[1:4])} (patch {self.patch}, tubelet {self.tubelet})"
                )
            return masked_mean((head(z).float() - target).abs(), v.pairs)

        return mean_over_views(one, views)
