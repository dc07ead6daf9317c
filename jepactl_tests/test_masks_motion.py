"""Tests for motion-guided multi-block masking (paper §3.3 Eq. 4, App. D)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from jepactl.masks import (
    MASK_STRATEGIES,
    MotionGuided3D,
    MultiBlock3D,
    TokenGrid,
    build_mask_strategy,
)
from jepactl.masks.motion import motion_energy, placement_probs, placement_scores

PATCH, TUBELET = 4, 2
FRAMES, SIDE = 8, 64
GRID = TokenGrid.of_clip(FRAMES, SIDE, SIDE, PATCH, TUBELET)  # 4 x 16 x 16 tokens
# The square covers pixel rows 24-35 and, moving 1 px per frame, columns 20-38: tokens rows
# 6-8, columns 5-9.
SWEPT = torch.zeros(GRID.h, GRID.w, dtype=torch.bool)
SWEPT[6:9, 5:10] = True


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _moving_square(batch: int = 8, seed: int = 0) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]``: a bright textured 12 px square moving right by 1 px a frame
    over a static noisy background."""
    g = _gen(seed)
    background = torch.randint(0, 100, (batch, 1, SIDE, SIDE, 3), generator=g, dtype=torch.uint8)
    clips = background.expand(-1, FRAMES, -1, -1, -1).clone()
    texture = torch.randint(128, 256, (batch, 12, 12 + FRAMES, 3), generator=g)
    for f in range(FRAMES):
        shift = FRAMES - f
        clips[:, f, 24:36, 20 + f : 32 + f] = texture[:, :, shift : shift + 12]
    return clips


def _static(batch: int = 4, frames: int = FRAMES) -> torch.Tensor:
    image = torch.randint(0, 256, (batch, 1, SIDE, SIDE, 3), generator=_gen(5), dtype=torch.uint8)
    return image.expand(-1, frames, -1, -1, -1).clone()


def _guided(**kwargs: Any) -> MotionGuided3D:
    return MotionGuided3D(patch_size=PATCH, tubelet=TUBELET, **kwargs)


def _swept_fraction(strategy: MultiBlock3D, clips: torch.Tensor) -> float:
    """Fraction of all target tokens over 10 batches that lie in the square's swept region."""
    inside = total = 0
    for seed in range(10):
        target = strategy(clips.shape[0], GRID, _gen(seed), clips).target
        coords = GRID.coords(target)
        inside += int(SWEPT[coords[..., 1], coords[..., 2]].sum())
        total += target.numel()
    return inside / total


def test_motion_energy_is_the_patch_mean_of_frame_differences() -> None:
    clips = torch.zeros(1, 4, 16, 16, 3, dtype=torch.uint8)
    clips[0, 1, :8, :8] = 255  # frame 1 lights up the top-left patch, frame 2 turns it off
    clips[0, 3, 8:, 8:, 0] = 51  # frame 3: one channel of the bottom-right patch, 0.2 / 3
    motion = motion_energy(clips, patch_size=8, tubelet=2)
    assert motion.shape == (1, 2, 2, 2)
    # Maps m_0..m_3 = |x1-x0| (copied), |x1-x0|, |x2-x1|, |x3-x2|; tokens average pairs of them.
    raw = torch.zeros(2, 2, 2)
    raw[0, 0, 0] = 1.0
    raw[1, 0, 0] = 0.5
    raw[1, 1, 1] = 0.5 * 0.2 / 3
    assert torch.allclose(motion[0], raw / raw.max())
    assert float(motion.max()) == 1.0


def test_static_clips_and_images_give_uniform_placement() -> None:
    for clips in (_static(), _static(frames=1)):
        motion = motion_energy(clips, PATCH, TUBELET)
        assert not bool(motion.any())
        for sampling in ("exp", "power"):
            for score in ("center", "block_mean"):
                probs = placement_probs(motion, (1, 3, 4), 5.0, 0.0, sampling, score)
                assert torch.allclose(probs, torch.full_like(probs, 1 / probs[0].numel()))
    images = _static(frames=1)
    grid = TokenGrid.of_clip(1, SIDE, SIDE, PATCH, TUBELET)
    masks = _guided(num_blocks=2)(4, grid, _gen(0), images)
    assert masks.target.shape[0] == 4 and int(masks.target.max()) < grid.num_tokens


