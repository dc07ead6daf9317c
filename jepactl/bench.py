"""Benchmarks: what each recipe's objective costs per training step, measured, not asserted.

``jepactl bench step-time`` trains every requested recipe for a few steps at the synthetic CPU
size (``recipes/base/synth.yaml`` applied on top of the recipe), on one pre-rendered batch so
that data loading is out of the picture, and reports the median step time and its ratio to the
baseline measured in the same process.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
import yaml

from jepactl.config import Recipe, list_recipes, recipes_root
from jepactl.data.loader import Collator, StepDataset
from jepactl.data.sources import build_source
from jepactl.dist import DistInfo
from jepactl.masks import build_mask_strategy
from jepactl.optim import build_optimizer, learning_rate
from jepactl.recipe import load_recipe
from jepactl.train.guard import NonFiniteGuard
from jepactl.train.loop import train_step
from jepactl.train.model import JEPA

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


def _profiled(name: str, size: str) -> Recipe:
    """The recipe at the synthetic CPU size (``synth``) or as written, on synthetic clips
    (``paper``)."""
    if size == "paper":
        overrides = ["data.source=synth"]
    else:
        overrides = [] if name.startswith("synth/") else synth_profile()
    recipe = load_recipe(name, overrides)
    recipe.data.num_workers = 0
    return recipe


@dataclass
class StepTime:
    recipe: str
    ms_per_step: float
    ratio: float
    max_mem_gib: float | None = None


def time_recipe(
    recipe: Recipe,
    steps: int,
    warmup: int,
    device: torch.device,
    check_syncs: bool = False,
) -> tuple[float, float | None]:
    """Median wall time (ms) of one training step after ``warmup`` steps, and the peak GPU
    memory (GiB, CUDA only). ``check_syncs`` makes any host-device synchronisation inside the
    timed steps an error (CUDA's sync debug mode): the step must never wait on the GPU."""
    torch.manual_seed(recipe.train.seed)
    model = JEPA(recipe).to(device).train()
    optimizer = build_optimizer(model.trainable(), recipe.optim)
    source = build_source(recipe.data, recipe.train.seed)
    collator = Collator(
        [build_mask_strategy(spec) for spec in recipe.masks],
        recipe.model.patch_size,
        recipe.model.tubelet,
        recipe.train.seed,
        rank=0,
    )
    data = StepDataset(source, recipe.train.seed)
    batch = collator([data[(0, i, i)] for i in range(recipe.data.batch_size)])
    cuda = device.type == "cuda"
    if cuda:
        batch = batch.pin_memory()
        torch.cuda.reset_peak_memory_stats(device)
    guard, info = NonFiniteGuard(0, device), DistInfo(0, 1, 0, device)  # as the loop runs it
    times = []
    for step in range(warmup + steps):
        lr = learning_rate(step, recipe.optim)
        if cuda:
            torch.cuda.synchronize(device)
            if check_syncs and step >= warmup:
                torch.cuda.set_sync_debug_mode("error")
        t0 = time.perf_counter()
        try:
            train_step(model, model, optimizer, batch, step, lr, recipe, device, guard, info)
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize(device)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        times.append(time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return 1000.0 * statistics.median(times[warmup:]), mem


def step_times(
    patterns: list[str],
    steps: int = 8,
    warmup: int = 3,
    device: str = "cpu",
    size: str = "synth",
    check_syncs: bool = False,
) -> list[StepTime]:
    """Time the recipes matching ``patterns`` (globs over recipe names) and the baseline
    (``synth/baseline`` at the synthetic size, ``mixed/baseline`` at the paper's)."""
    dev = torch.device(device)
    baseline = BASELINE if size == "synth" else "mixed/baseline"
    names = [n for n in list_recipes() if any(fnmatch(n, p) for p in patterns)]
    if size == "paper":
        names = [n for n in names if not n.startswith("synth/")]
    base_ms, base_mem = time_recipe(_profiled(baseline, size), steps, warmup, dev, check_syncs)
    rows = [StepTime(baseline, base_ms, 1.0, base_mem)]
    for name in names:
        if name == baseline:
            continue
        ms, mem = time_recipe(_profiled(name, size), steps, warmup, dev, check_syncs)
        rows.append(StepTime(name, ms, ms / base_ms, mem))
    return rows


def markdown(rows: list[StepTime], header: str) -> str:
    """The rows as a Markdown table (with a peak-memory column for GPU measurements)."""
    gpu = any(r.max_mem_gib is not None for r in rows)
    lines = [header, "", "| recipe | ms / step | × baseline |" + (" peak GiB |" if gpu else "")]
    lines.append("|---|---:|---:|" + ("---:|" if gpu else ""))
    for r in rows:
        mem = f" {r.max_mem_gib:.1f} |" if r.max_mem_gib is not None else ""
        lines.append(f"| `{r.recipe}` | {r.ms_per_step:.0f} | {r.ratio:.2f} |{mem}")
    return "\n".join(lines) + "\n"


def probe_cache_vs_reencode(
    run_dir: Path,
    bench: str = "synth-shapes",
    epochs: int = 50,
    limit: int | None = 400,
    seed: int = 0,
    num_workers: int = 0,
) -> dict[str, float]:
    """Wall time and accuracy of a probe trained from the token cache (encode once, then
    ``epochs`` passes over the cache) against the V-JEPA protocol, which re-decodes and
    re-encodes every training clip on every epoch. Same probe, optimiser, schedule, batch
    size and seed; the frozen encoder's output is the same either way (no augmentation), so
    the two accuracies should agree within the noise of float16 storage and batch order.
    """
    from jepactl.dist import resolve_device
    from jepactl.features.clips import EvalSource, eval_loader
    from jepactl.features.encoder import encode_clips, load_frozen_encoder
    from jepactl.features.extract import extract_features
    from jepactl.features.registry import get_benchmark
    from jepactl.probe.heads import build_probe
    from jepactl.probe.train import HeadTrainer, train_probe
    from jepactl.rundir import RunDir
    from jepactl.utils import derive_seed

    b = get_benchmark(bench)
    device = resolve_device("auto")  # both protocols on the same device and precision
    shutil.rmtree(RunDir(run_dir).features(b.name), ignore_errors=True)  # time a real build
    t0 = time.perf_counter()
    paths = extract_features(run_dir, b, ("train", "val"), limit=limit,
                             num_workers=num_workers, progress=False)  # fmt: skip
    cached = train_probe(paths["train"], paths["val"], probe=b.probe, epochs=epochs, lr=b.lr,
                         wd=b.wd, batch_size=b.batch_size, seed=seed, progress=False,
                         device=str(device), bf16=False)  # fmt: skip
    t_cache = time.perf_counter() - t0

    t0 = time.perf_counter()
    frozen = load_frozen_encoder(run_dir, "auto", device=device)
    train, val = EvalSource(b, "train", limit=limit), EvalSource(b, "val", limit=limit)
    torch.manual_seed(seed)
    head = build_probe(b.probe, frozen.encoder.embed_dim, b.num_classes).to(device)
    steps = epochs * -(-len(train) // b.batch_size)
    trainer = HeadTrainer(head, b.lr, b.wd, steps)  # the probe's own step, schedule and AdamW
    gen = torch.Generator().manual_seed(derive_seed(seed, "probe-shuffle"))
    for _ in range(epochs):  # every epoch decodes and encodes every clip again
        order = torch.randperm(len(train), generator=gen).tolist()
        for batch in eval_loader(train, order, b.batch_size, num_workers):
            x = encode_clips(frozen.encoder, batch.clips).flatten(0, 1)
            y = batch.labels.to(device).repeat_interleave(batch.clips.shape[1])
            trainer.step(x, y)
    head.eval()
    correct = 0
    with torch.no_grad():
        for batch in eval_loader(val, range(len(val)), 64, num_workers):
            tokens = encode_clips(frozen.encoder, batch.clips)
            probs = head(tokens.flatten(0, 1)).softmax(-1).unflatten(0, tokens.shape[:2])
            correct += int((probs.mean(1).argmax(-1).cpu() == batch.labels).sum())
    t_reencode = time.perf_counter() - t0
    return {
        "cache_s": t_cache,
        "reencode_s": t_reencode,
        "speedup": t_reencode / t_cache,
        "cache_top1": cached["top1"],
        "reencode_top1": 100.0 * correct / len(val),
        "majority": cached["majority"],
        "n_train": float(len(train)),
        "n_val": float(len(val)),
    }
