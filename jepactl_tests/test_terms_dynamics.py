"""Latent-dynamics terms (Delta, LD / LD-HW, Spectral, LTC) against the paper's equations,
computed independently with explicit loops over hand-made tensors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from jepactl.grid import Masks
from jepactl.models import Predictor, VideoViT
from jepactl.objectives.base import GridView, ModelDims, StepContext, Term
from jepactl.objectives.dynamics import LTC, Delta, LatentDynamics, Spectral

B, T, H, W, D = 2, 5, 2, 3, 8


def make_ctx(teacher: VideoViT | None = None) -> StepContext:
    student = VideoViT(embed_dim=16, depth=1, num_heads=2, patch_size=8)
    pred = Predictor(in_dim=16, dim=16, depth=1, num_heads=2)
    clips = torch.randn(B, 3, 4, 16, 16)
    masks = [Masks(torch.tensor([[0, 1, 4], [1, 2, 5]]), torch.tensor([[2, 3], [0, 3]]))]
    return StepContext(clips, masks, step=0, student=student, predictor=pred, teacher=teacher)


def make_present(gen: torch.Generator, t: int = T) -> torch.Tensor:
    present = torch.rand(B, t, H, W, generator=gen) < 0.7
    present[0, :, 0, 0] = True  # at least one full tube
    present[1, :, 1, 2] = False  # and one empty position
    return present


def grid_inputs(
    seed: int = 0, views: int = 2, t: int = T
) -> tuple[StepContext, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """A context with injected views (``z`` leaves, zeros off ``present``) and targets ``h``
    (a leaf with ``requires_grad``, so a missing stop-gradient would show)."""
    gen = torch.Generator().manual_seed(seed)
    ctx = make_ctx()
    zs, presents = [], []
    for _ in range(views):
        present = make_present(gen, t)
        z = (torch.randn(B, t, H, W, D, generator=gen) * present[..., None]).requires_grad_(True)
        zs.append(z)
        presents.append(present)
    h = torch.randn(B, t, H, W, D, generator=gen).requires_grad_(True)
    ctx.__dict__["target_grid"] = h
    ctx.__dict__["context_views"] = [GridView(z, p) for z, p in zip(zs, presents, strict=True)]
    return ctx, zs, presents, h


def valid_pairs(present: torch.Tensor) -> list[tuple[int, int, int, int]]:
    t = present.shape[1]
    return [
        (b, i, y, x)
        for b, i, y, x in itertools.product(range(B), range(t - 1), range(H), range(W))
        if present[b, i, y, x] and present[b, i + 1, y, x]
    ]


DIMS = ModelDims(out_dim=D, level_dim=D, patch_size=8, tubelet=2)


# ---------------------------------------------------------------- Delta (Eq. 5)


def test_delta_matches_eq5_and_stops_the_target_gradient() -> None:
    ctx, zs, presents, h = grid_inputs()
    got = Delta().loss(ctx)
    per_view = []
    for z, present in zip(zs, presents, strict=True):
        pairs = valid_pairs(present)
        total = sum(
            ((z[b, t + 1, y, x] - z[b, t, y, x]) - (h[b, t + 1, y, x] - h[b, t, y, x])).abs().sum()
            for b, t, y, x in pairs
        )
        per_view.append(total / (len(pairs) * D))
    torch.testing.assert_close(got, torch.stack(per_view).mean())
    got.backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in zs)
    assert h.grad is None


def test_delta_full_tokens_read_the_full_view() -> None:
    ctx, _, _, h = grid_inputs(views=1)
    full = torch.randn(B, T, H, W, D)
    ctx.__dict__["full_view"] = GridView(full, torch.ones(B, T, H, W, dtype=torch.bool))
    expected = ((full[:, 1:] - full[:, :-1]) - (h[:, 1:] - h[:, :-1])).abs().mean()
    torch.testing.assert_close(Delta(tokens="full").loss(ctx), expected.detach())
    with pytest.raises(ValueError, match="tokens"):
        Delta(tokens="everything")  # type: ignore[arg-type]


# ---------------------------------------------------------------- LD / LD-HW (Eq. 6, 11)


def mlp(head: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The DynHead written out: ``W2 · gelu(W1 x + b1) + b2``."""
    lin1, lin2 = head[0], head[2]
    return F.gelu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias


