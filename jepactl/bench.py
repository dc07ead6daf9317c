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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from jepactl.config import Recipe, list_recipes, recipes_root
from jepactl.data.loader import Collator, StepDataset
from jepactl.data.sources import build_source
from jepactl.dist import DistInfo
from jepactl.masks import build_mask_strategy
from jepactl.optim import build_optimizer, learning_rate
from jepactl.recipe import load_recipe
from jepactl.train.compiled import compile_losses
from jepactl.train.guard import NonFiniteGuard
from jepactl.train.loop import train_step
from jepactl.train.model import JEPA

if TYPE_CHECKING:
    from jepactl.features.benchmarks import Benchmark

BASELINE = "synth/baseline"
#: The reference recipe of the step benchmarks at each size.
BASELINE_FOR_SIZE = {"synth": BASELINE, "paper": "mixed/baseline"}


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


def size_overrides(name: str, size: str) -> list[str]:
    """The overrides that run recipe ``name`` at the synthetic CPU size (``synth``) or as
    written, on synthetic clips (``paper``)."""
    if size == "paper":
        return ["data.source=synth"]
    return [] if name.startswith("synth/") else synth_profile()


def _profiled(name: str, size: str) -> Recipe:
    """The recipe at ``size`` (:func:`size_overrides`), with its batches made in-process."""
    recipe = load_recipe(name, size_overrides(name, size))
    recipe.data.num_workers = 0
    return recipe