def _reference_scores(motion: torch.Tensor, size: tuple[int, int, int], score: str):
    """Slow per-origin scores, straight from the definitions."""
    t, h, w = size
    b, grid_t, grid_h, grid_w = motion.shape
    out = torch.zeros(b, grid_t - t + 1, grid_h - h + 1, grid_w - w + 1)
    for ot in range(out.shape[1]):
        for oh in range(out.shape[2]):
            for ow in range(out.shape[3]):
                if score == "block_mean":
                    rows, cols = list(range(oh, oh + h)), list(range(ow, ow + w))
                else:  # the central token of an odd side, the central two of an even side
                    rows = sorted({oh + (h - 1) // 2, oh + h // 2})
                    cols = sorted({ow + (w - 1) // 2, ow + w // 2})
                volume = motion[:, ot : ot + t][:, :, rows][:, :, :, cols]
                out[:, ot, oh, ow] = volume.mean(dim=(1, 2, 3))
    return out


@pytest.mark.parametrize("size", [(2, 3, 2), (3, 2, 3), (4, 5, 5), (1, 1, 1)])
@pytest.mark.parametrize("score", ["center", "block_mean"])
def test_placement_scores_follow_their_definitions(size: tuple[int, int, int], score: str):
    motion = torch.rand(2, 4, 6, 7, generator=_gen(0))
    expected = _reference_scores(motion, size, score)
    assert torch.allclose(placement_scores(motion, size, score), expected, atol=1e-6)


@pytest.mark.parametrize("score", ["center", "block_mean"])
def test_exp_and_power_sampling_follow_their_formulas(score: str) -> None:
    motion = torch.rand(2, 4, 6, 7, generator=_gen(1))
    motion[:, :, :3] = 0.0  # zero scores exercise the power law's 1e-6 floor
    size, alpha = (4, 2, 3), 3.0
    scores = _reference_scores(motion, size, score)
    exp = torch.exp(alpha * scores)
    power = scores.clamp_min(1e-6) ** alpha
    for sampling, weights in (("exp", exp), ("power", power)):
        norm = weights / weights.sum(dim=(1, 2, 3), keepdim=True)
        probs = placement_probs(motion, size, alpha, 0.0, sampling, score)
        assert torch.allclose(probs, norm, rtol=1e-4, atol=1e-9)
        # The fallback is the exact mixture with the uniform distribution.
        mixed = placement_probs(motion, size, alpha, 0.3, sampling, score)
        assert torch.allclose(mixed, 0.7 * norm + 0.3 / norm[0].numel(), rtol=1e-4, atol=1e-9)
        assert torch.allclose(mixed.sum(dim=(1, 2, 3)), torch.ones(2))
        everywhere = placement_probs(motion, size, alpha, 1.0, sampling, score)
        assert torch.equal(everywhere, torch.full_like(everywhere, 1 / everywhere[0].numel()))
    # A huge strength must not overflow: all mass on the best origin(s).
    sharp = placement_probs(motion, size, 1e4, 0.0, "exp", score)
    assert bool(torch.isfinite(sharp).all())
    assert torch.allclose(sharp.flatten(1).max(dim=1).values, torch.ones(2))


def test_origins_are_drawn_from_the_placement_probs() -> None:
    strategy = _guided(num_blocks=20_000, spatial_scale=0.035, strength=2.0, fallback_rate=0.2)
    clips = _moving_square(batch=2)
    size = (4, 3, 3)
    starts = strategy._draw_starts(2, GRID, size, _gen(0), clips)
    probs = placement_probs(motion_energy(clips, PATCH, TUBELET), size, 2.0, 0.2)
    _, n_t, n_h, n_w = probs.shape
    assert all(s.shape == (2, 20_000) and s.dtype == torch.int64 for s in starts)
    flat = (starts[0] * n_h + starts[1]) * n_w + starts[2]
    for b in range(2):
        counts = torch.bincount(flat[b], minlength=n_t * n_h * n_w).float() / 20_000
        expected = probs[b].flatten()
        # Binomial standard errors; 5 sigma plus a little slack.
        tolerance = 5 * (expected * (1 - expected) / 20_000).sqrt() + 1e-3
        assert bool(((counts - expected).abs() <= tolerance).all())


def test_guided_targets_cover_the_moving_square_far_more_often() -> None:
    clips = _moving_square()
    blocks = {"num_blocks": 2, "spatial_scale": 0.035}  # about 2x3 tokens per block
    uniform = _swept_fraction(MultiBlock3D(**blocks), clips)
    amg = _swept_fraction(_guided(**blocks, strength=5.0, fallback_rate=0.0), clips)
    reference = _swept_fraction(
        _guided(**blocks, strength=5.0, fallback_rate=0.0, sampling="power", score="block_mean"),
        clips,
    )
    fallback = _swept_fraction(_guided(**blocks, strength=5.0, fallback_rate=1.0), clips)
    # Measured: uniform 0.052, AMG (exp, centre) 0.437, reference rule (power, block mean)
    # 0.912, full fallback 0.056; the swept region is 15 of 256 tokens (5.9%).
    assert uniform < 0.1
    assert amg > 5 * uniform
    assert reference > 0.8
    assert abs(fallback - uniform) < 0.02, "full fallback must be uniform placement"


def test_guided_targets_are_unions_of_blocks_of_the_drawn_size() -> None:
    strategy = _guided(num_blocks=3, spatial_scale=0.05, temporal_scale=0.5, strength=5.0)
    clips = _moving_square()
    t, h, w = strategy.block_size(GRID, _gen(3))
    target = (~strategy.sample_context(8, GRID, _gen(3), clips))[:, None].float()
    origins = (F.avg_pool3d(target, (t, h, w), stride=1) > 1 - 1e-6).float()
    covered = F.conv_transpose3d(origins, torch.ones(1, 1, t, h, w)) > 0
    assert torch.equal(covered, target.bool())


def test_same_generator_state_gives_same_masks() -> None:
    strategy = _guided(strength=5.0)
    clips = _moving_square()
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    first, second = strategy(8, GRID, _gen(7), clips), strategy(8, GRID, _gen(7), clips)
    assert torch.equal(torch.get_rng_state(), global_state), "must not touch the global RNG"
    assert torch.equal(first.context, second.context)
    assert torch.equal(first.target, second.target)
    other = strategy(8, GRID, _gen(8), clips)
    assert not (
        other.context.shape == first.context.shape and torch.equal(other.context, first.context)
    )


def test_future_predictive_with_motion_keeps_context_early() -> None:
    strategy = _guided(num_blocks=2, spatial_scale=0.1, max_temporal_keep=0.5, strength=5.0)
    clips = _moving_square()
    masks = strategy(8, GRID, _gen(0), clips)
    assert int(GRID.coords(masks.context)[..., 0].max()) < GRID.t // 2
    assert not bool((masks.context[:, :, None] == masks.target[:, None, :]).any())
    late = ~strategy.sample_context(8, GRID, _gen(0), clips)[:, GRID.t // 2 :]
    assert bool(late.all()), "the second half of time is all target"
    # One sample needs no equalisation: the target is the exact complement of the context.
    single = strategy(1, GRID, _gen(1), clips[:1])
    both = torch.cat((single.context, single.target), dim=1).sort(dim=1).values
    assert torch.equal(both[0], torch.arange(GRID.num_tokens))


class _Spy(MultiBlock3D):
    """Uniform placement that records the clips each origin draw receives."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[int, torch.Tensor | None]] = []

    def _draw_starts(self, batch_size, grid, size, generator, clips):
        self.seen.append((batch_size, clips))
        return super()._draw_starts(batch_size, grid, size, generator, clips)


def test_redraws_receive_the_clips_of_the_redrawn_samples() -> None:
    # As in test_masks: the context comes out empty for about half the samples.
    grid = TokenGrid(2, 3, 3)
    clips = torch.arange(64, dtype=torch.uint8)[:, None, None, None, None].expand(64, 2, 3, 3, 1)
    strategy = _Spy(num_blocks=2, spatial_scale=1.0, temporal_scale=0.5)
    with_clips = strategy(64, grid, _gen(0), clips)
    assert len(strategy.seen) > 1, "the scenario must need redraws"
    previous = torch.arange(64)
    for batch_size, seen in strategy.seen:
        assert seen is not None and seen.shape[0] == batch_size
        ids = seen[:, 0, 0, 0, 0].long()
        assert bool(torch.isin(ids, previous).all()) and bool((ids[1:] > ids[:-1]).all())
        previous = ids
    # Uniform placement ignores the pixels.
    without = MultiBlock3D(num_blocks=2, spatial_scale=1.0, temporal_scale=0.5)(64, grid, _gen(0))
    assert torch.equal(with_clips.context, without.context)
    assert torch.equal(with_clips.target, without.target)


def test_guided_redraws_work() -> None:
    grid = TokenGrid(2, 2, 2)
    clips = _moving_square(batch=16)[:, :4, :16, :16]
    strategy = MotionGuided3D(
        num_blocks=2, spatial_scale=1.0, temporal_scale=0.5, patch_size=8, tubelet=2
    )
    masks = strategy(16, grid, _gen(0), clips)
    assert masks.context.shape == (16, 4) and masks.target.shape == (16, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": -1.0}, "strength"),
        ({"strength": math.nan}, "strength"),
        ({"strength": math.inf}, "strength"),
        ({"strength": "5"}, "strength"),
        ({"strength": True}, "strength"),
        ({"fallback_rate": -0.1}, "fallback_rate"),
        ({"fallback_rate": 1.5}, "fallback_rate"),
        ({"sampling": "linear"}, "sampling"),
        ({"score": "max"}, "score"),
        ({"patch_size": 0}, "patch_size"),
        ({"tubelet": 2.0}, "tubelet"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"equalize": "tail"}, "equalize"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MotionGuided3D(**kwargs)


def test_invalid_call_arguments_are_rejected() -> None:
    strategy = _guided()
    clips = _moving_square(batch=2)
    with pytest.raises(ValueError, match="needs the pixels"):
        strategy(2, GRID, _gen(0))
    with pytest.raises(ValueError, match="uint8"):
        strategy(2, GRID, _gen(0), clips.float())
    with pytest.raises(ValueError, match="patch_size=16"):
        MotionGuided3D()(2, GRID, _gen(0), clips)  # 16-pixel patches give a 4x4 plane
    with pytest.raises(ValueError, match="tubelet"):
        _guided()(2, GRID, _gen(0), clips[:, :7])
    with pytest.raises(ValueError, match="2 clips for a batch of 3"):
        strategy(3, GRID, _gen(0), clips)


def test_registry_builds_motion_guided_masking() -> None:
    assert MASK_STRATEGIES["motion"] is MotionGuided3D
    spec = {
        "strategy": "motion",
        "num_blocks": 4,
        "max_temporal_keep": 0.5,
        "strength": 5.0,
        "fallback_rate": 0.0,
        "sampling": "power",
        "score": "block_mean",
        "patch_size": PATCH,
    }
    strategy = build_mask_strategy(spec)
    assert isinstance(strategy, MotionGuided3D)
    assert (strategy.num_blocks, strategy.max_temporal_keep) == (4, 0.5)
    assert (strategy.strength, strategy.fallback_rate) == (5.0, 0.0)
    assert (strategy.sampling, strategy.score) == ("power", "block_mean")
    assert (strategy.patch_size, strategy.tubelet) == (PATCH, 2)
    assert "strength=5.0" in repr(strategy)


def test_paper_default_strength_biases_placement_but_mildly() -> None:
    """Eq. 4 at the paper's defaults (α = 2, 10 % fallback): the moving region is targeted more
    often than under uniform placement, but the per-clip normalised score caps the odds at
    e^α, so the bias is mild (docs/recipes.md says so)."""
    clips = _moving_square()
    blocks = {"num_blocks": 2, "spatial_scale": 0.035}
    uniform = _swept_fraction(MultiBlock3D(**blocks), clips)
    paper = _swept_fraction(_guided(**blocks, strength=2.0, fallback_rate=0.1), clips)
    amg = _swept_fraction(_guided(**blocks, strength=5.0, fallback_rate=0.0), clips)
    # Measured: uniform 0.052, paper default 0.164, AMG 0.437.
    assert 2 * uniform < paper < amg


def test_guided_masks_take_fixed_lengths_calibrated_on_uniform_placement() -> None:
    """``lengths: fixed`` works with motion-guided placement: the counts are calibrated
    without pixels (uniform placement), and every guided batch is cut to them."""
    strategy = _guided(lengths="fixed")
    sizes = strategy.fixed_lengths(8, GRID)
    assert sizes == MultiBlock3D(lengths="fixed").fixed_lengths(8, GRID)
    clips = _moving_square()
    for seed in range(5):
        masks = strategy(8, GRID, _gen(seed), clips)
        assert (masks.context.shape[1], masks.target.shape[1]) == sizes
