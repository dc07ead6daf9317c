from __future__ import annotations

import itertools
import math

import pytest
import torch

from jepactl.grid import Masks, TokenGrid
from jepactl.models import Predictor, VideoViT
from jepactl.objectives import TERMS, ContextLoss, PredictionLoss, StepContext, distance_weights
from jepactl.objectives.base import normalize_targets


def test_distance_weights_match_brute_force() -> None:
    grid = TokenGrid(4, 5, 6)
    gen = torch.Generator().manual_seed(0)
    b, k, m = 3, 17, 11
    perm = torch.stack([torch.randperm(grid.num_tokens, generator=gen) for _ in range(b)])
    ctx, tgt = perm[:, :k], perm[:, k : k + m]
    got = distance_weights(ctx, tgt, grid)
    for bi, ki in itertools.product(range(b), range(k)):
        t, h, w = divmod(int(ctx[bi, ki]), 30)[0], *divmod(int(ctx[bi, ki]) % 30, 6)
        best = math.inf
        for mi in range(m):
            n = int(tgt[bi, mi])
            t2, rest = divmod(n, 30)
            h2, w2 = divmod(rest, 6)
            best = min(best, math.sqrt((t - t2) ** 2 + (h - h2) ** 2 + (w - w2) ** 2))
        assert got[bi, ki].item() == pytest.approx(best**-0.5, rel=1e-6)


def make_ctx(predict_context: bool = True) -> tuple[StepContext, VideoViT]:
    torch.manual_seed(0)
    student = VideoViT(embed_dim=32, depth=1, num_heads=2, patch_size=8)
    teacher = VideoViT(embed_dim=32, depth=1, num_heads=2, patch_size=8).requires_grad_(False)
    pred = Predictor(in_dim=32, dim=16, depth=1, num_heads=2, predict_context=predict_context)
    clips = torch.randn(2, 3, 4, 16, 16)
    masks = [
        Masks(torch.tensor([[0, 1, 2], [4, 5, 6]]), torch.tensor([[3, 7], [0, 1]])),
        Masks(torch.tensor([[1, 5], [2, 6]]), torch.tensor([[0, 4, 7], [3, 5, 7]])),
    ]

    ctx = StepContext(clips, masks, step=0, student=student, predictor=pred, teacher=teacher)
    return ctx, teacher


def test_prediction_loss_is_mean_l1_over_groups() -> None:
    ctx, _ = make_ctx()
    h = torch.nn.functional.layer_norm(ctx.teacher(ctx.clips), (32,))
    expected = []
    for p, m in zip(ctx.predictions, ctx.masks, strict=True):
        tgt = torch.stack([h[b, m.target[b]] for b in range(2)])
        expected.append((p.target - tgt).abs().mean())
    got = PredictionLoss().loss(ctx)
    torch.testing.assert_close(got, torch.stack(expected).mean())
    sq = PredictionLoss(loss_exp=2.0).loss(ctx)
    ref = torch.stack(
        [
            ((p.target - torch.stack([h[b, m.target[b]] for b in range(2)])) ** 2).mean() / 2
            for p, m in zip(ctx.predictions, ctx.masks, strict=True)
        ]
    ).mean()
    torch.testing.assert_close(sq, ref)


def test_context_loss_weights_each_token_by_inverse_sqrt_distance() -> None:
    ctx, _ = make_ctx()
    h = normalize_targets(ctx.teacher(ctx.clips), 32)
    grid = ctx.grid
    expected = []
    for p, m in zip(ctx.predictions, ctx.masks, strict=True):
        total = 0.0
        for b in range(2):
            for k, n in enumerate(m.context[b].tolist()):
                d = min(
                    torch.dist(grid.coords(torch.tensor(n)).float(), grid.coords(t).float()).item()
                    for t in m.target[b]
                )
                err = (p.context[b, k] - h[b, n]).abs().mean()
                total = total + err * d**-0.5
        expected.append(total / m.context.numel())
    torch.testing.assert_close(ContextLoss().loss(ctx), torch.stack(expected).mean())


def test_gradients_reach_student_and_predictor_but_never_the_teacher() -> None:
    ctx, teacher = make_ctx()
    loss = PredictionLoss().loss(ctx) + ContextLoss().loss(ctx)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert ctx.student.patch_embed.weight.grad is not None
    assert ctx.predictor.proj_context.weight.grad is not None  # type: ignore[union-attr]
    assert not ctx.targets.requires_grad


def test_context_loss_needs_context_predictions() -> None:
    ctx, _ = make_ctx(predict_context=False)
    with pytest.raises(RuntimeError, match="predict_context"):
        ContextLoss().loss(ctx)


def test_warmup_ramp_of_the_coefficient() -> None:
    term = ContextLoss(weight=0.5, warmup_start=100, warmup_end=200)
    assert [term.coefficient(s) for s in (0, 99, 100, 150, 200, 10_000)] == [
        0.0,
        0.0,
        0.0,
        0.25,
        0.5,
        0.5,
    ]
    assert PredictionLoss(weight=2.0).coefficient(0) == 2.0
    with pytest.raises(ValueError, match="warmup_end"):
        ContextLoss(warmup_start=10, warmup_end=5)


def test_terms_compute_shared_work_once() -> None:
    ctx, _ = make_ctx()
    calls = []
    inner = ctx.teacher
    assert inner is not None

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return inner(x)

    ctx.teacher = counting
    out = {}
    for name in ("jepa", "jepa_context"):
        term = TERMS[name]()
        term.name = name
        out.update(term(ctx))
    assert set(out) == {"jepa", "jepa_context"}
    assert len(calls) == 1


def test_without_a_teacher_targets_are_the_student_with_or_without_stopgrad() -> None:
    """``teacher: none``: targets = the online student on the full clip; sg(h) (paper Eq. 1)
    by default, gradient through both branches with ``stopgrad_targets=False`` (reference)."""
    grads = {}
    for stopgrad in (True, False):
        ctx, _ = make_ctx()
        ctx.teacher = None
        ctx.stopgrad_targets = stopgrad
        assert ctx.targets.requires_grad is (not stopgrad)
        expected = normalize_targets(ctx.student(ctx.clips), 32)
        torch.testing.assert_close(ctx.targets, expected)
        PredictionLoss().loss(ctx).backward()
        grads[stopgrad] = ctx.student.patch_embed.weight.grad.clone()  # type: ignore[union-attr]
    assert not torch.allclose(grads[True], grads[False])