@dataclass
class StepTime:
    recipe: str
    ms_per_step: float
    ratio: float
    max_mem_gib: float | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PreparedStep:
    """One recipe's model, optimizer and a pre-rendered batch, stepping as the loop does."""

    def __init__(
        self, name: str, recipe: Recipe, device: torch.device, compiled: bool = False
    ) -> None:
        self.name, self.recipe, self.device = name, recipe, device
        self.compiled = compiled
        self.label = f"{name} (compiled)" if compiled else name
        torch.manual_seed(recipe.train.seed)
        self.model = JEPA(recipe).to(device).train()
        self.eager_losses = self.model.losses
        if compiled:
            compile_losses(self.model)
        self.optimizer = build_optimizer(self.model.trainable(), recipe.optim)
        source = build_source(recipe.data, recipe.train.seed)
        strategies = [build_mask_strategy(spec) for spec in recipe.masks]
        collator = Collator(strategies, recipe.model.patch_size, recipe.model.tubelet,
                            recipe.train.seed, rank=0)  # fmt: skip
        data = StepDataset(source, recipe.train.seed)
        batch = collator([data[(0, i, i)] for i in range(recipe.data.batch_size)])
        self.batch = batch.pin_memory() if device.type == "cuda" else batch
        self.guard = NonFiniteGuard(0, device)
        self.info = DistInfo(0, 1, 0, device)
        self.step = 0

    def __call__(self) -> None:
        lr = learning_rate(self.step, self.recipe.optim)
        train_step(self.model, self.model, self.optimizer, self.batch, self.step, lr,
                   self.recipe, self.device, self.guard, self.info)  # fmt: skip
        self.step += 1

    def flops(self) -> int:
        """FLOPs of one step, counted on the eager step (a compiled one does the same math,
        which the counter cannot see inside a compiled graph)."""
        compiled, self.model.losses = self.model.losses, self.eager_losses  # type: ignore[method-assign]
        try:
            return count_flops(self)
        finally:
            self.model.losses = compiled  # type: ignore[method-assign]

    def timed(self, steps: int, check_syncs: bool = False) -> list[float]:
        """Wall time of each of ``steps`` steps, the device drained before and after each.
        ``check_syncs`` (CUDA): a host-device synchronisation inside a step is an error."""
        check = check_syncs and self.device.type == "cuda"
        times = []
        for _ in range(steps):
            _sync(self.device)
            if check:
                torch.cuda.set_sync_debug_mode("error")
            t0 = time.perf_counter()
            try:
                self()
                if check:
                    torch.cuda.set_sync_debug_mode("default")
                _sync(self.device)
            finally:
                if check:
                    torch.cuda.set_sync_debug_mode("default")
            times.append(time.perf_counter() - t0)
        return times


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
    step = PreparedStep(recipe.display_name, recipe, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step.timed(warmup)
    times = step.timed(steps, check_syncs)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return 1000.0 * statistics.median(times), mem


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
    baseline = BASELINE_FOR_SIZE[size]
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


def pretrain_markdown(result: dict[str, Any]) -> str:
    """``jepactl bench pretrain``'s result as the Markdown that ``docs/performance.md`` keeps."""
    c = result["ceiling"]
    lines = [
        f"Measured {result['date']} on {result['machine']} ({result['threads']} threads, torch "
        f"{result['torch']}), {result['size']} size, {result['precision']}; ceiling: dense "
        f"{c['dtype']} {c['n']}² matrix product at {c['tflops']:.3f} TFLOP/s; median of "
        f"{result['rounds']} interleaved rounds × {result['steps']} steps after "
        f"{result['warmup']} warm-up steps each, one pre-rendered batch.",
        "",
        "| recipe | step | ms / step | × first | GFLOP / step | TFLOP/s | MFU | clips/s "
        "| first step s |" + (" peak GiB |" if result["device"] == "cuda" else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if result["device"] == "cuda" else ""),
    ]
    for r in result["recipes"]:
        mem = f" {r['max_mem_gib']:.1f} |" if r["max_mem_gib"] is not None else ""
        lines.append(
            f"| `{r['recipe']}` | {'compiled' if r.get('compiled') else 'eager'} "
            f"| {r['ms_per_step']:.0f} ({r['ms_min']:.0f}–{r['ms_max']:.0f}) "
            f"| {r['ratio']:.2f} | {r['gflop_per_step']:.1f} | {r['tflops']:.3f} "
            f"| {100 * r['mfu']:.1f} % | {r['clips_per_s']:.1f} "
            f"| {r.get('first_step_s', float('nan')):.1f} |{mem}"
        )
    loader = result.get("loader")
    if loader:
        lines += [
            "",
            f"Data wait (`{loader['recipe']}`, {loader['steps']} steps of a real `pretrain` "
            f"reading {loader['videos']} H.264 files of {loader['video_size'][0]}×"
            f"{loader['video_size'][1]}, {loader['num_workers']} loader worker(s)): "
            f"{100 * loader['data_wait_frac']:.1f} % of wall time, {loader['clips_per_s']:.1f} "
            "clips/s.",
        ]
    return "\n".join(lines) + "\n"


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
    device: str = "auto",
) -> dict[str, float]:
    """Wall time and accuracy of a probe trained from the token cache (encode once, then
    ``epochs`` passes over the cache) against the V-JEPA protocol, which re-decodes and
    re-encodes every training clip on every epoch. Same probe, optimiser, schedule, batch
    size and seed; the frozen encoder's output is the same either way (no augmentation), so
    the two accuracies should agree within the noise of float16 storage and batch order.
    """
    from jepactl.dist import resolve_device
    from jepactl.features.extract import extract_features
    from jepactl.features.registry import get_benchmark
    from jepactl.probe.records import probe_settings
    from jepactl.probe.train import train_probe
    from jepactl.rundir import RunDir

    b = get_benchmark(bench)
    dev = resolve_device(device)  # both protocols on the same device and precision
    shutil.rmtree(RunDir(run_dir).features(b.name), ignore_errors=True)  # time a real build
    t0 = time.perf_counter()
    paths = extract_features(run_dir, b, ("train", "val"), limit=limit,
                             num_workers=num_workers, progress=False, device=str(dev))  # fmt: skip
    # the task's torch head (never scikit-learn: the re-encoding side trains that head too)
    settings = probe_settings(b, b.probe, False, epochs=epochs, seed=seed, schedule="cosine",
                              progress=False)  # fmt: skip
    cached = train_probe(paths["train"], paths["val"], settings, device=str(dev), bf16=False)
    t_cache = time.perf_counter() - t0
    again = _reencode_probe(run_dir, b, epochs, limit, seed, num_workers, dev)
    return {
        "cache_s": t_cache,
        "reencode_s": again.seconds,
        "speedup": again.seconds / t_cache,
        "cache_top1": cached.top1,
        "reencode_top1": 100.0 * again.correct / again.n_val,
        "majority": float("nan") if cached.majority is None else cached.majority,
        "n_train": float(again.n_train),
        "n_val": float(again.n_val),
    }


