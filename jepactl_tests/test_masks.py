"""Tests for the multi-block 3D mask strategy and the mask-strategy registry."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from jepactl.masks import (
    MASK_STRATEGIES,
    Masks,
    MultiBlock3D,
    TokenGrid,
    build_mask_strategy,
)

GRID = TokenGrid(8, 14, 14)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("equalize", ["random", "truncate"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_blocks": 2, "spatial_scale": 0.7},
        {"num_blocks": 4, "spatial_scale": 0.2, "temporal_scale": 0.5, "max_temporal_keep": 0.5},
    ],
)
def test_masks_are_valid_index_sets(kwargs: dict[str, Any], equalize: str) -> None:
    strategy = MultiBlock3D(equalize=equalize, **kwargs)
    masks = strategy(16, GRID, _gen(0))
    assert isinstance(masks, Masks)
    for idx in (masks.context, masks.target):
        assert idx.dtype == torch.int64
        assert idx.device.type == "cpu"
        assert idx.ndim == 2 and idx.shape[0] == 16 and idx.shape[1] >= 1
        assert int(idx.min()) >= 0 and int(idx.max()) < GRID.num_tokens
        assert bool((idx[:, 1:] > idx[:, :-1]).all()), "indices must be sorted and unique"
    dense_context = torch.zeros(16, GRID.num_tokens, dtype=torch.bool)
    dense_context.scatter_(1, masks.context, True)
    assert not bool(dense_context.gather(1, masks.target).any()), "context and target overlap"


def test_same_generator_state_gives_same_masks() -> None:
    strategy = MultiBlock3D()
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    first, second = strategy(8, GRID, _gen(7)), strategy(8, GRID, _gen(7))
    assert torch.equal(torch.get_rng_state(), global_state), "must not touch the global RNG"
    assert torch.equal(first.context, second.context)
    assert torch.equal(first.target, second.target)
    other = strategy(8, GRID, _gen(8))
    assert not (
        other.context.shape == first.context.shape and torch.equal(other.context, first.context)
    )


def test_block_size_matches_paper_groups() -> None:
    plane = TokenGrid(8, 14, 14)
    short = MultiBlock3D(num_blocks=8, spatial_scale=0.15, aspect_ratio=(1.0, 1.0))
    long = MultiBlock3D(num_blocks=2, spatial_scale=0.7, aspect_ratio=(1.0, 1.0))
    assert short.block_size(plane, _gen(0)) == (8, 5, 5)
    assert long.block_size(plane, _gen(0)) == (8, 12, 12)
    half = MultiBlock3D(temporal_scale=0.5, aspect_ratio=[1.0, 1.0])
    assert half.block_size(plane, _gen(0)) == (4, 5, 5)


def test_single_block_target_is_one_box_of_the_drawn_size() -> None:
    strategy = MultiBlock3D(num_blocks=1, spatial_scale=0.15, temporal_scale=0.5)
    for seed in range(5):
        size = strategy.block_size(GRID, _gen(seed))
        masks = strategy(12, GRID, _gen(seed))
        assert masks.target.shape == (12, size[0] * size[1] * size[2])
        assert masks.context.shape == (12, GRID.num_tokens - masks.target.shape[1])
        coords = GRID.coords(masks.target)  # [B, M, 3]
        extent = coords.max(dim=1).values - coords.min(dim=1).values + 1
        assert bool((extent == torch.tensor(size)).all())


def test_target_is_a_union_of_blocks_of_the_drawn_size() -> None:
    strategy = MultiBlock3D(num_blocks=8, spatial_scale=0.15, temporal_scale=0.5)
    t, h, w = strategy.block_size(GRID, _gen(3))
    target = (~strategy.sample_context(16, GRID, _gen(3)))[:, None].float()
    # Origins of boxes lying entirely inside the target, then the union of those boxes.
    origins = (F.avg_pool3d(target, (t, h, w), stride=1) > 1 - 1e-6).float()
    covered = F.conv_transpose3d(origins, torch.ones(1, 1, t, h, w)) > 0
    assert torch.equal(covered, target.bool())


def test_max_temporal_keep_limits_context_to_early_steps() -> None:
    strategy = MultiBlock3D(num_blocks=2, spatial_scale=0.3, max_temporal_keep=0.5)
    assert strategy.context_window(GRID) == 4
    masks = strategy(16, GRID, _gen(0))
    assert int(GRID.coords(masks.context)[..., 0].max()) < GRID.t // 2
    # As in the reference, the steps the context may not use are part of the target.
    late = ~strategy.sample_context(16, GRID, _gen(0))[:, GRID.t // 2 :]
    assert bool(late.all())


def test_empty_context_samples_are_redrawn() -> None:
    # Two one-step full-plane blocks on two steps: the context is empty exactly when the
    # blocks land on different steps (probability 1/2), so many samples need redraws.
    grid = TokenGrid(2, 3, 3)
    strategy = MultiBlock3D(num_blocks=2, spatial_scale=1.0, temporal_scale=0.5)
    masks = strategy(64, grid, _gen(0))
    assert masks.context.shape == (64, 9) and masks.target.shape == (64, 9)
    context_t = grid.coords(masks.context)[..., 0]
    target_t = grid.coords(masks.target)[..., 0]
    assert bool((context_t == context_t[:, :1]).all())
    assert bool((target_t == 1 - context_t[:, :1]).all())


def test_context_that_is_always_empty_raises() -> None:
    strategy = MultiBlock3D(num_blocks=1, spatial_scale=1.0, max_tries=3)
    with pytest.raises(RuntimeError, match="without context tokens after 3 redraws"):
        strategy(4, TokenGrid(2, 3, 3), _gen(0))


def _per_step_kept_fraction(equalize: str) -> torch.Tensor:
    """Per time step: kept context tokens / context tokens before equalisation."""
    strategy = MultiBlock3D(num_blocks=2, spatial_scale=0.7, equalize=equalize)
    full = torch.zeros(GRID.t)
    kept = torch.zeros(GRID.t)
    for seed in range(20):
        full += strategy.sample_context(24, GRID, _gen(seed)).sum(dim=(0, 2, 3))
        context = strategy(24, GRID, _gen(seed)).context
        kept += torch.bincount(GRID.coords(context)[..., 0].flatten(), minlength=GRID.t)
    return kept / full


def test_random_equalisation_keeps_a_flat_share_of_every_time_step() -> None:
    fraction = _per_step_kept_fraction("random")
    assert bool(((fraction / fraction.mean() - 1).abs() < 0.05).all()), fraction


def test_truncate_equalisation_reproduces_the_reference_bias() -> None:
    fraction = _per_step_kept_fraction("truncate")
    assert float(fraction[0]) > 0.95
    assert float(fraction[-1]) < 0.1 * float(fraction[0]), fraction


def test_kept_context_is_a_subset_of_the_dense_context() -> None:
    strategy = MultiBlock3D(num_blocks=2, spatial_scale=0.7)
    dense = strategy.sample_context(8, GRID, _gen(1)).flatten(1)
    masks = strategy(8, GRID, _gen(1))
    assert bool(dense.gather(1, masks.context).all())
    assert not bool(dense.gather(1, masks.target).any())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_blocks": 0}, "num_blocks"),
        ({"num_blocks": 2.0}, "num_blocks"),
        ({"num_blocks": True}, "num_blocks"),
        ({"spatial_scale": 0.0}, "spatial_scale"),
        ({"spatial_scale": 1.5}, "spatial_scale"),
        ({"spatial_scale": "0.15"}, "spatial_scale"),
        ({"temporal_scale": -0.1}, "temporal_scale"),
        ({"aspect_ratio": (1.5, 0.75)}, "aspect_ratio"),
        ({"aspect_ratio": (0.0, 1.0)}, "aspect_ratio"),
        ({"aspect_ratio": [0.75]}, "aspect_ratio"),
        ({"aspect_ratio": (0.75, float("inf"))}, "aspect_ratio"),
        ({"max_temporal_keep": 0.0}, "max_temporal_keep"),
        ({"equalize": "tail"}, "equalize"),
        ({"max_tries": -1}, "max_tries"),
        ({"lengths": "fixd"}, "lengths"),
        ({"fixed_quantile": 0.0}, "fixed_quantile"),
        ({"fixed_quantile": 0.5}, "fixed_quantile"),
        ({"fixed_quantile": "0.1"}, "fixed_quantile"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiBlock3D(**kwargs)


def test_invalid_call_arguments_are_rejected() -> None:
    strategy = MultiBlock3D()
    with pytest.raises(ValueError, match="batch_size"):
        strategy(0, GRID, _gen(0))
    with pytest.raises(ValueError, match="token grid"):
        strategy(2, TokenGrid(0, 14, 14), _gen(0))


def test_registry_builds_from_a_yaml_like_spec() -> None:
    assert MASK_STRATEGIES["multiblock"] is MultiBlock3D
    spec = {"strategy": "multiblock", "num_blocks": 2, "aspect_ratio": [0.75, 1.5]}
    strategy = build_mask_strategy(spec)
    assert isinstance(strategy, MultiBlock3D)
    assert strategy.num_blocks == 2 and strategy.aspect_ratio == (0.75, 1.5)
    assert spec["strategy"] == "multiblock", "the spec must not be modified"


def test_registry_rejects_unknown_names_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match="did you mean 'multiblock'"):
        build_mask_strategy({"strategy": "multi_blok"})
    with pytest.raises(ValueError, match="'strategy' key"):
        build_mask_strategy({"num_blocks": 2})


@pytest.mark.parametrize("equalize", ["random", "truncate"])
def test_full_complement_targets_everything_that_is_not_context(equalize: str) -> None:
    """Future-predictive masks: the target is the exact complement of the kept context, for
    every sample of the batch, so no token is left out by the equal-length cut."""
    grid = TokenGrid(8, 14, 14)
    strategy = MultiBlock3D(
        num_blocks=4, max_temporal_keep=0.5, full_complement=True, equalize=equalize
    )  # type: ignore[arg-type]
    masks = strategy(8, grid, torch.Generator().manual_seed(0))
    assert masks.context.shape[1] + masks.target.shape[1] == grid.num_tokens
    for ctx, tgt in zip(masks.context, masks.target, strict=True):
        assert torch.equal(torch.cat([ctx, tgt]).sort().values, torch.arange(grid.num_tokens))
    assert int(grid.coords(masks.context)[..., 0].max()) < 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_blocks": 2, "spatial_scale": 0.7},
        {"num_blocks": 4, "spatial_scale": 0.2, "max_temporal_keep": 0.5, "full_complement": True},
    ],
)
def test_fixed_lengths_give_every_batch_the_same_valid_sizes(kwargs: dict[str, Any]) -> None:
    """``lengths: fixed``: one (context, target) size for every batch (one compiled shape),
    the calibrated one, never more than a batch's own minima allow; the same on every
    instance (every rank and worker calibrates alike)."""
    grid = TokenGrid(4, 8, 8)
    strategy = MultiBlock3D(lengths="fixed", **kwargs)
    sizes = strategy.fixed_lengths(8, grid)
    assert sizes == MultiBlock3D(lengths="fixed", **kwargs).fixed_lengths(8, grid)
    batch_min = MultiBlock3D(**kwargs)
    gen, ref = _gen(5), _gen(5)
    shorter = 0
    for _ in range(20):
        masks = strategy(8, grid, gen)
        assert (masks.context.shape[1], masks.target.shape[1]) == sizes
        dense = torch.zeros(8, grid.num_tokens, dtype=torch.bool).scatter_(1, masks.context, True)
        assert not bool(dense.gather(1, masks.target).any()), "context and target overlap"
        assert bool((masks.context[:, 1:] > masks.context[:, :-1]).all())
        if kwargs.get("full_complement"):
            assert sizes[0] + sizes[1] == grid.num_tokens
        shorter += batch_min(8, grid, ref).context.shape[1] < sizes[0]
    assert shorter <= 10  # the 10 % quantile: a batch's own minimum is rarely below it


def test_fixed_lengths_redraw_a_batch_that_falls_short() -> None:
    grid = TokenGrid(4, 8, 8)
    strategy = MultiBlock3D(num_blocks=2, spatial_scale=0.7, lengths="fixed", fixed_quantile=0.4)
    k, m = strategy.fixed_lengths(8, grid)
    calls = []
    sample = strategy.sample_context

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return sample(*args, **kwargs)

    strategy.sample_context = counted  # type: ignore[method-assign]
    gen = _gen(0)
    for _ in range(30):
        masks = strategy(8, grid, gen)
        assert masks.context.shape[1] == k and masks.target.shape[1] == m
    assert len(calls) > 30  # at the 40 % quantiles many batches need a redraw
