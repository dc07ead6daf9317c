"""AC-JEPA / FAC-JEPA against an explicit computation of the pixel-motion target and head."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from jepactl.grid import Masks
from jepactl.models import Predictor, VideoViT
from jepactl.objectives.action import ActionConditioned
from jepactl.objectives.base import GridView, ModelDims, StepContext

# Clip 6 frames x 4 x 6 pixels, patch 2, tubelet 2 -> token grid 3 x 2 x 3.
B, C, FRAMES, PH, PW = 2, 3, 6, 4, 6
PATCH, TUBELET = 2, 2
T, H, W, D = FRAMES // TUBELET, PH // PATCH, PW // PATCH, 8
DIMS = ModelDims(out_dim=D, level_dim=D, patch_size=PATCH, tubelet=TUBELET)


def make_inputs(
    seed: int = 0, frames: int = FRAMES
) -> tuple[StepContext, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = frames // TUBELET
    clips = torch.randn(B, C, frames, PH, PW, generator=gen).requires_grad_(True)
    student = VideoViT(embed_dim=16, depth=1, num_heads=2, patch_size=8)
    pred = Predictor(in_dim=16, dim=16, depth=1, num_heads=2)
    masks = [Masks(torch.tensor([[0, 1], [1, 2]]), torch.tensor([[2, 3], [0, 3]]))]
    ctx = StepContext(clips, masks, step=0, student=student, predictor=pred, teacher=None)
    present = torch.rand(B, t, H, W, generator=gen) < 0.75
    present[:, :, 0, 0] = True
    z = (torch.randn(B, t, H, W, D, generator=gen) * present[..., None]).requires_grad_(True)
    ctx.__dict__["context_views"] = [GridView(z, present)]
    return ctx, clips, z, present


def motion_target(clips: torch.Tensor, b: int, t: int, y: int, x: int) -> torch.Tensor:
    """``μ[t+1] - μ[t]`` at one token, ``μ`` = RGB mean over the tubelet frames x patch."""

    def mu(tt: int) -> torch.Tensor:
        block = clips[
            b,
            :,
            tt * TUBELET : (tt + 1) * TUBELET,
            y * PATCH : (y + 1) * PATCH,
            x * PATCH : (x + 1) * PATCH,
        ]
        return block.reshape(C, -1).mean(dim=1)

    return (mu(t + 1) - mu(t)).detach()


def mlp(head: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    lin1, lin2 = head[0], head[2]
    return F.gelu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias


def expected_loss(
    term: ActionConditioned, clips: torch.Tensor, z: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    assert term.head is not None
    total, count = 0.0, 0
    for b, t, y, x in itertools.product(range(B), range(z.shape[1] - 1), range(H), range(W)):
        if present[b, t, y, x] and present[b, t + 1, y, x]:
            a = motion_target(clips, b, t, y, x)[: term.target_dim]
            pred = mlp(term.head, z[b, t, y, x, term.d_app :])
            total = total + (pred - a).abs().sum()
            count += 1
    return total / (count * term.target_dim)


@pytest.mark.parametrize("target_dim", [3, 2])
def test_ac_is_l1_to_patch_mean_motion_and_trains_head_and_z(target_dim: int) -> None:
    ctx, clips, z, present = make_inputs()
    term = ActionConditioned(target_dim=target_dim)
    term.setup(DIMS)
    assert term.head is not None
    assert term.head[0].in_features == D and term.head[0].out_features == 256
    assert term.head[2].out_features == target_dim
    got = term.loss(ctx)
    torch.testing.assert_close(got, expected_loss(term, clips, z, present))
    got.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in term.head.parameters())
    assert clips.grad is None  # the target carries no gradient


@pytest.mark.parametrize("app_ratio", [0.5, 0.3])
def test_fac_reads_only_z_dyn(app_ratio: float) -> None:
    d_app = math.floor(D * app_ratio)
    ctx, clips, z, present = make_inputs(seed=1)
    term = ActionConditioned(input="dynamics", app_ratio=app_ratio)
    term.setup(DIMS)
    assert term.head is not None and term.head[0].in_features == D - d_app
    got = term.loss(ctx)
    torch.testing.assert_close(got, expected_loss(term, clips, z, present))
    got.backward()
    assert z.grad is not None
    assert z.grad[..., :d_app].abs().sum() == 0 and z.grad[..., d_app:].abs().sum() > 0
    z2 = z.detach().clone()
    z2[..., :d_app] += 3.0 * torch.randn(B, T, H, W, d_app)
    ctx.__dict__["context_views"] = [GridView(z2, present)]
    torch.testing.assert_close(term.loss(ctx), got.detach())


def test_ac_single_tubelet_clips_give_a_connected_zero() -> None:
    ctx, _, z, _ = make_inputs(frames=TUBELET)  # T' = 1: no pairs
    term = ActionConditioned()
    term.setup(DIMS)
    got = term.loss(ctx)
    assert got.item() == 0.0 and got.requires_grad
    got.backward()
    assert z.grad is not None and z.grad.abs().sum() == 0


def test_ac_rejects_a_pixel_grid_that_does_not_match_the_tokens() -> None:
    ctx, _, _, _ = make_inputs()
    term = ActionConditioned()
    term.setup(ModelDims(out_dim=D, level_dim=D, patch_size=1, tubelet=TUBELET))
    with pytest.raises(ValueError, match="does not match"):
        term.loss(ctx)


def test_ac_validates_arguments_and_needs_setup() -> None:
    for kwargs in (
        {"hidden": 0},
        {"target_dim": 0},
        {"target_dim": 4},
        {"input": "appearance"},
        {"app_ratio": 0.0},
        {"tokens": "target"},
    ):
        with pytest.raises(ValueError):
            ActionConditioned(**kwargs)  # type: ignore[arg-type]
    ctx, _, _, _ = make_inputs()
    with pytest.raises(RuntimeError, match="setup"):
        ActionConditioned().loss(ctx)
