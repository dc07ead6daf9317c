from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from jepactl.grid import Masks
from jepactl.models import Predictor, VideoViT
from jepactl.objectives import sigreg
from jepactl.objectives.base import StepContext
from jepactl.objectives.sigreg import SIGReg
from jepactl.utils import derive_seed


def reference_statistic(x: np.ndarray, a: np.ndarray, num_points: int, t_max: float) -> np.ndarray:
    """Per-slice Epps-Pulley statistic in float64 with explicit loops over slices and knots."""
    n = x.shape[0]
    dt = t_max / (num_points - 1)
    out = []
    for s in range(a.shape[1]):
        y = x @ a[:, s]
        total = 0.0
        for k in range(num_points):
            t = k * dt
            w = dt if k in (0, num_points - 1) else 2 * dt  # trapezoid on [0, t_max], doubled
            phi = math.exp(-t * t / 2)
            c, s_ = np.cos(t * y).mean(), np.sin(t * y).mean()
            total += w * phi * ((c - phi) ** 2 + s_**2)
        out.append(n * total)
    return np.array(out)


def unit_directions(dim: int, slices: int, seed: int, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive_seed(seed, "sigreg", step))
    a = torch.randn(dim, slices, generator=gen)
    return a / a.norm(dim=0, keepdim=True)


def make_ctx(tokens: list[torch.Tensor], seed: int, step: int) -> StepContext:
    student = VideoViT(embed_dim=32, depth=1, num_heads=2, patch_size=8)
    pred = Predictor(in_dim=32, dim=16, depth=1, num_heads=2)
    masks = [Masks(torch.tensor([[0], [0]]), torch.tensor([[1], [1]]))]
    clips = torch.zeros(2, 3, 4, 16, 16)
    ctx = StepContext(
        clips, masks, step=step, student=student, predictor=pred, teacher=None, seed=seed
    )
    ctx.__dict__["context_tokens"] = tokens
    return ctx


def test_statistic_matches_an_independent_loop_implementation() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 4, generator=gen) * 1.5 + 0.3
    a = torch.randn(4, 3, generator=gen)
    a = a / a.norm(dim=0, keepdim=True)
    term = SIGReg(num_slices=3, num_points=7, t_max=2.5)
    got = term.statistic(x, a)
    expected = reference_statistic(x.double().numpy(), a.double().numpy(), 7, 2.5)
    torch.testing.assert_close(got, torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-6)


def test_loss_pools_all_groups_and_uses_the_step_directions() -> None:
    gen = torch.Generator().manual_seed(1)
    groups = [torch.randn(2, 5, 6, generator=gen), torch.randn(2, 3, 6, generator=gen)]
    groups = [g.requires_grad_() for g in groups]
    term = SIGReg(num_slices=8, num_points=5)
    loss = term.loss(make_ctx(groups, seed=7, step=3))
    x = torch.cat([g.detach().reshape(-1, 6) for g in groups]).double().numpy()
    a = unit_directions(6, 8, seed=7, step=3).double().numpy()
    expected = reference_statistic(x, a, 5, 3.0).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in groups)


def test_gaussian_scores_far_below_a_collapsed_input() -> None:
    gen = torch.Generator().manual_seed(2)
    term = SIGReg(num_slices=64)
    a = unit_directions(16, 64, seed=0, step=0)
    gaussian = term.statistic(torch.randn(2000, 16, generator=gen), a).mean()
    collapsed = term.statistic(torch.zeros(2000, 16), a).mean()
    assert gaussian < 5.0  # O(1) for a Gaussian sample, whatever n
    assert collapsed > 100 * gaussian  # grows like n for a collapsed one


def test_directions_are_unit_fixed_per_step_and_redrawn_across_steps() -> None:
    term = SIGReg(num_slices=16)
    cpu = torch.device("cpu")
    a = term.directions(10, seed=3, step=5, device=cpu)
    assert a.shape == (10, 16)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(16))
    torch.testing.assert_close(a, term.directions(10, seed=3, step=5, device=cpu), rtol=0, atol=0)
    torch.testing.assert_close(a, unit_directions(10, 16, seed=3, step=5))
    assert not torch.allclose(a, term.directions(10, seed=3, step=6, device=cpu))
    assert not torch.allclose(a, term.directions(10, seed=4, step=5, device=cpu))
    # Consequently the loss differs between steps on the same tokens.
    tokens = [torch.randn(2, 6, 10)]
    l5 = term.loss(make_ctx(tokens, seed=3, step=5))
    assert l5 == term.loss(make_ctx(tokens, seed=3, step=5))
    assert l5 != term.loss(make_ctx(tokens, seed=3, step=6))