def ld_token_errors(
    term: LatentDynamics, z: torch.Tensor, present: torch.Tensor, h: torch.Tensor, d_app: int = 0
) -> list[torch.Tensor]:
    """Per-token errors ``e_i = mean_c |DynHead(z_t) - (h_{t+1} - h_t)|`` at the valid pairs."""
    assert term.head is not None
    out = []
    for b, t, y, x in valid_pairs(present):
        pred = mlp(term.head, z[b, t, y, x, d_app:])
        err = (pred - (h[b, t + 1, y, x] - h[b, t, y, x]).detach()).abs()
        out.append(err.mean() if term.error == "mean" else err.sum())
    return out


def softmax_weights(
    errors: list[torch.Tensor], tau: float, clip: float | None
) -> list[torch.Tensor]:
    """``w_i = N · exp(l_i) / Σ_j exp(l_j)``, ``l = clip(e / τ)``, as constants."""
    logits = [float(e.detach()) / tau for e in errors]
    if clip is not None:
        logits = [min(max(v, -clip), clip) for v in logits]
    top = max(logits)
    ex = [math.exp(v - top) for v in logits]
    return [torch.tensor(len(ex) * v / sum(ex)) for v in ex]


def test_ld_matches_eq6_with_stopgrad_target_and_trains_head_and_z() -> None:
    ctx, zs, presents, h = grid_inputs()
    term = LatentDynamics()
    term.setup(DIMS)
    assert term.head is not None and term.head[0].in_features == D
    assert term.head[0].out_features == 256 and term.head[2].out_features == D
    got = term.loss(ctx)
    expected = torch.stack(
        [
            torch.stack(ld_token_errors(term, z, p, h)).mean()
            for z, p in zip(zs, presents, strict=True)
        ]
    ).mean()
    torch.testing.assert_close(got, expected)
    got.backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in zs)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in term.head.parameters())
    assert h.grad is None


def test_ld_error_sum_is_the_channel_sum() -> None:
    ctx, zs, presents, h = grid_inputs(views=1)
    term = LatentDynamics(error="sum")
    term.setup(DIMS)
    expected = torch.stack(ld_token_errors(term, zs[0], presents[0], h)).mean()
    torch.testing.assert_close(term.loss(ctx), expected)


@pytest.mark.parametrize("per_sample", [False, True])
def test_ld_hw_matches_eq11_with_detached_weights(per_sample: bool) -> None:
    tau, clip = 0.05, 26.0  # logits e/τ span ≈ 8-32 here: the softmax and the clip both matter
    ctx, zs, presents, h = grid_inputs(seed=1)
    term = LatentDynamics(
        hard_weighting=True, temperature=tau, clip_logits=clip, per_sample=per_sample
    )
    term.setup(DIMS)
    got = term.loss(ctx)

    # Independent: weights from an explicit softmax, held constant; loss = Σ w·e / N.
    zs2 = [z.detach().clone().requires_grad_(True) for z in zs]
    per_view = []
    for z, present in zip(zs2, presents, strict=True):
        errors = ld_token_errors(term, z, present, h)
        pairs = valid_pairs(present)
        if per_sample:
            weights: list[torch.Tensor] = [torch.tensor(0.0)] * len(errors)
            for b in range(B):
                idx = [i for i, pair in enumerate(pairs) if pair[0] == b]
                for i, w in zip(
                    idx, softmax_weights([errors[i] for i in idx], tau, clip), strict=True
                ):
                    weights[i] = w
        else:
            weights = softmax_weights(errors, tau, clip)
        assert max(float(w) for w in weights) > 1.5  # the weighting is far from uniform
        assert any(float(e.detach()) / tau > clip for e in errors)  # and some logits are clipped
        per_view.append(sum(w * e for w, e in zip(weights, errors, strict=True)) / len(errors))
    expected = torch.stack(per_view).mean()
    torch.testing.assert_close(got, expected)

    # d loss / d z and d loss / d head equal those of Σ w·e with w constant.
    assert term.head is not None
    head_grads = torch.autograd.grad(expected, [*zs2, *term.head.parameters()])
    got_grads = torch.autograd.grad(got, [*zs, *term.head.parameters()])
    for a, b in zip(got_grads, head_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert h.grad is None


def test_ld_hw_with_unit_weights_is_plain_ld(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, _, _, _ = grid_inputs(seed=2)
    plain = LatentDynamics()
    plain.setup(DIMS)
    hw = LatentDynamics(hard_weighting=True)
    hw.setup(DIMS)
    hw.load_state_dict(plain.state_dict())
    reference = plain.loss(ctx)
    # A huge temperature makes the softmax uniform: w = N · 1/N = 1 up to rounding.
    hw.temperature = 1e9
    torch.testing.assert_close(hw.loss(ctx), reference)
    # And with the weights forced to exactly 1 the two are identical.
    monkeypatch.setattr(
        "jepactl.objectives.dynamics.hard_weights",
        lambda e, mask, *args: mask.to(e.dtype),
    )
    torch.testing.assert_close(hw.loss(ctx), reference, rtol=0, atol=0)


def test_ld_hw_reference_no_grad_is_a_constant_and_the_default_is_not() -> None:
    ctx, zs, _, _ = grid_inputs(seed=3)
    live = LatentDynamics(hard_weighting=True)
    live.setup(DIMS)
    frozen = LatentDynamics(hard_weighting=True, reference_no_grad=True)
    frozen.setup(DIMS)
    frozen.load_state_dict(live.state_dict())
    assert frozen.head is not None and live.head is not None

    value = frozen.loss(ctx)
    assert not value.requires_grad  # nothing reaches z or the head
    assert not any(p.requires_grad for p in frozen.head.parameters())  # optimiser/DDP skip it
    assert all(z.grad is None for z in zs)

    trained = live.loss(ctx)
    torch.testing.assert_close(value, trained.detach())  # same value, only the gradient differs
    trained.backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in zs)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in live.head.parameters())

    with pytest.raises(ValueError, match="hard_weighting"):
        LatentDynamics(reference_no_grad=True)