@dataclass
class _Reencoded:
    """The V-JEPA protocol's probe: its wall time, correct val clips and split sizes."""

    seconds: float
    correct: int
    n_train: int
    n_val: int


def _reencode_probe(
    run_dir: Path,
    b: Benchmark,
    epochs: int,
    limit: int | None,
    seed: int,
    num_workers: int,
    dev: torch.device,
) -> _Reencoded:
    """Train and score the probe as the V-JEPA protocol does: every epoch decodes and
    encodes every training clip again (timed from the encoder's load)."""
    from jepactl.features.clips import EvalSource, eval_loader
    from jepactl.features.encoder import encode_clips, load_frozen_encoder
    from jepactl.probe.heads import build_probe
    from jepactl.probe.train import HeadTrainer
    from jepactl.utils import derive_seed

    t0 = time.perf_counter()
    frozen = load_frozen_encoder(run_dir, "auto", device=dev)
    train, val = EvalSource(b, "train", limit=limit), EvalSource(b, "val", limit=limit)
    torch.manual_seed(seed)
    head = build_probe(b.probe, frozen.encoder.embed_dim, b.num_classes).to(dev)
    steps = epochs * -(-len(train) // b.batch_size)
    trainer = HeadTrainer(head, b.lr, b.wd, steps)  # the probe's own step, schedule and AdamW
    gen = torch.Generator().manual_seed(derive_seed(seed, "probe-shuffle"))
    for _ in range(epochs):  # every epoch decodes and encodes every clip again
        order = torch.randperm(len(train), generator=gen).tolist()
        for batch in eval_loader(train, order, b.batch_size, num_workers):
            x = encode_clips(frozen.encoder, batch.clips).flatten(0, 1)
            y = batch.labels.to(dev).repeat_interleave(batch.clips.shape[1])
            trainer.step(x, y)
    head.eval()
    correct = 0
    with torch.no_grad():
        for batch in eval_loader(val, range(len(val)), 64, num_workers):
            tokens = encode_clips(frozen.encoder, batch.clips)
            probs = head(tokens.flatten(0, 1)).softmax(-1).unflatten(0, tokens.shape[:2])
            correct += int((probs.mean(1).argmax(-1).cpu() == batch.labels).sum())
    return _Reencoded(time.perf_counter() - t0, correct, len(train), len(val))


# ---------------------------------------------------------------------------------------------
# jepactl bench pretrain: step time, FLOPs, MFU against the machine's measured ceiling, and the
# data-wait fraction of a real loader run.


def _sdpa_cpu_flops(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(query, key, value))


def _sdpa_cpu_backward_flops(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return int(sdpa_backward_flop_count(grad_out, query, key, value))


#: FLOP formulas torch's counter lacks: the CPU flash-attention kernels (forward, backward).
EXTRA_FLOP_FORMULAS: dict[Any, Any] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops,
}


def count_flops(fn: Any) -> int:
    """FLOPs of the matrix products, convolutions and attention ``fn()`` runs (forward and
    backward), counted from shapes by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_ceiling(device: torch.device, dtype: torch.dtype, reps: int = 8) -> dict[str, Any]:
    """The machine's dense matrix-product rate at ``dtype`` (TFLOP/s, best of ``reps``): the
    ceiling MFU is measured against. Square products of 2048 on a CPU, 8192 on a GPU."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):  # the first is warm-up
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "tflops": 2 * n**3 / best / 1e12}


