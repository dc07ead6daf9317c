from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from jepactl.config import validate_kwargs
from jepactl.grid import Masks
from jepactl.models import Predictor, VideoViT
from jepactl.objectives.base import GridView, ModelDims, StepContext
from jepactl.objectives.kinematic import Kinematic
from jepactl.objectives.physics import Hamiltonian, VelGate, symplectic_euler_step

B, T, H, W, D = 2, 4, 2, 3, 6
HALF = D // 2


def make_ctx(target: torch.Tensor, views: list[GridView]) -> StepContext:
    student = VideoViT(embed_dim=32, depth=1, num_heads=2, patch_size=8)
    pred = Predictor(in_dim=32, dim=16, depth=1, num_heads=2)
    masks = [Masks(torch.tensor([[0], [0]]), torch.tensor([[1], [1]]))]
    clips = torch.zeros(B, 3, 4, 16, 16)
    ctx = StepContext(clips, masks, step=0, student=student, predictor=pred, teacher=None)
    ctx.__dict__["target_grid"] = target
    ctx.__dict__["context_views"] = views
    return ctx


def random_inputs(seed: int) -> tuple[torch.Tensor, list[GridView]]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(B, T, H, W, D, generator=gen)
    views = []
    for _ in range(2):
        z = torch.randn(B, T, H, W, D, generator=gen).requires_grad_()
        views.append(GridView(z, torch.rand(B, T, H, W, generator=gen) < 0.7))
    return target, views


def pair_positions(present: torch.Tensor) -> list[tuple[int, int, int, int]]:
    return [
        (b, t, h, w)
        for b, t, h, w in itertools.product(range(B), range(T - 1), range(H), range(W))
        if present[b, t, h, w] and present[b, t + 1, h, w]
    ]


class Quadratic(nn.Module):
    """Per-token non-separable energy ``α|q|²/2 + β|p|²/2 + γ q·p``."""

    def __init__(self, alpha: float, beta: float, gamma: float) -> None:
        super().__init__()
        self.alpha, self.beta, self.gamma = alpha, beta, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, p = x[..., :HALF], x[..., HALF:]
        e = self.alpha * (q * q).sum(-1) / 2 + self.beta * (p * p).sum(-1) / 2
        return (e + self.gamma * (q * p).sum(-1)).unsqueeze(-1)


def test_step_equals_the_closed_form_for_linear_and_quadratic_energies() -> None:
    gen = torch.Generator().manual_seed(0)
    q, p = torch.randn(5, HALF, generator=gen), torch.randn(5, HALF, generator=gen)
    dt = 0.3
    linear = nn.Linear(D, 1)  # H = Σ a·[q; p] + c: ∂H/∂p = a_p, ∂H/∂q = a_q
    q1, p1 = symplectic_euler_step(linear, q, p, dt)
    a = linear.weight.detach()[0]
    torch.testing.assert_close(q1, q + dt * a[HALF:])
    torch.testing.assert_close(p1, p - dt * a[:HALF])
    # Non-separable: ∂H/∂q must be taken at the updated q'.
    alpha, beta, gamma = 0.7, 1.3, 0.4
    q1, p1 = symplectic_euler_step(Quadratic(alpha, beta, gamma), q, p, dt)
    q_ref = q + dt * (beta * p + gamma * q)
    torch.testing.assert_close(q1, q_ref)
    torch.testing.assert_close(p1, p - dt * (alpha * q_ref + gamma * p))


def test_hamiltonian_loss_is_masked_l1_of_the_step_against_the_next_teacher() -> None:
    target, views = random_inputs(1)
    ctx = make_ctx(target, views)
    alpha, beta, gamma, dt = 0.5, 0.8, -0.3, 0.2
    term = Hamiltonian(dt=dt)
    term.setup(ModelDims(out_dim=D, level_dim=D, patch_size=8, tubelet=2))
    term.energy = Quadratic(alpha, beta, gamma)
    got = term.loss(ctx)

    per_view = []
    for v in views:
        total_q, total_p, pairs = 0.0, 0.0, pair_positions(v.present)
        for b, t, h, w in pairs:
            q, p = v.z[b, t, h, w, :HALF], v.z[b, t, h, w, HALF:]
            q1 = q + dt * (beta * p + gamma * q)
            p1 = p - dt * (alpha * q1 + gamma * p)
            total_q = total_q + (q1 - target[b, t + 1, h, w, :HALF]).abs().sum()
            total_p = total_p + (p1 - target[b, t + 1, h, w, HALF:]).abs().sum()
        per_view.append((total_q + total_p) / (len(pairs) * HALF))
    expected = torch.stack(per_view).mean()
    torch.testing.assert_close(got, expected)
    (g_got,) = torch.autograd.grad(got, views[0].z)
    (g_ref,) = torch.autograd.grad(expected, views[0].z)
    torch.testing.assert_close(g_got, g_ref)


