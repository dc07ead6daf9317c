from __future__ import annotations

import itertools

import pytest
import torch

from jepactl.config import validate_kwargs
from jepactl.grid import Masks
from jepactl.models import Predictor, VideoViT
from jepactl.objectives.base import GridView, StepContext
from jepactl.objectives.kinematic import Kinematic

B, T, H, W, D = 2, 4, 2, 3, 5


def make_ctx() -> StepContext:
    student = VideoViT(embed_dim=32, depth=1, num_heads=2, patch_size=8)
    pred = Predictor(in_dim=32, dim=16, depth=1, num_heads=2)
    masks = [Masks(torch.tensor([[0], [0]]), torch.tensor([[1], [1]]))]
    clips = torch.zeros(B, 3, 4, 16, 16)
    return StepContext(clips, masks, step=0, student=student, predictor=pred, teacher=None)


def random_view(seed: int, t: int = T) -> GridView:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B, t, H, W, D, generator=gen).requires_grad_()
    present = torch.rand(B, t, H, W, generator=gen) < 0.7
    return GridView(z, present)


def huber_scalar(x: float, delta: float) -> float:
    return 0.5 * x * x if abs(x) < delta else delta * (abs(x) - delta / 2)


def loop_loss(view: GridView, order: int, penalty: str, delta: float, keep: int) -> torch.Tensor:
    """The paper's mean penalty over valid positions, by explicit loops."""
    z, p = view.z, view.present
    t_len = z.shape[1]
    total, count = z.new_zeros(()), 0
    for b, t, h, w in itertools.product(range(B), range(t_len - order), range(H), range(W)):
        if order == 1:
            if not (p[b, t, h, w] and p[b, t + 1, h, w]):
                continue
            diff = z[b, t + 1, h, w] - z[b, t, h, w]
        else:
            if not (p[b, t, h, w] and p[b, t + 1, h, w] and p[b, t + 2, h, w]):
                continue
            diff = z[b, t + 2, h, w] - 2 * z[b, t + 1, h, w] + z[b, t, h, w]
        for c in range(keep):
            x = diff[c]
            if penalty == "l1":
                total = total + x.abs()
            else:  # Huber, written out with a Python branch per element
                total = total + (
                    0.5 * x * x if abs(float(x.detach())) < delta else delta * (x.abs() - delta / 2)
                )
            count += 1
    return total / max(count, 1)


def test_first_differences_l1_on_context_pairs_match_loops_and_gradient() -> None:
    views = [random_view(0), random_view(1)]
    ctx = make_ctx()
    ctx.__dict__["context_views"] = views
    got = Kinematic(tokens="context", normalize=False).loss(ctx)
    expected = torch.stack([loop_loss(v, 1, "l1", 0.0, D) for v in views]).mean()
    torch.testing.assert_close(got, expected)
    (g_got,) = torch.autograd.grad(got, views[0].z)
    (g_ref,) = torch.autograd.grad(expected, views[0].z)
    torch.testing.assert_close(g_got, g_ref)
    # Tokens that take part in no valid pair receive no gradient.
    p = views[0].present
    involved = torch.zeros_like(p)
    involved[:, :-1] |= p[:, :-1] & p[:, 1:]
    involved[:, 1:] |= p[:, :-1] & p[:, 1:]
    assert torch.all(g_got[~involved] == 0)
    assert torch.all(g_got[involved].abs().sum(-1) > 0)


@pytest.mark.parametrize("penalty", ["l1", "huber"])
def test_acceleration_split_channels_on_context_triples(penalty: str) -> None:
    view = random_view(2)
    ctx = make_ctx()
    ctx.__dict__["context_views"] = [view]
    term = Kinematic(
        order=2, penalty=penalty, huber_delta=0.7, channels=0.6, tokens="context", normalize=False
    )
    got = term.loss(ctx)
    keep = 3  # floor(0.6 * 5)
    torch.testing.assert_close(got, loop_loss(view, 2, penalty, 0.7, keep))
    got.backward()
    assert view.z.grad is not None
    assert torch.all(view.z.grad[..., keep:] == 0)
    assert view.z.grad[..., :keep].abs().sum() > 0


def test_huber_is_quadratic_below_delta_and_linear_above() -> None:
    z = torch.zeros(1, 2, 1, 1, 4)
    z[0, 1, 0, 0] = torch.tensor([0.05, -0.05, 0.3, -2.0])
    view = GridView(z, torch.ones(1, 2, 1, 1, dtype=torch.bool))
    ctx = make_ctx()
    ctx.__dict__["full_view"] = view
    got = Kinematic(penalty="huber", huber_delta=0.1, normalize=False).loss(ctx)
    expected = sum(huber_scalar(x, 0.1) for x in (0.05, -0.05, 0.3, -2.0)) / 4
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_default_reads_the_full_clip_view() -> None:
    full = random_view(3)
    full = GridView(full.z, torch.ones_like(full.present))
    ctx = make_ctx()
    ctx.__dict__["full_view"] = full
    ctx.__dict__["context_views"] = [random_view(4)]  # must be ignored
    for order in (1, 2):
        got = Kinematic(order=order, normalize=False).loss(ctx)
        torch.testing.assert_close(got, loop_loss(full, order, "l1", 0.0, D))
    # With all positions present the term is a plain mean over the whole grid.
    d1 = full.z[:, 1:] - full.z[:, :-1]
    torch.testing.assert_close(Kinematic(normalize=False).loss(ctx), d1.abs().mean())
    # By default the tokens first get the targets' parameter-free LayerNorm (the reference's
    # EMA-free target branch is LayerNorm'ed).
    zn = torch.nn.functional.layer_norm(full.z, (D,))
    torch.testing.assert_close(Kinematic().loss(ctx), (zn[:, 1:] - zn[:, :-1]).abs().mean())


def test_acceleration_falls_back_to_first_differences_below_three_steps() -> None:
    view = random_view(5, t=2)
    ctx = make_ctx()
    ctx.__dict__["context_views"] = [view]
    accel = Kinematic(order=2, tokens="context", normalize=False).loss(ctx)
    torch.testing.assert_close(accel, loop_loss(view, 1, "l1", 0.0, D))


def test_anneal_is_the_base_cosine_schedule_and_signature_validates() -> None:
    term = Kinematic(weight=0.1, order=2, anneal="cosine")
    assert term.coefficient(0, epoch=0, num_epochs=100) == pytest.approx(0.1)
    assert term.coefficient(0, epoch=50, num_epochs=100) == pytest.approx(0.05)
    params = {"order": 2, "penalty": "huber", "channels": 0.5, "tokens": "context"}
    assert validate_kwargs(Kinematic, params, "terms.kin") == params


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": 3}, "order"),
        ({"penalty": "l2"}, "penalty"),
        ({"huber_delta": 0.0}, "huber_delta"),
        ({"channels": 0.0}, "channels"),
        ({"channels": 1.5}, "channels"),
        ({"tokens": "target"}, "tokens"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Kinematic(**kwargs)