def pretrain_bench(
    names: list[str],
    size: str = "synth",
    device: str = "cpu",
    steps: int = 3,
    rounds: int = 3,
    warmup: int = 2,
    loader_steps: int = 20,
    progress: Any = None,
    compiled: Sequence[bool] = (False,),
) -> dict[str, Any]:
    """Measure, in one process: the dense matrix-product ceiling at the training dtype; then,
    for every recipe, the median step time over ``rounds`` interleaved rounds of ``steps``
    steps (every recipe warmed up before any is timed), the FLOPs of one step, the achieved
    FLOP/s and MFU against the ceiling, clips/s and peak GPU memory; and the data-wait fraction
    of a real ``pretrain`` run of the first recipe on synthetic clips written as video files
    (``loader_steps`` steps; 0 skips it). ``compiled`` lists the variants of each recipe:
    eager (False) and/or compiled as ``train.compile`` does (True); each row records its first
    step's time, compilation included."""
    from jepactl.config import autocast_bf16

    say = progress or (lambda text: None)
    dev = torch.device(device)
    recipes = {name: _profiled(name, size) for name in names}
    first = next(iter(recipes.values()))
    dtype = torch.bfloat16 if autocast_bf16(first.train.precision, dev.type) else torch.float32
    say(f"ceiling: dense {dtype} matrix products")
    ceiling = matmul_ceiling(dev, dtype)
    prepared, memory, first_step = _warmed_up(recipes, dev, warmup, say, compiled)
    flops = {p.label: p.flops() for p in prepared}
    times: dict[str, list[float]] = {p.label: [] for p in prepared}
    for r in range(rounds):
        for p in prepared:
            say(f"round {r + 1}/{rounds}: {p.label}")
            times[p.label] += p.timed(steps)
    rows = _recipe_rows(prepared, times, flops, memory, ceiling, first_step)
    loader = None
    if loader_steps > 0:
        say(f"loader: {names[0]} from video files, {loader_steps} steps")
        loader = loader_wait(names[0], size, device, loader_steps)
    return _bench_result(dev, size, device, dtype, ceiling, steps, rounds, warmup, rows, loader)


def _warmed_up(
    recipes: dict[str, Recipe],
    dev: torch.device,
    warmup: int,
    say: Callable[[str], Any],
    compiled: Sequence[bool] = (False,),
) -> tuple[list[PreparedStep], dict[str, float | None], dict[str, float]]:
    """Each recipe (in each ``compiled`` variant) prepared and stepped ``warmup`` times (at
    least once), in order, with the peak GPU memory (GiB above what was allocated before it;
    ``None`` on a CPU) it took and the time of its first step (compilation included)."""
    prepared: list[PreparedStep] = []
    memory: dict[str, float | None] = {}
    first: dict[str, float] = {}
    for name, recipe in recipes.items():
        for variant in compiled:
            p = PreparedStep(name, recipe, dev, variant)
            say(f"warm-up: {p.label}")
            before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            first[p.label] = p.timed(1)[0]
            for _ in range(warmup - 1):
                p()
            _sync(dev)
            memory[p.label] = (
                (torch.cuda.max_memory_allocated(dev) - before) / 2**30
                if dev.type == "cuda"
                else None
            )
            prepared.append(p)
    return prepared, memory, first