def test_hamiltonian_gradient_reaches_the_energy_net_and_student_tokens_only() -> None:
    target, views = random_inputs(2)
    ctx = make_ctx(target, views)
    term = Hamiltonian(hidden=16)
    term.setup(ModelDims(out_dim=D, level_dim=D, patch_size=8, tubelet=2))
    assert term.energy is not None
    term.loss(ctx).backward()
    layers = [m for m in term.energy if isinstance(m, nn.Linear)]
    for layer in layers:  # second-order gradients train the whole net ...
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # ... except the output bias, which shifts H but not its gradient.
    assert layers[-1].bias.grad is None or torch.all(layers[-1].bias.grad == 0)
    assert not ctx.target_grid.requires_grad
    for v in views:
        assert v.z.grad is not None
        pairs = v.present[:, :-1] & v.present[:, 1:]
        # Only the token at t of a valid pair is an input; z_{t+1} is the teacher's job.
        assert torch.all(v.z.grad[:, :-1][~pairs] == 0)
        assert torch.all(v.z.grad[:, -1] == 0)
        assert torch.all(v.z.grad[:, :-1][pairs].abs().sum(-1) > 0)


def test_hamiltonian_works_on_tokens_without_grad_and_under_no_grad() -> None:
    target, views = random_inputs(3)
    views = [GridView(v.z.detach(), v.present) for v in views]
    term = Hamiltonian(hidden=8)
    term.setup(ModelDims(out_dim=D, level_dim=D, patch_size=8, tubelet=2))
    loss = term.loss(make_ctx(target, views))
    loss.backward()
    assert term.energy is not None and term.energy[0].weight.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(term.loss(make_ctx(target, views)), loss.detach())


def test_hamiltonian_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="even"):
        Hamiltonian().setup(ModelDims(out_dim=5, level_dim=5, patch_size=8, tubelet=2))
    with pytest.raises(RuntimeError, match="setup"):
        Hamiltonian().loss(make_ctx(*random_inputs(4)))
    for kwargs in ({"dt": 0.0}, {"hidden": 0}, {"tokens": "all"}):
        with pytest.raises(ValueError):
            Hamiltonian(**kwargs)
    params = {"dt": 0.05, "hidden": 64, "tokens": "full"}
    assert validate_kwargs(Hamiltonian, params, "terms.ham") == params


def loop_quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile, written out."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def loop_velgate(
    target: torch.Tensor, views: list[GridView], percentile: float, normalize: str
) -> torch.Tensor:
    gate = {}
    for b, t in itertools.product(range(B), range(T - 1)):
        v = {
            (h, w): float((target[b, t + 1, h, w] - target[b, t, h, w]).norm())
            for h, w in itertools.product(range(H), range(W))
        }
        theta = loop_quantile(list(v.values()), percentile)
        for hw, vel in v.items():
            gate[(b, t, *hw)] = vel <= theta
    out = []
    for view in views:
        pairs = pair_positions(view.present)
        total = sum(
            (view.z[b, t + 1, h, w] - view.z[b, t, h, w]).abs().mean()
            for b, t, h, w in pairs
            if gate[(b, t, h, w)]
        )
        count = len(pairs) if normalize == "all" else sum(gate[pos] for pos in pairs)
        out.append(total / count)
    return torch.stack(out).mean()


@pytest.mark.parametrize("normalize", ["all", "gated"])
@pytest.mark.parametrize("percentile", [0.5, 0.3])
def test_velgate_matches_loops_and_gradient(percentile: float, normalize: str) -> None:
    target, views = random_inputs(5)
    ctx = make_ctx(target, views)
    got = VelGate(percentile=percentile, normalize=normalize).loss(ctx)  # type: ignore[arg-type]
    expected = loop_velgate(target, views, percentile, normalize)
    torch.testing.assert_close(got, expected)
    (g_got,) = torch.autograd.grad(got, views[0].z)
    (g_ref,) = torch.autograd.grad(expected, views[0].z)
    torch.testing.assert_close(g_got, g_ref)
    assert not ctx.target_grid.requires_grad


def test_velgate_gate_is_the_background_and_full_percentile_is_plain_kinematics() -> None:
    target = torch.zeros(1, 2, 1, 4, 3)
    target[0, 1, 0, :, 0] = torch.tensor([0.0, 1.0, 2.0, 10.0])  # velocities 0, 1, 2, 10
    delta = target[:, 1:] - target[:, :-1]
    gate = VelGate(percentile=0.5).gate(delta)  # median of [0, 1, 2, 10] = 1.5
    assert gate.tolist() == [[[[True, True, False, False]]]]
    target, views = random_inputs(6)
    ctx = make_ctx(target, views)
    torch.testing.assert_close(
        VelGate(percentile=1.0).loss(ctx), Kinematic(tokens="context", normalize=False).loss(ctx)
    )


def test_velgate_checks_its_arguments() -> None:
    for kwargs in ({"percentile": 1.5}, {"percentile": -0.1}, {"normalize": "x"}, {"tokens": "x"}):
        with pytest.raises(ValueError):
            VelGate(**kwargs)
    params = {"percentile": 0.25, "normalize": "gated", "tokens": "full"}
    assert validate_kwargs(VelGate, params, "terms.vg") == params