def test_ld_reference_no_grad_leaves_the_shared_views_differentiable() -> None:
    torch.manual_seed(0)
    ctx = make_ctx()  # real student; the views are computed lazily inside the term
    dims = ModelDims(ctx.student.out_dim, ctx.student.embed_dim, 8, 2)
    frozen = LatentDynamics(hard_weighting=True, reference_no_grad=True)
    frozen.setup(dims)
    assert not frozen.loss(ctx).requires_grad
    later = Delta().loss(ctx)  # reuses the cached context views
    assert later.requires_grad
    later.backward()
    assert ctx.student.patch_embed.weight.grad is not None


@pytest.mark.parametrize("app_ratio", [0.5, 0.3])
def test_ld_dynamics_input_reads_only_z_dyn(app_ratio: float) -> None:
    d_app = math.floor(D * app_ratio)
    ctx, zs, presents, h = grid_inputs(seed=4, views=1)
    term = LatentDynamics(input="dynamics", app_ratio=app_ratio, hard_weighting=True)
    term.setup(DIMS)
    assert term.head is not None and term.head[0].in_features == D - d_app
    got = term.loss(ctx)

    # Same value as the explicit formula on the Z_dyn channels (plain LD with w = softmax).
    errors = ld_token_errors(term, zs[0], presents[0], h, d_app=d_app)
    weights = softmax_weights(errors, 1.0, 20.0)
    expected = sum(w * e for w, e in zip(weights, errors, strict=True)) / len(errors)
    torch.testing.assert_close(got, expected)

    got.backward()
    grad = zs[0].grad
    assert grad is not None
    assert grad[..., :d_app].abs().sum() == 0 and grad[..., d_app:].abs().sum() > 0

    # Perturbing Z_app does not change the loss.
    z = zs[0].detach().clone()
    z[..., :d_app] += 5.0 * torch.randn(B, T, H, W, d_app) * presents[0][..., None]
    ctx.__dict__["context_views"] = [GridView(z, presents[0])]
    torch.testing.assert_close(term.loss(ctx), got.detach())