def _recipe_rows(
    prepared: list[PreparedStep],
    times: dict[str, list[float]],
    flops: dict[str, int],
    memory: dict[str, float | None],
    ceiling: dict[str, Any],
    first: dict[str, float],
) -> list[dict[str, Any]]:
    """One result row per recipe and variant: its median step time (and ratio to the first
    row's), FLOPs, achieved FLOP/s, MFU, clips/s, peak memory and first-step time."""
    base = statistics.median(times[prepared[0].label])
    rows: list[dict[str, Any]] = []
    for p in prepared:
        key = p.label
        sec = statistics.median(times[key])
        achieved = flops[key] / sec / 1e12
        rows.append({
            "recipe": p.name,
            "compiled": p.compiled,
            "first_step_s": first[key],
            "ms_per_step": 1000 * sec,
            "ms_min": 1000 * min(times[key]),
            "ms_max": 1000 * max(times[key]),
            "ratio": sec / base,
            "gflop_per_step": flops[key] / 1e9,
            "tflops": achieved,
            "mfu": achieved / ceiling["tflops"],
            "clips_per_s": p.recipe.data.batch_size / sec,
            "max_mem_gib": memory[key],
            "timed_steps": len(times[key]),
        })  # fmt: skip
    return rows


def _bench_result(
    dev: torch.device,
    size: str,
    device: str,
    dtype: torch.dtype,
    ceiling: dict[str, Any],
    steps: int,
    rounds: int,
    warmup: int,
    rows: list[dict[str, Any]],
    loader: dict[str, Any] | None,
) -> dict[str, Any]:
    """:func:`pretrain_bench`'s result: the machine and settings, the rows and the loader's."""
    import platform

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": size,
        "device": device,
        "precision": str(dtype).removeprefix("torch."),
        "ceiling": ceiling,
        "steps": steps,
        "rounds": rounds,
        "warmup": warmup,
        "platform": platform.platform(),
        "recipes": rows,
        "loader": loader,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def loader_wait(name: str, size: str, device: str, steps: int, videos: int = 32) -> dict[str, Any]:
    """The data-wait fraction of a real ``pretrain`` of ``name`` for ``steps`` steps, reading
    ``videos`` synthetic clips written as H.264 files (a ``folders`` dataset in a temporary
    directory, page cache warm) through the recipe's decoder, augmentation and DataLoader
    workers. The first logged interval (worker start-up) is left out."""
    import contextlib
    import sys
    import tempfile

    from jepactl.data.synthetic import SyntheticVideoSource
    from jepactl.data.writer import write_video
    from jepactl.rundir import RunDir
    from jepactl.train.loop import pretrain
    from jepactl.train.metrics import read_metrics

    overrides = size_overrides(name, size)
    recipe = load_recipe(name, overrides)  # as pretrain runs it: its own loader workers
    frames = recipe.data.num_frames * recipe.data.frame_stride + 8
    short = recipe.data.decode_short_side
    side = short + short // 4 - (short + short // 4) % 2  # 4:5 frames, even sizes
    with tempfile.TemporaryDirectory(prefix="jepactl-bench-") as tmp:
        root = Path(tmp) / "videos"
        source = SyntheticVideoSource(num_frames=frames, size=short, seed=0)
        for i in range(videos):
            clip = source[i].clip  # [T, S, S, 3]
            wide = torch.nn.functional.interpolate(
                clip.permute(0, 3, 1, 2).float(), size=(short, side), mode="bilinear"
            )
            write_video(root / f"class{i % 4}" / f"clip{i:03d}.mp4",
                        wide.round().clamp(0, 255).byte().permute(0, 2, 3, 1), gop=16)  # fmt: skip
        overrides += ["data.source=folders", f"data.roots.folders={root}",
                      "train.log_every=5", f"train.checkpoint_every={steps}", "monitor.every=0",
                      f"train.device={device}"]  # fmt: skip
        run_dir = Path(tmp) / "run"
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the results
            pretrain(name, overrides, run_dir=run_dir, max_steps=steps, progress=False)
        timed = [
            (line.data_wait_frac, line.clips_per_s)
            for line in read_metrics(RunDir(run_dir).metrics)
            if line.data_wait_frac is not None and line.clips_per_s is not None
        ]
    later = timed[1:] or timed
    return {
        "recipe": name,
        "videos": videos,
        "video_size": [short, side],
        "steps": steps,
        "num_workers": recipe.data.num_workers,
        "data_wait_frac": statistics.mean(wait for wait, _ in later),
        "clips_per_s": statistics.mean(rate for _, rate in later),
    }
