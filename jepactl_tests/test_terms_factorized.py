"""Factorised terms (FWM static / orth, HW-JEPA) against the paper's equations, computed
independently with explicit loops over hand-made tensors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from jepactl.grid import Masks
from jepactl.models import Predictor, VideoViT
from jepactl.objectives.base import GridView, Prediction, StepContext
from jepactl.objectives.factorized import FWMOrth, FWMStatic, HardWeightedPrediction
from jepactl.objectives.jepa import PredictionLoss

B, T, H, W, D = 2, 4, 2, 3, 8


def make_ctx(masks: list[Masks] | None = None) -> StepContext:
    student = VideoViT(embed_dim=16, depth=1, num_heads=2, patch_size=8)
    pred = Predictor(in_dim=16, dim=16, depth=1, num_heads=2)
    clips = torch.randn(B, 3, 4, 16, 16)
    if masks is None:
        masks = [Masks(torch.tensor([[0, 1, 4], [1, 2, 5]]), torch.tensor([[2, 3], [0, 3]]))]
    return StepContext(clips, masks, step=0, student=student, predictor=pred, teacher=None)


def grid_inputs(seed: int = 0, views: int = 2) -> tuple[StepContext, list[torch.Tensor], list]:
    gen = torch.Generator().manual_seed(seed)
    ctx = make_ctx()
    zs, presents = [], []
    for _ in range(views):
        present = torch.rand(B, T, H, W, generator=gen) < 0.7
        # Features with a non-zero mean and cross-correlation, so centring matters.
        raw = torch.randn(B, T, H, W, D, generator=gen) + torch.arange(D) * 0.3
        raw[..., D // 2 :] += 0.8 * raw[..., : D // 2]
        zs.append((raw * present[..., None]).requires_grad_(True))
        presents.append(present)
    ctx.__dict__["context_views"] = [GridView(z, p) for z, p in zip(zs, presents, strict=True)]
    return ctx, zs, presents


# ---------------------------------------------------------------- static (Eq. 7)


@pytest.mark.parametrize("app_ratio", [0.5, 0.3])
def test_static_is_mean_abs_time_difference_of_z_app(app_ratio: float) -> None:
    d_app = math.floor(D * app_ratio)
    ctx, zs, presents = grid_inputs()
    got = FWMStatic(app_ratio=app_ratio).loss(ctx)
    per_view = []
    for z, present in zip(zs, presents, strict=True):
        total, count = 0.0, 0
        for b, t, y, x in itertools.product(range(B), range(T - 1), range(H), range(W)):
            if present[b, t, y, x] and present[b, t + 1, y, x]:
                total = total + (z[b, t + 1, y, x, :d_app] - z[b, t, y, x, :d_app]).abs().sum()
                count += 1
        per_view.append(total / (count * d_app))
    torch.testing.assert_close(got, torch.stack(per_view).mean())
    got.backward()
    for z in zs:
        assert z.grad is not None
        assert z.grad[..., :d_app].abs().sum() > 0 and z.grad[..., d_app:].abs().sum() == 0


def test_static_is_a_connected_zero_on_single_frame_clips() -> None:
    ctx = make_ctx()
    z = torch.randn(B, 1, H, W, D, requires_grad=True)
    ctx.__dict__["context_views"] = [GridView(z, torch.ones(B, 1, H, W, dtype=torch.bool))]
    got = FWMStatic().loss(ctx)
    assert got.item() == 0.0 and got.requires_grad
    got.backward()
    assert z.grad is not None and z.grad.abs().sum() == 0


# ---------------------------------------------------------------- orth (Eq. 8)


def centred_cross(z: torch.Tensor, present: torch.Tensor, d_app: int) -> tuple[torch.Tensor, int]:
    rows = [
        z[b, t, y, x]
        for b, t, y, x in itertools.product(range(B), range(T), range(H), range(W))
        if present[b, t, y, x]
    ]
    x = torch.stack(rows)
    xc = x - x.mean(dim=0)
    return xc[:, :d_app].T @ xc[:, d_app:], len(rows)


@pytest.mark.parametrize("normalization", ["tokens", "covariance"])
def test_orth_matches_eq8_and_the_reference_covariance(normalization: str) -> None:
    ctx, zs, presents = grid_inputs(seed=1)
    got = FWMOrth(normalization=normalization).loss(ctx)  # type: ignore[arg-type]
    per_view = []
    for z, present in zip(zs, presents, strict=True):
        cross, n = centred_cross(z, present, D // 2)
        if normalization == "tokens":
            per_view.append((cross**2).sum() / n)  # ||A_cᵀ B_c||_F² / N
        else:
            per_view.append(((cross / (n - 1)) ** 2).mean())  # mean squared cross-covariance
    torch.testing.assert_close(got, torch.stack(per_view).mean())
    got.backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in zs)


def test_orth_runs_in_float32_under_autocast_and_handles_single_tokens() -> None:
    ctx, _, _ = grid_inputs(seed=2)
    term = FWMOrth()
    reference = term.loss(ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = term.loss(ctx)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference)

    one = torch.zeros(B, T, H, W, dtype=torch.bool)
    one[0, 0, 0, 0] = True  # n = 1: centred features are 0, so is the loss (reference skips)
    ctx.__dict__["context_views"] = [GridView(torch.randn(B, T, H, W, D), one)]
    for norm in ("tokens", "covariance"):
        assert FWMOrth(normalization=norm).loss(ctx).item() == 0.0  # type: ignore[arg-type]


def test_orth_paper_scale_is_about_d_app_times_d_dyn_for_unit_features() -> None:
    # Unit-variance, uncorrelated features, D = 64 (32 + 32), n = 2·8·8·8 = 1024 tokens.
    # Measured (seed 0): paper ("tokens") 952.6 ≈ 32·32 = 1024; reference ("covariance")
    # 0.00091 ≈ 1/n. At D = 3072 the paper's value is ≈ 1536² ≈ 2.4e6 (λ_o·L ≈ 2.4e4),
    # against L_JEPA ≈ 0.3-1: the docstring's warning.
    gen = torch.Generator().manual_seed(0)
    ctx = make_ctx()
    z = torch.randn(2, 8, 8, 8, 64, generator=gen)
    ctx.__dict__["context_views"] = [GridView(z, torch.ones(z.shape[:-1], dtype=torch.bool))]
    paper = FWMOrth(normalization="tokens").loss(ctx).item()
    reference = FWMOrth().loss(ctx).item()  # the default
    assert 0.85 * 1024 < paper < 1.15 * 1024
    assert 0.85 / 1024 < reference < 1.15 / 1024


def test_factorized_terms_validate_arguments() -> None:
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="app_ratio"):
            FWMStatic(app_ratio=bad)
        with pytest.raises(ValueError, match="app_ratio"):
            FWMOrth(app_ratio=bad)
    with pytest.raises(ValueError, match="normalization"):
        FWMOrth(normalization="frobenius")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokens"):
        FWMStatic(tokens="all")  # type: ignore[arg-type]
    ctx, _, _ = grid_inputs()
    with pytest.raises(ValueError, match="non-empty"):
        FWMStatic(app_ratio=0.1).loss(ctx)  # floor(8 · 0.1) = 0 channels


# ---------------------------------------------------------------- HW-JEPA (Eq. 9-10)

N_TOK = T * H * W  # 24 tokens in the hand-made token layout


def hw_inputs(seed: int = 0, scale: float = 1.0) -> tuple[StepContext, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    masks = [
        Masks(torch.tensor([[0, 1], [2, 3]]), torch.tensor([[4, 7, 9, 20], [5, 6, 11, 23]])),
        Masks(torch.tensor([[5], [6]]), torch.tensor([[0, 2, 3, 13, 17], [1, 8, 9, 10, 22]])),
    ]
    ctx = make_ctx(masks)
    targets = torch.randn(B, N_TOK, D, generator=gen)
    preds = [
        (
            targets.gather(1, m.target[..., None].expand(-1, -1, D))
            + scale * torch.randn(B, m.target.shape[1], D, generator=gen)
        ).requires_grad_(True)
        for m in masks
    ]
    ctx.__dict__["targets"] = targets
    ctx.__dict__["predictions"] = [Prediction(p, None) for p in preds]
    return ctx, preds


def hw_reference(
    ctx: StepContext,
    preds: list[torch.Tensor],
    tau: float,
    clip: float | None,
    error: str,
    per_sample: bool,
) -> torch.Tensor:
    """Eq. 9-10 written out: per-token errors, softmax weights (constants), mean of w·e."""
    groups = []
    for p, m in zip(preds, ctx.masks, strict=True):
        errors = {}
        for b, k in itertools.product(range(B), range(m.target.shape[1])):
            diff = (p[b, k] - ctx.targets[b, int(m.target[b, k])]).abs()
            errors[b, k] = diff.mean() if error == "mean" else diff.sum()
        pools = [[key for key in errors if key[0] == b] for b in range(B)]
        if not per_sample:
            pools = [list(errors)]
        weights = {}
        for pool in pools:
            logits = [float(errors[key].detach()) / tau for key in pool]
            if clip is not None:
                logits = [min(max(v, -clip), clip) for v in logits]
            top = max(logits)
            ex = [math.exp(v - top) for v in logits]
            for key, v in zip(pool, ex, strict=True):
                weights[key] = len(pool) * v / sum(ex)
        groups.append(sum(weights[key] * errors[key] for key in errors) / len(errors))
    return torch.stack(groups).mean()


@pytest.mark.parametrize(
    ("tau", "clip", "error", "per_sample"),
    [
        (1.0, 20.0, "mean", True),
        (0.1, 20.0, "mean", False),
        (0.1, 12.0, "mean", True),  # logits ≈ 12 ± 3: about half of them clip
        (1.0, 20.0, "sum", True),
        (1.0, None, "sum", True),
    ],
)
def test_hw_matches_eq9_10_with_detached_weights(
    tau: float, clip: float | None, error: str, per_sample: bool
) -> None:
    ctx, preds = hw_inputs(seed=1, scale=1.5)
    term = HardWeightedPrediction(
        temperature=tau,
        clip_logits=clip,
        error=error,  # type: ignore[arg-type]
        per_sample=per_sample,
    )
    got = term.loss(ctx)
    preds2 = [p.detach().clone().requires_grad_(True) for p in preds]
    expected = hw_reference(ctx, preds2, tau, clip, error, per_sample)
    torch.testing.assert_close(got, expected)
    # The gradient is that of Σ w·e with the weights held constant.
    got.backward()
    expected.backward()
    for p, p2 in zip(preds, preds2, strict=True):
        assert p.grad is not None and p2.grad is not None
        torch.testing.assert_close(p.grad, p2.grad)
    assert f"{term.name}_max_weight" in ctx.logs


def test_hw_weights_really_tilt_towards_hard_tokens_and_clip() -> None:
    ctx, _ = hw_inputs(seed=2, scale=1.5)
    # Channel-sum errors of 8 channels with τ = 0.1: logits ≈ 100, so clipping at 20 flattens
    # the weights (the scale argument for the channel mean); without the clip they are peaked.
    clipped = HardWeightedPrediction(temperature=0.1, error="sum")
    clipped.loss(ctx)
    assert ctx.logs["HardWeightedPrediction_max_weight"].item() == pytest.approx(1.0)
    unclipped = HardWeightedPrediction(temperature=0.1, error="sum", clip_logits=None)
    unclipped.loss(ctx)
    assert ctx.logs["HardWeightedPrediction_max_weight"].item() > 2.0


def test_hw_with_unit_weights_is_the_plain_jepa_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, _ = hw_inputs(seed=3)
    plain = PredictionLoss().loss(ctx)
    torch.testing.assert_close(HardWeightedPrediction(temperature=1e9).loss(ctx), plain)
    monkeypatch.setattr(
        "jepactl.objectives.factorized.hard_weights",
        lambda e, mask, *args: mask.to(e.dtype),
    )
    torch.testing.assert_close(HardWeightedPrediction().loss(ctx), plain, rtol=0, atol=0)


def test_hw_validates_arguments() -> None:
    for kwargs in ({"temperature": 0.0}, {"clip_logits": 0.0}, {"error": "l2"}):
        with pytest.raises(ValueError):
            HardWeightedPrediction(**kwargs)  # type: ignore[arg-type]