def test_quadrature_buffers_are_not_saved_and_arguments_are_checked() -> None:
    term = SIGReg(num_points=5, t_max=2.0)
    torch.testing.assert_close(term.t, torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0]))
    assert term.state_dict() == {}
    for kwargs, match in [
        ({"num_points": 16}, "odd"),
        ({"num_points": 1}, "odd"),
        ({"num_slices": 0}, "num_slices"),
        ({"t_max": 0.0}, "t_max"),
    ]:
        with pytest.raises(ValueError, match=match):
            SIGReg(**kwargs)


def _plain_all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The lightly#1920 bug: a non-autograd all-reduce (right value, autograd sees identity)."""
    out = x.clone()
    with torch.no_grad():
        dist.all_reduce(out)
    return out


def _ddp_worker(rank: int, world: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    try:
        x, parts, a = torch.load(f"{tmp}/inputs.pt")
        term = SIGReg(num_slices=a.shape[1], num_points=5)
        out = {}
        for name, reduce in (
            ("autograd", sigreg._all_reduce_sum),
            ("plain", _plain_all_reduce_sum),
        ):
            sigreg._all_reduce_sum = reduce  # this child process only
            # Identical data on both ranks: the gradient w.r.t. the rank's X.
            xr = x.clone().requires_grad_()
            same = term.statistic(xr, a).mean()
            same.backward()
            # Different data per rank through a shared "parameter" theta, whose gradient is
            # averaged over ranks as DDP does.
            theta = torch.ones(x.shape[1], requires_grad=True)
            split = term.statistic(parts[rank] * theta, a).mean()
            split.backward()
            assert theta.grad is not None
            dist.all_reduce(theta.grad)
            out[name] = (same.detach(), xr.grad, split.detach(), theta.grad / world)
        torch.save(out, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one_process_on_the_pooled_data(tmp_path: Path) -> None:
    """World size 2 against one process holding both ranks' tokens.

    Every rank averages ``c``/``s`` over ranks, which (with equal ``n`` per rank) is the
    empirical characteristic function of the pooled sample, and scales by
    ``n_local · world``, the pooled size. So every rank's value equals the single-process loss on
    the concatenated data. For the gradient, the autograd-aware reduce hands each rank
    ``world · ∂L/∂X_r``, and DDP's average over ranks turns that into ``∂L/∂θ``. Precisely:

    1. identical ``X`` on both ranks (the pooled data is ``[X; X]``): each rank's ``X.grad``
       equals the single-process gradient of ``L(cat([X, X]))`` w.r.t. the shared ``X``;
    2. different ``X_r = base_r · θ`` per rank: the rank-averaged ``θ.grad`` equals the
       single-process gradient of ``L(cat([base_0 · θ, base_1 · θ]))``.

    A plain ``dist.all_reduce`` gets the value right but every gradient ``1/world`` too small
    (lightly#1920); the test runs exactly that as well and checks that the strict comparison
    would catch it. Not using the reduce's return value (stable-pretraining) gives a wrong value
    in case 2.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=gen) * 0.7 + 0.2
    parts = [torch.randn(32, 6, generator=gen) * 0.8, torch.randn(32, 6, generator=gen) + 0.5]
    a = unit_directions(6, 8, seed=0, step=0)
    torch.save((x, parts, a), tmp_path / "inputs.pt")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)

    term = SIGReg(num_slices=8, num_points=5)
    xs = x.clone().requires_grad_()
    same = term.statistic(torch.cat([xs, xs]), a).mean()
    same.backward()
    theta = torch.ones(6, requires_grad=True)
    split = term.statistic(torch.cat([parts[0] * theta, parts[1] * theta]), a).mean()
    split.backward()
    assert xs.grad is not None and theta.grad is not None
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        got_same, got_x_grad, got_split, got_theta_grad = out["autograd"]
        torch.testing.assert_close(got_same, same.detach())
        torch.testing.assert_close(got_x_grad, xs.grad)
        torch.testing.assert_close(got_split, split.detach())
        torch.testing.assert_close(got_theta_grad, theta.grad)
        # The non-autograd reduce: same values, gradients halved, so the checks above fail.
        got_same, got_x_grad, got_split, got_theta_grad = out["plain"]
        torch.testing.assert_close(got_same, same.detach())
        torch.testing.assert_close(got_split, split.detach())
        torch.testing.assert_close(got_x_grad, xs.grad / 2)
        torch.testing.assert_close(got_theta_grad, theta.grad / 2)
        assert not torch.allclose(got_x_grad, xs.grad, rtol=0.1)