def test_ld_validates_arguments_and_needs_setup() -> None:
    for kwargs in (
        {"hidden": 0},
        {"input": "app"},
        {"app_ratio": 1.0},
        {"temperature": 0.0},
        {"clip_logits": -1.0},
        {"error": "max"},
    ):
        with pytest.raises(ValueError):
            LatentDynamics(**kwargs)  # type: ignore[arg-type]
    ctx, _, _, _ = grid_inputs()
    with pytest.raises(RuntimeError, match="setup"):
        LatentDynamics().loss(ctx)
    with pytest.raises(ValueError, match="app_ratio"):
        LatentDynamics(input="dynamics", app_ratio=0.05).setup(DIMS)  # floor(8 · 0.05) = 0


# ---------------------------------------------------------------- Spectral


def dft(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the unnormalised DFT over dim 0, bins 0..T/2."""
    t = x.shape[0]
    re, im = [], []
    for f in range(t // 2 + 1):
        re.append(sum(x[i] * math.cos(2 * math.pi * f * i / t) for i in range(t)))
        im.append(sum(-x[i] * math.sin(2 * math.pi * f * i / t) for i in range(t)))
    return torch.stack(re), torch.stack(im)


@pytest.mark.parametrize("t", [4, 5])
def test_spectral_is_frequency_weighted_l1_of_temporal_spectra(t: int) -> None:
    ctx, zs, presents, h = grid_inputs(seed=5, t=t)
    got = Spectral().loss(ctx)
    bins = t // 2 + 1
    omega = [0.1 + 0.9 * f / (bins - 1) for f in range(bins)]  # linspace(0.1, 1, bins)
    per_view = []
    for z, present in zip(zs, presents, strict=True):
        total, count = 0.0, 0
        for b, y, x in itertools.product(range(B), range(H), range(W)):
            if not bool(present[b, :, y, x].all()):
                continue
            zr, zi = dft(z[b, :, y, x])
            hr, hi = dft(h[b, :, y, x].detach())
            mod = ((zr - hr) ** 2 + (zi - hi) ** 2).sqrt()  # [bins, D]
            total = total + sum(omega[f] * mod[f].sum() for f in range(bins))
            count += 1
        per_view.append(total / (count * bins * D))
    torch.testing.assert_close(got, torch.stack(per_view).mean())
    got.backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in zs)
    assert h.grad is None


def test_spectral_skips_short_clips_with_a_connected_zero() -> None:
    ctx, zs, _, h = grid_inputs(t=3)
    got = Spectral().loss(ctx)
    assert got.item() == 0.0 and got.requires_grad
    got.backward()
    assert all(z.grad is not None and z.grad.abs().sum() == 0 for z in zs)
    assert h.grad is None


# ---------------------------------------------------------------- LTC


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def test_ltc_is_a_margin_hinge_on_cosine_similarities() -> None:
    ctx, zs, presents, h = grid_inputs(seed=6)
    margin = 0.3
    got = LTC(margin=margin).loss(ctx)
    per_view = []
    active = 0
    for z, present in zip(zs, presents, strict=True):
        pairs = valid_pairs(present)
        hinges = []
        for b, t, y, x in pairs:
            zt = z[b, t, y, x]
            s_pos, s_neg = cos(zt, h[b, t, y, x].detach()), cos(zt, h[b, t + 1, y, x].detach())
            hinges.append(torch.clamp(margin - s_pos + s_neg, min=0))
            active += int(margin - s_pos + s_neg > 0)
        per_view.append(torch.stack(hinges).mean())
    assert active > 0
    torch.testing.assert_close(got, torch.stack(per_view).mean())
    got.backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in zs)
    assert all(torch.isfinite(z.grad).all() for z in zs if z.grad is not None)
    assert h.grad is None
    with pytest.raises(ValueError, match="margin"):
        LTC(margin=-0.1)


# ---------------------------------------------------------------- single-frame clips


@pytest.mark.parametrize(
    "term",
    [Delta(), LatentDynamics(), LatentDynamics(hard_weighting=True), LTC()],
    ids=["delta", "ld", "ld_hw", "ltc"],
)
def test_pair_terms_give_a_connected_zero_without_pairs_in_time(term: Term) -> None:
    ctx, zs, _, h = grid_inputs(t=1)  # T' = 1: an image, no (t, t + 1) pair
    term.setup(DIMS)
    got = term.loss(ctx)
    assert got.item() == 0.0 and got.requires_grad
    got.backward()
    assert all(z.grad is not None and z.grad.abs().sum() == 0 for z in zs)
    assert h.grad is None
