"""Physics-inspired latent dynamics: Hamiltonian-JEPA and velocity-gated kinematics (paper §3.5)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from jepactl.objectives.base import GridView, ModelDims, StepContext, TemporalTokens, Term
from jepactl.objectives.factorized import zero_loss
from jepactl.objectives.temporal import masked_mean, mean_over_views, time_diff


@torch.compiler.disable(reason="a double backward (autograd.grad, create_graph) in the step")
def symplectic_euler_step(
    energy: nn.Module, q: torch.Tensor, p: torch.Tensor, dt: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One explicit "symplectic Euler" step of ``H = Σ_tokens energy([q; p])``:
    ``q' = q + dt ∂H/∂p(q, p)``, ``p' = p − dt ∂H/∂q(q', p)``.

    Gradients are taken with ``create_graph=True`` so that the loss on ``(q', p')`` trains the
    energy net and the inputs through second-order terms. ``q``/``p`` ``[..., D/2]``. Under
    ``train.compile`` this step runs eagerly between two compiled graphs: Dynamo does not
    trace a double backward.
    """
    with torch.enable_grad():
        if not q.requires_grad:
            q = q.detach().requires_grad_()
        if not p.requires_grad:
            p = p.detach().requires_grad_()

        def total(q_: torch.Tensor, p_: torch.Tensor) -> torch.Tensor:
            return energy(torch.cat([q_, p_], dim=-1)).float().sum()

        (dh_dp,) = torch.autograd.grad(total(q, p), p, create_graph=True)
        q1 = q + dt * dh_dp
        (dh_dq,) = torch.autograd.grad(total(q1, p), q1, create_graph=True)
        return q1, p - dt * dh_dq


