"""SIGReg: sliced Epps-Pulley test of the student tokens against an isotropic Gaussian (paper
§3.4, LeJEPA)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from jepactl.objectives.base import ModelDims, StepContext, Term
from jepactl.utils import derive_seed


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Differentiable SUM over ranks: the backward pass sums the ranks' gradients, so every
    rank's input receives the gradient of the (rank-identical) loss. A plain ``dist.all_reduce``
    would leave the gradient ``1/world_size`` too small (lightly#1920)."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, op=dist.ReduceOp.SUM)


class SIGReg(Term):
    """Sketched isotropic Gaussian regulariser (LeJEPA's SIGReg, paper §3.4).

    For ``X`` = all student context tokens of all mask groups, flattened to ``[n, D]`` float32
    (``ctx.context_tokens``), and unit directions ``a_s`` (``num_slices`` columns of ``A``
    ``[D, S]``, i.i.d. N(0,1) then normalised, redrawn every step from
    ``derive_seed(ctx.seed, "sigreg", ctx.step)`` on the tokens' device, so identical on every
    rank), with ``y = X a_s``:

        c_s(t) = mean_n cos(t y_n),  s_s(t) = mean_n sin(t y_n)   (over all ranks' tokens)
        stat_s = N · Σ_k w_k [(c_s(t_k) − φ(t_k))² + s_s(t_k)²],  φ(t) = exp(−t²/2)
        L = mean_s stat_s

    ``t_k = linspace(0, t_max, num_points)``; ``w_k`` = trapezoid weights on ``[0, t_max]``,
    doubled to stand for ``[−t_max, t_max]`` (``Δt`` at both ends, ``2Δt`` inside), times
    ``φ(t_k)``. ``N`` is the global token count: under DDP the sums of ``cos`` and ``sin`` and
    the token counts are all-reduced (the sums with an autograd-aware all-reduce), so every rank
    computes the Epps-Pulley statistic of the pooled sample even when ranks hold different
    numbers of tokens (they do: each rank's mask lengths are its own batch minimum). LeJEPA
    scales by ``n_local · W`` with rank-averaged means, which equals this only for equal ``n``.

    The statistic grows with ``n · W`` (thousands at the paper's scale), so a weight of 1.0 makes
    it large next to the L1 prediction loss, as in the reference. The projection runs in float32
    (the reference's matmul runs in bf16 under autocast). There are no parameters.
    """

    # Buffers: quadrature points, the standard normal's characteristic function at them, and
    # the trapezoid weights times it, all [num_points].
    t: torch.Tensor
    phi: torch.Tensor
    weights: torch.Tensor

    def __init__(
        self,
        weight: float = 1.0,
        num_slices: int = 1024,
        num_points: int = 17,
        t_max: float = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(weight, **kwargs)
        if num_slices < 1:
            raise ValueError(f"num_slices must be >= 1, got {num_slices}")
        if num_points < 3 or num_points % 2 == 0:
            raise ValueError(f"num_points must be odd and >= 3, got {num_points}")
        if t_max <= 0:
            raise ValueError(f"t_max must be > 0, got {t_max}")
        self.num_slices = num_slices
        t = torch.linspace(0.0, t_max, num_points)
        phi = torch.exp(-0.5 * t**2)
        dt = t_max / (num_points - 1)
        trapezoid = torch.full((num_points,), 2 * dt)
        trapezoid[[0, -1]] = dt
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("phi", phi, persistent=False)
        self.register_buffer("weights", trapezoid * phi, persistent=False)

    def directions(self, dim: int, seed: int, step: int, device: torch.device) -> torch.Tensor:
        """Unit slice directions ``[dim, num_slices]`` for (seed, step), drawn on ``device``."""
        gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "sigreg", step))
        a = torch.randn(dim, self.num_slices, generator=gen, device=device)
        return a / a.norm(dim=0, keepdim=True)

    def statistic(self, x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Per-slice statistic ``[S]`` of ``x`` ``[n, D]`` along ``directions`` ``[D, S]``."""
        with torch.autocast(x.device.type, enabled=False):
            y = x.float() @ directions.float()  # [n, S]
        t = self.t.float()
        ty = y.unsqueeze(-1) * t  # [n, S, P]
        sums = torch.stack([ty.cos().sum(0), ty.sin().sum(0)])  # [2, S, P]
        count = torch.tensor(float(x.shape[0]), device=x.device)
        if _world_size() > 1:
            sums = _all_reduce_sum(sums)
            dist.all_reduce(count)  # a constant: no gradient needed
        cs = sums / count
        err = (cs[0] - self.phi.float()) ** 2 + cs[1] ** 2
        return count * (err @ self.weights.float())

    def loss(self, ctx: StepContext) -> torch.Tensor:
        x = torch.cat([z.reshape(-1, z.shape[-1]) for z in ctx.context_tokens]).float()
        a = ctx.draws.get(self.name)
        if a is None:  # called on its own, not through the model: draw them here
            a = self.directions(x.shape[-1], ctx.seed, ctx.step, x.device)
        return self.statistic(x, a).mean()

    def setup(self, dims: ModelDims) -> None:
        self.dim = dims.out_dim

    def draw(self, step: int, seed: int, device: torch.device) -> torch.Tensor:
        """This step's slice directions for the encoder's width (drawn from a generator, they
        carry no gradient)."""
        return self.directions(self.dim, seed, step, device)
