"""Benchmarks: what each recipe's objective costs per training step, measured, not asserted.

``jepactl bench step-time`` trains every requested recipe for a few steps at the synthetic CPU
size (``recipes/base/synth.yaml`` applied on top of the recipe), on one pre-rendered batch so
that data loading is out of the picture, and reports the median step time and its ratio to the
baseline measured in the same process.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import torch
import yaml

from jepactl.config import Recipe, list_recipes, load_recipe, recipes_root
from jepactl.data.loader import Collator, StepDataset, build_source
from jepactl.masks import build_mask_strategy
from jepactl.train.loop import train_step
from jepactl.train.model import JEPA
from jepactl.train.optim import build_optimizer, learning_rate

BASELINE = "synth/baseline"


def flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """A nested mapping as ``--set``-style ``a.b=value`` overrides (values in YAML flow style)."""
    out: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out += flatten(value, path)
        else:
            text = yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()
            out.append(f"{path}={text}")
    return out


def synth_profile() -> list[str]:
    """The overrides that make any recipe CPU-sized on the synthetic source."""
    raw = yaml.safe_load((recipes_root() / "base" / "synth.yaml").read_text())
    return flatten(raw)


def _profiled(name: str) -> Recipe:
    overrides = [] if name.startswith("synth/") else synth_profile()
    recipe = load_recipe(name, overrides)
    recipe.data.num_workers = 0
    return recipe


@dataclass
class StepTime:
    recipe: str
    ms_per_step: float
    ratio: float


def time_recipe(recipe: Recipe, steps: int, warmup: int) -> float:
    """Median wall time (ms) of one training step after ``warmup`` steps, on CPU."""
    device = torch.device("cpu")
    torch.manual_seed(recipe.train.seed)
    model = JEPA(recipe).train()
    optimizer = build_optimizer(model.trainable(), recipe.optim)
    source = build_source(recipe.data, recipe.train.seed)
    collator = Collator(
        [build_mask_strategy(spec) for spec in recipe.masks],
        recipe.model.patch_size,
        recipe.model.tubelet,
        recipe.train.seed,
        rank=0,
    )
    data = StepDataset(source)
    batch = collator([data[(0, i)] for i in range(recipe.data.batch_size)])
    times = []
    for step in range(warmup + steps):
        lr = learning_rate(step, recipe.optim)
        t0 = time.perf_counter()
        train_step(model, model, optimizer, batch, step, lr, recipe, device)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times[warmup:])


def step_times(patterns: list[str], steps: int = 8, warmup: int = 3) -> list[StepTime]:
    """Time the recipes matching ``patterns`` (globs over recipe names) and the baseline."""
    names = [n for n in list_recipes() if any(fnmatch(n, p) for p in patterns)]
    base_ms = time_recipe(_profiled(BASELINE), steps, warmup)
    rows = [StepTime(BASELINE, base_ms, 1.0)]
    for name in names:
        if name == BASELINE:
            continue
        ms = time_recipe(_profiled(name), steps, warmup)
        rows.append(StepTime(name, ms, ms / base_ms))
    return rows


def markdown(rows: list[StepTime], header: str) -> str:
    lines = [header, "", "| recipe | ms / step | × baseline |", "|---|---:|---:|"]
    lines += [f"| `{r.recipe}` | {r.ms_per_step:.0f} | {r.ratio:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"
