"""``jepactl synth-motion``: the one-shot Table 6 command, over the ordinary path.

For each run and each data seed it builds the task's benchmark
(:func:`jepactl.features.synth_motion.motion_benchmark`: the clips are generated once and
cached), extracts the frozen encoder's tokens (:func:`jepactl.features.extract.
extract_features`) and trains the protocol's probe (:func:`jepactl.probe.train.train_probe`),
exactly as ``jepactl extract-features RUN --task synth-motion`` followed by ``jepactl probe
synth-motion --run RUN`` do for data seed 0. ``--seeds N`` repeats the data draw and the probe
over seeds ``0 .. N-1`` (data seed = probe seed); the result is the mean with the sample
standard deviation and a 95% Student-t interval of the mean
(:func:`jepactl.stats.summarize`), written to ``RUN/probes/synth-motion-<task>.json``
(``synth-motion-<task>-reference.json`` under the reference protocol), which ``jepactl
compare`` reads as one column each.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jepactl.dist import resolve_device
from jepactl.errors import CheckpointError, ConfigError
from jepactl.features.encoder import WEIGHTS
from jepactl.features.extract import extract_features
from jepactl.features.synth_motion import (
    GENERATOR_VERSION,
    TASKS,
    Protocol,
    check_task,
    data_spec,
    ensure_dataset,
    get_protocol,
    motion_benchmark,
)
from jepactl.probe.records import (
    ProbeResult,
    SeedScore,
    SynthMotionResult,
    probe_settings,
    write_result_file,
)
from jepactl.probe.train import train_probe
from jepactl.rundir import RunDir
from jepactl.stats import summarize
from jepactl.utils import suggestion

ProgressCallback = Callable[[str], None]


def score_run(
    run_dir: Path,
    task: str = "directions",
    protocol: str | Protocol = "default",
    seeds: int = 1,
    weights: str = "auto",
    device: str = "auto",
    cache_dir: Path | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    keep_features: bool = False,
    progress: bool = True,
    say: ProgressCallback | None = None,
    checkpoint: Path | None = None,
) -> SynthMotionResult:
    """Score ``run_dir``'s frozen encoder on ``task`` over ``seeds`` data draws and probes.

    Returns the result written to ``RUN/probes/<result_name(task, protocol)>.json``
    (``synth-motion-<task>.json`` for the default protocol): the probe result
    of the first seed (checkpoint, weights, protocol...) with ``top1``/``top5`` replaced by
    their means over seeds, plus ``top1_std``, ``top1_ci95``, ``n_seeds``, ``per_seed``,
    ``protocol_name`` and ``task``. Feature caches are deleted after probing unless
    ``keep_features`` (they are cheap to recompute from the cached clips); a kept cache built
    with other settings (e.g. an older protocol) is rebuilt, a matching one reused. With
    ``checkpoint``, the encoder is that file's (any layout of :mod:`jepactl.models.upstream`)
    and ``run_dir`` only receives the result.
    """
    check_task(task)
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    run_dir = _checked_run_dir(run_dir, seeds, weights, device, checkpoint)
    name = result_name(task, proto)  # the result's file stem and its ``bench``
    job = _Scoring(run_dir, task, proto, seeds, weights, device, cache_dir, batch_size,
                   num_workers, keep_features, progress, say, checkpoint)  # fmt: skip
    per_seed: list[SeedScore] = []
    kept: list[dict[str, str]] = []
    first: ProbeResult | None = None
    for seed in range(seeds):
        result, root = _score_seed(job, seed, kept)
        first = first or result
        per_seed.append(_seed_row(seed, result, root))
    assert first is not None
    out = _summary(job, name, first, per_seed, kept)
    write_result_file(RunDir(run_dir).result(name), out)  # keyed by protocol: one kind each
    return out


@dataclass
class _Scoring:
    """What :func:`score_run` was asked to score, and how."""

    run_dir: Path
    task: str
    proto: Protocol
    seeds: int
    weights: str
    device: str
    cache_dir: Path | None
    batch_size: int
    num_workers: int
    keep_features: bool
    progress: bool
    say: ProgressCallback | None
    checkpoint: Path | None


def _checked_run_dir(
    run_dir: Path, seeds: int, weights: str, device: str, checkpoint: Path | None
) -> Path:
    """Refuse, before minutes of clip writing, what would fail later; return ``run_dir`` as
    a :class:`Path`."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if weights not in WEIGHTS:  # checked before minutes of clip writing, not after
        raise ConfigError(f"unknown weights '{weights}'{suggestion(weights, WEIGHTS)}")
    resolve_device(device)  # an unknown device, or CUDA asked for and not visible
    run_dir = Path(run_dir)
    if checkpoint is not None and not Path(checkpoint).is_file():  # before writing clips
        raise CheckpointError(f"checkpoint {checkpoint} does not exist (or is not a file)")
    if checkpoint is None and not RunDir(run_dir).has_checkpoint():
        raise ConfigError(
            f"{run_dir} has no checkpoint (checkpoints/latest.pt); train it first, e.g. "
            "`jepactl pretrain --recipe synth/baseline`"
        )
    return run_dir