class Hamiltonian(Term):
    """Hamiltonian-JEPA (paper §3.5): one step of a learned Hamiltonian flow predicts the
    teacher at ``t + 1``.

    The student token ``z_t`` ``[D]`` splits into position ``q`` (first ``D/2`` channels) and
    momentum ``p`` (last ``D/2``). ``H(q, p) = Σ_tokens E([q; p])`` with the energy MLP
    ``E: D → hidden → GELU → hidden → GELU → 1`` (built in :meth:`setup`). Then

        q' = q + dt · ∂H/∂p (q, p),     p' = p − dt · ∂H/∂q (q', p)
        L  = mean_Π |q' − q*| + mean_Π |p' − p*|

    with ``(q*, p*)`` the halves of ``ctx.target_grid`` at ``t + 1`` and ``Π`` the valid
    ``(t, t+1)`` pairs of ``ctx.views(tokens)``, averaged over views; the means run over ``Π``
    and the ``D/2`` channels. Gradients reach the encoder and the energy net through
    second-order autograd (``create_graph=True``).

    What this integrator is: the explicit "symplectic Euler" splitting. It is symplectic only
    for a separable ``H = T(p) + V(q)``; for the non-separable learned MLP it is neither
    symplectic nor energy-conserving, and nothing forces ``H`` to be conserved. In effect the
    term is a learned next-step predictor ``z_{t+1} ≈ z_t + dt · J∇H(z_t)`` with a
    gradient-field parametrisation. With deep supervision, ``q``/``p`` are the shallower and the
    deeper half of the levels (as in the reference, which splits its 3072-d output).

    Because ``H`` is a sum of per-token energies, ``∂H/∂z`` of a token depends on that token
    only: the step runs on the whole grid (zeros off the context) and the loss is masked, which
    equals the reference's computation on the valid pairs.
    """

    def __init__(
        self,
        weight: float = 1.0,
        dt: float = 0.1,
        hidden: int = 256,
        tokens: TemporalTokens = "context",
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        if dt <= 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if tokens not in ("context", "full"):
            raise ValueError(f"tokens must be 'context' or 'full', got {tokens!r}")
        self.dt = dt
        self.hidden = hidden
        self.tokens = tokens
        self.energy: nn.Module | None = None

    def setup(self, dims: ModelDims) -> None:
        if dims.out_dim % 2:
            raise ValueError(f"Hamiltonian needs an even encoder width, got {dims.out_dim}")
        self.energy = nn.Sequential(
            nn.Linear(dims.out_dim, self.hidden),
            nn.GELU(),
            nn.Linear(self.hidden, self.hidden),
            nn.GELU(),
            nn.Linear(self.hidden, 1),
        )

    def view_loss(self, view: GridView, target: torch.Tensor, energy: nn.Module) -> torch.Tensor:
        z = view.z.float()
        half = z.shape[-1] // 2
        q, p = z[:, :-1, ..., :half], z[:, :-1, ..., half:]
        q1, p1 = symplectic_euler_step(energy, q, p, self.dt)
        nxt = target[:, 1:]
        pairs = view.pairs
        return masked_mean((q1 - nxt[..., :half]).abs(), pairs) + masked_mean(
            (p1 - nxt[..., half:]).abs(), pairs
        )

    def loss(self, ctx: StepContext) -> torch.Tensor:
        energy = self.energy
        if energy is None:
            raise RuntimeError("Hamiltonian.setup(dims) must run before the loss")
        views = ctx.views(self.tokens)
        if views[0].z.shape[1] < 2:  # one-frame clips: no next step to predict
            return zero_loss(views)
        target = ctx.target_grid
        return mean_over_views(lambda v: self.view_loss(v, target, energy), views)


class VelGate(Term):
    """Velocity-gated kinematic penalty (VelGate, paper §3.5): first differences of the student
    tokens, penalised only at low-velocity ("background") positions.

        v[b,t,h,w] = ‖h̃_{t+1} − h̃_t‖₂ over channels           (teacher, no gradient)
        θ[b,t]     = quantile_{percentile} of v[b,t] over all H'×W' positions (linear interp.)
        g          = v ≤ θ
        L          = Σ_Π g · mean_c |z_{t+1} − z_t| / |Π|

    Reads ``ctx.target_grid`` (the gate) and ``ctx.views(tokens)`` (the penalised student
    tokens; ``Π`` = their valid ``(t, t+1)`` pairs), averaged over views. The threshold covers
    all positions, not only the context ones, and carries no gradient.

    Switches (default = paper; the paper is silent on the normaliser, so the default follows the
    reference):
        normalize: ``"all"`` divides by all valid pairs, gated-out ones included (the reference,
            which roughly halves the effective weight at percentile 0.5); ``"gated"`` divides by
            the gated valid pairs only (a plain mean over the background).
    """

    def __init__(
        self,
        weight: float = 1.0,
        percentile: float = 0.5,
        normalize: Literal["all", "gated"] = "all",
        tokens: TemporalTokens = "context",
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        if not 0.0 <= percentile <= 1.0:
            raise ValueError(f"percentile must be in [0, 1] (a quantile), got {percentile}")
        if normalize not in ("all", "gated"):
            raise ValueError(f"normalize must be 'all' or 'gated', got {normalize!r}")
        if tokens not in ("context", "full"):
            raise ValueError(f"tokens must be 'context' or 'full', got {tokens!r}")
        self.percentile = percentile
        self.normalize = normalize
        self.tokens = tokens

    def gate(self, target_delta: torch.Tensor) -> torch.Tensor:
        """``[B, T'-1, H', W']`` bool: teacher velocity ``‖h[t+1] - h[t]‖₂`` (from the
        targets' temporal differences ``[B, T'-1, H', W', D]``) at or below the per-(b, t)
        quantile."""
        with torch.no_grad():
            v = target_delta.float().norm(dim=-1)  # [B, T-1, H, W]
            flat = v.flatten(2)
            theta = torch.quantile(flat, self.percentile, dim=-1, keepdim=True)
            return (flat <= theta).view_as(v)

    def view_loss(self, view: GridView, gate: torch.Tensor) -> torch.Tensor:
        err = time_diff(view.z.float()).abs()
        pairs = view.pairs
        if self.normalize == "gated":
            return masked_mean(err, pairs & gate)
        return masked_mean(err * gate.unsqueeze(-1), pairs)

    def loss(self, ctx: StepContext) -> torch.Tensor:
        views = ctx.views(self.tokens)
        if views[0].z.shape[1] < 2:  # one-frame clips: no velocity to gate on
            return zero_loss(views)
        gate = self.gate(ctx.target_delta)
        return mean_over_views(lambda v: self.view_loss(v, gate), views)
