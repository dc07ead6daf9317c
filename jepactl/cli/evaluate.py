"""``jepactl extract-features``, ``probe`` and ``synth-motion``: evaluate a frozen encoder
(:mod:`jepactl.features` encodes a task into the token cache once; :mod:`jepactl.probe`
trains a probe from it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jepactl import rundir
from jepactl.cli.common import (
    CHECKPOINT_HELP,
    DEVICE_HELP,
    EVAL_PROFILE_HELP,
    OLD_BENCH_HELP,
    TASK_HELP,
    WEIGHTS_HELP,
    MotionProtocol,
    MotionTask,
    Pool,
    ProbeHead,
    Profile,
    Weights,
    dataset_roots,
    fail,
    latest_run,
    task_datasets,
    task_name,
)
from jepactl.log import LOGGER

if TYPE_CHECKING:
    from jepactl.probe.records import SynthMotionResult

app = typer.Typer()


@app.command("extract-features")
def extract_features_cmd(
    run: Annotated[
        Path,
        typer.Argument(
            help="Run directory (with checkpoints/latest.pt); with --checkpoint, where the "
            "caches go."
        ),
    ],
    task: Annotated[str | None, typer.Option(help=TASK_HELP)] = None,
    split: Annotated[str, typer.Option(help="Comma-separated splits.")] = "train,val",
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.auto,
    pool: Annotated[
        Pool | None,
        typer.Option(help="Token pooling (default: the task's, mostly none)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per forward pass.")] = 8,
    workers: Annotated[int, typer.Option(help="Decoding worker processes.")] = 2,
    root: Annotated[
        list[str] | None,
        typer.Option(
            help="Dataset root as NAME=PATH (or a bare PATH: the task reads one dataset); "
            "synth-motion=DIR keeps its clips there."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most N clips per split (demos).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild caches that do not match.")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    bench: Annotated[str | None, typer.Option(help=OLD_BENCH_HELP, hidden=True)] = None,
    checkpoint: Annotated[Path | None, typer.Option(help=CHECKPOINT_HELP)] = None,
    pixels: Annotated[
        str | None,
        typer.Option(
            metavar="RECIPE",
            help="Raw-pixel baseline: cache the clips' pixels cut into RECIPE's encoder "
            "tubelets (name or YAML) instead of encoder tokens. RUN is then a new directory "
            "of its own, marked by its config.yaml; later extract-features and probe on it "
            "use pixels again.",
        ),
    ] = None,
    profile: Annotated[Profile, typer.Option(help=EVAL_PROFILE_HELP)] = Profile.paper,
) -> None:
    """Encode a task once with the frozen encoder into RUN/features/TASK/SPLIT.h5.

    Resumable (a killed extraction continues), refuses a cache from another checkpoint unless
    --force, and under torchrun each rank writes a shard that rank 0 merges. Next:
    `jepactl probe TASK --run RUN` (it takes the pooling from the cache).
    """
    from jepactl.features.extract import extract_features
    from jepactl.features.registry import get_benchmark

    b = get_benchmark(task_name(task, bench) or "", profile.value)
    paths = extract_features(
        run, b, split.split(","), weights.value, pool.value if pool else b.pool, batch_size,
        workers, force, dataset_roots(root, task_datasets(b)), limit, device=device,
        checkpoint=checkpoint, pixels=pixels,
    )  # fmt: skip
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command()
def probe(
    task: Annotated[str, typer.Argument(help=TASK_HELP)],
    run: Annotated[
        Path | None, typer.Option(help="Run directory (default: the newest under ./runs).")
    ] = None,
    probe_head: Annotated[
        ProbeHead | None,
        typer.Option("--probe", help="The probe head (default: the task's)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Default: the task's (Table 2).")] = None,
    lr: Annotated[float | None, typer.Option(help="Default: the task's.")] = None,
    wd: Annotated[float | None, typer.Option(help="Default: the task's.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: the task's.")] = None,
    seed: Annotated[int, typer.Option(help="Probe seed (init and shuffling).")] = 0,
    sweep: Annotated[
        bool, typer.Option(help="lr x wd grid, selected on a held-out slice of TRAIN, never val.")
    ] = False,
    sklearn: Annotated[
        bool | None,
        typer.Option(
            help="Linear probe: scikit-learn logistic regression (default: the task's; "
            "synth-motion's is)."
        ),
    ] = None,
    pool: Annotated[
        Pool | None,
        typer.Option(help="Token pooling, if the cache must be built (default: the cache's)."),
    ] = None,
    weights: Annotated[
        Weights, typer.Option(help="Encoder weights, if the cache must be built.")
    ] = Weights.auto,
    root: Annotated[
        list[str] | None,
        typer.Option(help="Dataset root as NAME=PATH (or a bare PATH: the task reads one)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most N clips per split (demos).")] = None,
    depth: Annotated[int, typer.Option(help="Attentive probe blocks.")] = 1,
    heads: Annotated[int, typer.Option(help="Attentive probe heads.")] = 8,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    checkpoint: Annotated[
        Path | None, typer.Option(help=CHECKPOINT_HELP + " Needs --run (where results go).")
    ] = None,
    profile: Annotated[Profile, typer.Option(help=EVAL_PROFILE_HELP)] = Profile.paper,
) -> None:
    """Train an attentive or linear probe from the run's token cache and write
    RUN/probes/TASK-KIND.json (KIND: the probe, e.g. attentive, linear, linear-sklearn,
    attentive-sweep; so probes of one task never overwrite each other). Every option defaults
    to what the cache records (pooling, clip limit) or to the task's protocol; a missing cache
    is extracted first."""
    from jepactl.features.registry import get_benchmark
    from jepactl.probe.records import probe_settings
    from jepactl.probe.result import floor_warning, write_result
    from jepactl.probe.train import train_probe

    b = get_benchmark(task, profile.value)
    if checkpoint is not None and run is None:
        fail("--checkpoint needs --run DIR: the directory its caches and result go to")
    if run is None:  # said first, before anything else is printed or computed
        run = latest_run()
        LOGGER.info(
            f"probing {run} (the newest run with a checkpoint under runs/; --run RUN to choose)"
        )
    run_dir = rundir.RunDir(run)
    kind = probe_head.value if probe_head else b.probe
    settings = probe_settings(
        b, kind, sklearn, epochs=epochs, lr=lr, wd=wd, batch_size=batch_size, seed=seed,
        sweep=sweep,
        probe_kwargs={"depth": depth, "num_heads": heads} if kind == "attentive" else None,
    )  # fmt: skip
    paths = _current_cache(run_dir, b, pool, weights, limit, root, device, checkpoint)
    result = train_probe(paths["train"], paths["val"], settings, device=device)
    result = result.with_profile(b.profile)
    typer.echo(write_result(run_dir, b.name, result))
    warning = floor_warning(b.name, result)
    if warning is not None:
        LOGGER.warning(warning)


def _current_cache(
    run_dir: rundir.RunDir,
    b: Any,
    pool: Pool | None,
    weights: Weights,
    limit: int | None,
    root: list[str] | None,
    device: str,
    checkpoint: Path | None,
) -> dict[str, Path]:
    """The task's train and val caches in the run, built with what its existing caches
    record (pooling, clip limit) unless an option says otherwise."""
    from jepactl.features.extract import extract_features

    recorded = _recorded(run_dir, b.name)
    if recorded is None:
        LOGGER.info(f"no {b.name} cache in {run_dir} yet; extracting it first")
    pooling = pool.value if pool else (recorded or {}).get("pooling") or b.pool
    limit = limit or (recorded or {}).get("limit")
    # Returns at once for a current cache; extracts a missing one, resumes a partial one,
    # and refuses one built from another checkpoint (the run may have trained on).
    return extract_features(run_dir.root, b, ("train", "val"), weights.value, pooling,
                            roots=dataset_roots(root, task_datasets(b)), limit=limit,
                            device=device, checkpoint=checkpoint)  # fmt: skip


def _recorded(run: rundir.RunDir, task: str) -> dict[str, Any] | None:
    """What the run's existing caches of ``task`` were built with (``pooling``, ``limit``),
    or ``None`` when there are none yet."""
    from jepactl.features.cache import read_cache_record

    paths = [run.cache(task, split) for split in ("train", "val")]
    if not all(p.exists() for p in paths):
        return None
    attrs = [read_cache_record(p) for p in paths]
    return {
        "pooling": attrs[0].pooling or "none",
        "limit": max((a.limit for a in attrs if a.limit), default=None),
    }


@app.command("synth-motion")
def synth_motion(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to score.")],
    task: Annotated[
        MotionTask,
        typer.Option(
            help="directions: the reference's 8 translation directions (Table 6's numbers); "
            "mixed: translation, rotation and scaling classes (Table 6's caption); all: both."
        ),
    ] = MotionTask.directions,
    seeds: Annotated[
        int, typer.Option(help="Repeat data draw and probe over seeds 0..N-1 (mean ± std, 95% CI).")
    ] = 1,
    protocol: Annotated[
        MotionProtocol,
        typer.Option(
            help="reference: 160/40 clips and the reference's probe (2.5 points per test clip); "
            "default: 960/480 clips, logistic regression on a 2x2-pooled token grid."
        ),
    ] = MotionProtocol.default,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.auto,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where generated clips are kept (default: $JEPACTL_CACHE or ~/.cache)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="Worker processes for writing/decoding.")] = 2,
    keep_features: Annotated[
        bool, typer.Option(help="Keep the token caches under RUN/features/.")
    ] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    markdown: Annotated[bool, typer.Option(help="Print the table as markdown.")] = False,
    checkpoint: Annotated[
        Path | None, typer.Option(help=CHECKPOINT_HELP + " Takes one RUN: where the result goes.")
    ] = None,
    profile: Annotated[
        Profile,
        typer.Option(
            help="reference: the paper's code as run: --protocol reference, and the EMA "
            "teacher or else the never-trained initialisation (what Table 6 scored)."
        ),
    ] = Profile.paper,
) -> None:
    """Score frozen encoders on 8-class synthetic motion discrimination (paper Table 6).

    Clips are generated once (deterministically, as H.264 files) and cached; each run's
    result goes to RUN/probes/synth-motion-TASK.json (…-TASK-reference.json under
    --protocol reference), which `jepactl compare` reads. The same path as
    `jepactl extract-features RUN --task synth-motion` then `jepactl probe synth-motion`.
    Example: `jepactl synth-motion runs/synth-baseline runs/synth-kin_l1 --seeds 3`.
    """
    from jepactl.features.synth_motion import TASKS, check_task, get_protocol
    from jepactl.probe.synth_motion import score_run
    from jepactl.report.synth_motion import format_table, run_label

    tasks = list(TASKS) if task is MotionTask.all else [check_task(task.value)]
    proto = get_protocol(protocol.value).name
    chosen = weights.value
    if profile is Profile.reference:
        proto = "reference"
        chosen = "reference" if weights is Weights.auto else chosen
    if checkpoint is not None and len(runs) != 1:
        fail(f"--checkpoint scores one encoder: give one RUN directory, not {len(runs)}")
    options: dict[str, Any] = {
        "protocol": proto, "seeds": seeds, "weights": chosen, "device": device,
        "cache_dir": cache_dir, "batch_size": batch_size, "num_workers": workers,
        "keep_features": keep_features, "say": LOGGER.info, "checkpoint": checkpoint,
    }  # fmt: skip
    tables = []
    for name in tasks:
        rows = []
        for run in runs:
            result = score_run(run, task=name, **options)
            _announce(run, name, proto, result)
            rows.append((run_label(run), result))
        tables.append(format_table(_told_apart(rows, runs), name, proto, markdown=markdown))
    typer.echo("\n\n".join(tables))


def _announce(run: Path, task: str, protocol: str, result: SynthMotionResult) -> None:
    """Say where a run's synth-motion result went, and warn when it is at chance."""
    from jepactl.probe.result import floor_warning
    from jepactl.probe.synth_motion import result_name

    out = rundir.RunDir(run).result(result_name(task, protocol))
    LOGGER.info(f"wrote {out}")
    warning = floor_warning(f"{run}: synth-motion-{task}", result)
    if warning is not None:
        LOGGER.warning(warning)


def _told_apart(
    rows: list[tuple[str, SynthMotionResult]], runs: list[Path]
) -> list[tuple[str, SynthMotionResult]]:
    """Several runs of one recipe (seeds) share a label: tell them apart by folder."""
    labels = [label for label, _ in rows]
    return [
        (f"{label} [{run.name}]" if labels.count(label) > 1 else label, result)
        for (label, result), run in zip(rows, runs, strict=True)
    ]