def _score_seed(job: _Scoring, seed: int, kept: list[dict[str, str]]) -> tuple[ProbeResult, Path]:
    """One data seed: generate (or reuse) the clips, extract the tokens, train and score the
    probe; the caches are deleted after, or appended to ``kept``. Returns the probe result
    and the dataset's root."""
    spec = data_spec(job.task, job.proto, seed)
    root = ensure_dataset(spec, job.cache_dir, num_workers=job.num_workers,
                          progress=job.progress)  # fmt: skip
    bench = motion_benchmark(spec, job.proto)
    if job.say is not None:
        job.say(f"{job.run_dir}: {job.task}, seed {seed + 1}/{job.seeds}: encoding "
                f"{spec.n_clips} clips")  # fmt: skip
    caches = extract_features(
        job.run_dir, bench, weights=job.weights, pool=bench.pool, batch_size=job.batch_size,
        num_workers=job.num_workers, force=True, roots={"synth-motion": root.parent.parent},
        progress=job.progress, device=job.device, checkpoint=job.checkpoint,
    )  # fmt: skip
    try:
        settings = probe_settings(bench, seed=seed, progress=job.progress)
        result = train_probe(caches["train"], caches["val"], settings, device=job.device)
    finally:
        if job.keep_features:
            kept.append({split: str(path) for split, path in caches.items()})
        else:
            shutil.rmtree(caches["train"].parent, ignore_errors=True)
    return result, root


def _seed_row(seed: int, result: ProbeResult, root: Path) -> SeedScore:
    """One seed's entry of the result's ``per_seed``."""
    return SeedScore(seed=seed, top1=result.top1, top5=result.top5, n_train=result.n_train,
                     n_val=result.n_val, train_loss=result.train_loss, dataset=str(root),
                     wall_time_s=result.wall_time_s)  # fmt: skip


def _summary(
    job: _Scoring,
    name: str,
    first: ProbeResult,
    per_seed: list[SeedScore],
    kept: list[dict[str, str]],
) -> SynthMotionResult:
    """The result: the first seed's probe result with the accuracies summarised over seeds."""
    top1 = summarize([r.top1 for r in per_seed])
    top5 = summarize([r.top5 for r in per_seed if r.top5 is not None])
    ci = top1["ci95"]
    base = {f.name: getattr(first, f.name) for f in dataclasses.fields(ProbeResult)}
    return SynthMotionResult(
        **{
            **base,
            "bench": name,
            "top1": round(top1["mean"], 4),
            "top5": round(top5["mean"], 4),
            "seed": 0,
            "caches": kept or None,
            "wall_time_s": round(sum(r.wall_time_s or 0.0 for r in per_seed), 3),
            # the reference profile: its protocol and weights (jepactl synth-motion --profile)
            "profile": "reference"
            if job.proto.name == "reference" and job.weights == "reference"
            else "paper",
        },
        task=job.task,
        classes=tuple(TASKS[job.task]),
        protocol_name=job.proto.name,
        top1_std=None if top1["std"] is None else round(top1["std"], 4),
        top1_ci95=None if ci is None else (round(ci[0], 4), round(ci[1], 4)),
        n_seeds=job.seeds,
        seeds=tuple(range(job.seeds)),
        per_seed=tuple(per_seed),
        generator_version=GENERATOR_VERSION,
    )


def result_name(task: str, protocol: str | Protocol) -> str:
    """``synth-motion-<task>`` for the default protocol, ``synth-motion-<task>-<protocol>``
    otherwise: the result file's name (``RUN/probes/<name>.json``) and so ``compare``'s column,
    so scoring with another protocol never overwrites, or mixes with, the default's result."""
    name = protocol if isinstance(protocol, str) else protocol.name
    return f"synth-motion-{task}" if name == "default" else f"synth-motion-{task}-{name}"
