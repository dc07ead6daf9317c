"""What ``masks.N.lengths: fixed`` does to a recipe's masks, against the default ``batch-min``.

For every mask group of the recipe: context and target tokens per sample, the distinct
(context, target) sizes (each one a compile of a ``train.compile`` step), the share of batches
redrawn (after the one-off calibration), and the share of context tokens in the clip's last
time step (which equal-length cutting must not bias). docs/performance.md has the figures.

    python scripts/mask_length_stats.py mixed/baseline --size paper --batch 32
    python scripts/mask_length_stats.py synth/baseline --batch 16
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from jepactl.bench import size_overrides
from jepactl.grid import TokenGrid
from jepactl.masks import build_mask_strategy
from jepactl.recipe import load_recipe


def stats(spec: dict[str, Any], grid: TokenGrid, batch: int, batches: int) -> str:
    strategy = build_mask_strategy(spec)
    if spec.get("lengths") == "fixed":
        strategy.fixed_lengths(batch, grid)  # type: ignore[attr-defined]  # calibrate first
    draws = [0]
    sample = strategy.sample_context  # type: ignore[attr-defined]

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        draws[0] += 1
        return sample(*args, **kwargs)

    strategy.sample_context = counted  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(123)
    context, target, last, shapes = [], [], [], set()
    for _ in range(batches):
        masks = strategy(batch, grid, gen)
        context.append(masks.context.shape[1])
        target.append(masks.target.shape[1])
        shapes.add((context[-1], target[-1]))
        t = grid.coords(masks.context)[..., 0]
        last.append(float((t == grid.t - 1).float().mean()))
    redrawn = (draws[0] - batches) / draws[0]
    return (
        f"context {statistics.mean(context):.1f}, target {statistics.mean(target):.1f}, "
        f"{len(shapes)} shapes, {redrawn:.1%} redrawn, last step {statistics.mean(last):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--size", choices=("synth", "paper"), default="synth")
    parser.add_argument("--batch", type=int, default=16, help="samples per batch (per rank)")
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, size_overrides(args.recipe, args.size))
    d, m = recipe.data, recipe.model
    grid = TokenGrid.of_clip(d.num_frames, d.crop, d.crop, m.patch_size, m.tubelet)
    print(f"{args.recipe}: grid {grid.t} x {grid.h} x {grid.w}, batch {args.batch}")
    for i, spec in enumerate(recipe.masks):
        for extra in ({"lengths": "batch-min"}, {"lengths": "fixed", "fixed_quantile": 0.1},
                      {"lengths": "fixed", "fixed_quantile": 0.25}):  # fmt: skip
            label = ", ".join(f"{k} {v}" for k, v in extra.items())
            figures = stats({**spec, **extra}, grid, args.batch, args.batches)
            print(f"  group {i}, {label}: {figures}")


if __name__ == "__main__":
    main()
