"""The ``jepactl`` command line: thin wrappers over library calls."""

from __future__ import annotations

import errno
import json
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from jepactl import rundir
from jepactl.config import list_recipes, load_raw, resolve_recipe_path
from jepactl.errors import SPACE_ERRNOS, ConfigError, JepactlError, disk_full, one_line
from jepactl.log import LOGGER, set_verbosity
from jepactl.version import __version__

if TYPE_CHECKING:
    from typer._click import Context  # the click typer vendors: what TyperGroup.invoke takes

#: ``errno`` values of a file operation the user can fix (a path, a permission, a disk).
USER_ERRNOS = SPACE_ERRNOS | {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


class _OneLineErrors(TyperGroup):
    """Every command runs inside this: a user's mistake or a full disk becomes one line on
    stderr and a non-zero exit (2: fix the input; 1: the run stopped on a condition such as
    a full disk); anything else is a bug and keeps its traceback. ``--debug`` shows all."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except JepactlError as exc:
            if DEBUG:
                raise
            _report(one_line(exc), exc.exit_code)
        except OSError as exc:
            if DEBUG or exc.errno not in USER_ERRNOS:
                raise
            if exc.errno in SPACE_ERRNOS and exc.filename:
                _report(one_line(disk_full(Path(exc.filename), None, exc)), 1)
            where = f" {exc.filename}" if exc.filename else ""
            _report(
                f"{exc.strerror or one_line(exc)}:{where}", 1 if exc.errno in SPACE_ERRNOS else 2
            )


def _report(message: str, code: int) -> None:
    rank = os.environ.get("RANK", "0")
    prefix = f"jepactl (rank {rank})" if rank != "0" else "jepactl"
    typer.echo(f"{prefix}: error: {message}", err=True)
    raise typer.Exit(code)


app = typer.Typer(
    cls=_OneLineErrors,
    name="jepactl",
    help=(
        "Pretrain Video-JEPA encoders with auxiliary objectives, probe them frozen, and "
        "compare variants.\n\nStart with `jepactl recipes`, then "
        "`jepactl pretrain --recipe synth/baseline` (runs on a CPU, no download)."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


# --------------------------------------------------------------------------------------
# Choices: enumerations, so --help lists them and shell completion offers them. Each mirrors
# a library tuple (named in its docstring; a test keeps them equal) without importing the
# library here, so the CLI starts fast. Commands pass ``.value`` on to the library.
# --------------------------------------------------------------------------------------


class Weights(str, Enum):
    """:data:`jepactl.features.encoder.WEIGHTS`: auto is the EMA teacher if trained."""

    auto = "auto"
    student = "student"
    teacher = "teacher"
    init = "init"
    reference = "reference"


class Profile(str, Enum):
    """:data:`jepactl.profiles.PROFILES`: the paper as written, or its public code as run."""

    paper = "paper"
    reference = "reference"


WEIGHTS_HELP = (
    "auto: the EMA teacher if the run trained one, else the student (under --profile "
    "reference: the teacher, else init). init: the run's initialisation, never trained. "
    "reference: what the paper's code scored (the teacher, else init)."
)
PROFILE_HELP = (
    "paper: the method as the paper writes it (default). reference: the paper's public code as "
    "it ran, every departure at once (docs/reference-differences.md); recorded in the run."
)


EVAL_PROFILE_HELP = (
    "reference: the task as the paper's code evaluated it (its pooling, frames, probe, epochs "
    "and constant LR; the EMA teacher, or the never-trained initialisation of a run without "
    "one), as its own task TASK@reference. paper: the protocol of the paper (default)."
)


class Pool(str, Enum):
    """:data:`jepactl.grid.POOLS`: how tokens are pooled into the feature cache."""

    none = "none"
    time = "time"
    space2x2 = "space2x2"
    mean = "mean"


class ProbeHead(str, Enum):
    """The probe heads :func:`jepactl.probe.heads.build_probe` knows."""

    attentive = "attentive"
    attentive_reference = "attentive-reference"
    linear = "linear"


class Size(str, Enum):
    """:data:`jepactl.bench.BASELINE_FOR_SIZE`: synth (CPU-sized) or paper (as written)."""

    synth = "synth"
    paper = "paper"


class BenchDevice(str, Enum):
    """Where a benchmark times (it measures one kind of device, never both)."""

    cpu = "cpu"
    cuda = "cuda"


class MotionTask(str, Enum):
    """:data:`jepactl.features.synth_motion.TASKS`, or all of them."""

    directions = "directions"
    mixed = "mixed"
    all = "all"


class MotionProtocol(str, Enum):
    """:data:`jepactl.features.synth_motion.PROTOCOLS`."""

    default = "default"
    reference = "reference"


class ExportFormat(str, Enum):
    """:data:`jepactl.models.export.FORMATS`."""

    safetensors = "safetensors"


class Sort(str, Enum):
    """:data:`jepactl.report.compare.SORTS`."""

    delta = "delta"
    name = "name"
    input = "input"


#: ``--device`` of the commands that compute: auto, cpu, cuda or cuda:N (a free string: the
#: GPU index cannot be enumerated; :func:`jepactl.dist.resolve_device` checks it).
DEVICE_HELP = "auto (CUDA when visible), cpu, cuda or cuda:N."


def _fail(message: str) -> NoReturn:
    """A user's mistake found by the CLI itself: one line, exit 2 (through the group)."""
    raise ConfigError(message)


def _debug_env() -> bool:
    return os.environ.get("JEPACTL_DEBUG", "") not in ("", "0")


#: ``--debug``: let errors show their traceback (set anew by every invocation).
DEBUG = _debug_env()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"jepactl {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the full traceback of an error (also JEPACTL_DEBUG=1)."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print only warnings and errors on stderr."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also print debug messages on stderr.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Options for every command. Status messages go to stderr (and, for pretrain, to
    RUN/log.txt); results to stdout."""
    global DEBUG
    DEBUG = debug or _debug_env()  # not sticky: one --debug call must not change the next
    if quiet and verbose:
        _fail("choose one of --quiet and --verbose")
    set_verbosity(-1 if quiet else 1 if verbose else 0)  # set anew by every invocation


@app.command()
def pretrain(
    recipe: Annotated[
        str,
        typer.Option("--recipe", "-r", help="Recipe name (see `jepactl recipes`) or YAML path."),
    ],
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run directory (default: runs/<recipe>). An existing run resumes."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe key, e.g. --set optim.lr=3e-4 (repeatable)."),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Stop after this many steps in total (the schedule is unchanged)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Shorthand for --set train.seed=S.")] = None,
    device: Annotated[
        str | None,
        typer.Option(help="Shorthand for --set train.device=D: " + DEVICE_HELP),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Resume a run even though its saved recipe differs.")
    ] = False,
    skip_nonfinite: Annotated[
        int,
        typer.Option(
            help="Skip the update of up to N steps whose loss is NaN/inf (logged); by default "
            "the first one stops the run, keeping the last good checkpoint."
        ),
    ] = 0,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Initialise the student and teacher encoder from this checkpoint (V-JEPA, "
            "V-JEPA 2, the paper's code or a jepactl run; docs/checkpoints.md) before step 0. "
            "Its size must be the recipe's model; its position scheme is set from the file."
        ),
    ] = None,
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="Copy the metrics to these sinks, comma-separated: tensorboard (to "
            "RUN/tensorboard/), wandb; none for none. Shorthand for --set tracking.sinks=[...].",
        ),
    ] = None,
    profile: Annotated[Profile | None, typer.Option(help=PROFILE_HELP)] = None,
) -> None:
    """Pretrain an encoder from a recipe; resumes the run directory's checkpoint if present.

    Multi-GPU / multi-node: launch with torchrun, e.g.
    `torchrun --nproc-per-node 8 -m jepactl pretrain --recipe mixed/baseline`.
    SIGTERM or Ctrl-C checkpoints at the next step and exits 0; rerun to resume. One process
    at a time may use a run directory (a second is refused, naming the first).
    """
    from jepactl.train.loop import pretrain as run_pretrain

    overrides = list(set_ or [])
    if profile is not None:  # first: an explicit --set of a switch still wins
        overrides.insert(0, f"profile={profile.value}")
    if seed is not None:
        overrides.append(f"train.seed={seed}")
    if device is not None:
        overrides.append(f"train.device={device}")
    if log is not None:
        names = [n.strip() for n in log.split(",") if n.strip() and n.strip() != "none"]
        overrides.append(f"tracking.sinks=[{', '.join(names)}]")
    from jepactl.data.readers import DatasetLayoutError

    try:
        run_pretrain(
            recipe, overrides, run_dir=run_dir, max_steps=max_steps, force=force,
            skip_nonfinite=skip_nonfinite, init_from=init_from,
        )  # fmt: skip
    except DatasetLayoutError as exc:
        _fail(f"{exc}\n(to try the recipe without the dataset: --set data.source=synth)")


@app.command()
def recipes(
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table.")] = False,
    write: Annotated[
        Path | None,
        typer.Option(help="Write the Markdown table into this file's recipes section."),
    ] = None,
    components: Annotated[
        bool,
        typer.Option(
            help="List the objective terms, mask strategies, dataset readers and evaluation "
            "tasks a recipe or command can name instead: built-in, and those installed "
            "packages register (docs/extending.md)."
        ),
    ] = False,
) -> None:
    """List the shipped recipes with a one-line description each."""
    if components:
        from jepactl.data.readers import READER_REGISTRY
        from jepactl.features.registry import TASK_REGISTRY
        from jepactl.masks import MASK_REGISTRY
        from jepactl.objectives import TERM_REGISTRY

        registries: list[tuple[str, Any]] = [
            ("term", TERM_REGISTRY), ("mask", MASK_REGISTRY),
            ("reader", READER_REGISTRY), ("task", TASK_REGISTRY),
        ]  # fmt: skip
        for kind, registry in registries:
            for name, where, origin in registry.rows():
                typer.echo(f"{kind:<6} {name:<24} {where:<55} {origin}")
        return
    rows = []
    for name in list_recipes():
        raw = load_raw(resolve_recipe_path(name))
        paper = raw.get("paper") or {}
        table, row = paper.get("table", ""), paper.get("row", "")
        where = f"Table {table}, {row}" if table else str(row)
        rows.append((name, raw.get("display_name", ""), raw.get("description", ""), where))
    if markdown or write is not None:
        lines = ["| recipe | method | description | paper |", "|---|---|---|---|"]
        lines += [f"| `{name}` | " + " | ".join(rest) + " |" for name, *rest in rows]
        table = "\n".join(lines) + "\n"
        if write is not None:
            from jepactl.utils import write_section

            write_section(write, "recipes", table)
        typer.echo(table, nl=False)
        return
    width = max((len(r[0]) for r in rows), default=0)
    for name, _, description, _ in rows:
        typer.echo(f"{name:<{width}}  {description}")


@app.command("show-recipe")
def show_recipe(
    recipe: Annotated[str, typer.Argument(help="Recipe name or YAML path.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key.")] = None,
    profile: Annotated[Profile | None, typer.Option(help=PROFILE_HELP)] = None,
) -> None:
    """Print the fully resolved recipe (what `pretrain` would write to RUN/config.yaml)."""
    from jepactl.config import dump_yaml
    from jepactl.recipe import load_recipe

    overrides = ([f"profile={profile.value}"] if profile is not None else []) + list(set_ or [])
    typer.echo(dump_yaml(load_recipe(recipe, overrides)), nl=False)


data_app = typer.Typer(help="Inspect datasets.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Dataset: ucf101, ssv2, diving48, in100 (alias imagenet100), csv, folders. "
            "Or give --recipe instead."
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe", "-r", help="Check every dataset this recipe reads (name or YAML path)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe key (with --recipe), e.g. data.split=val."),
    ] = None,
    root: Annotated[
        list[str] | None,
        typer.Option(
            help="Dataset root as NAME=PATH (repeatable; a bare PATH when one dataset is "
            "checked; for csv the index file). Default: the recipe's data.roots, else "
            "$JEPACTL_DATA/NAME."
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to check (default: the recipe's, else train).")
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(help="Clip length the data is for (default: the recipe's, else 16)."),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(help="Frame stride the data is for (default: the recipe's, else 2)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel decoding processes.")] = 2,
    report: Annotated[Path | None, typer.Option(help="Also write a JSON report here.")] = None,
) -> None:
    """Decode every file of a dataset split (or of every dataset a recipe reads) and report
    undecodable (including truncated), too-short (shorter than one clip of --frames at
    --stride), mislabelled and missing files (exit 1 if any). Datasets that cannot be found
    are all reported at once, before any decoding (exit 2)."""
    from jepactl.config import canonical_dataset
    from jepactl.data.check import check_index
    from jepactl.data.readers import OPTION_HINT
    from jepactl.data.sources import index_recipe_datasets, recipe_datasets
    from jepactl.recipe import load_recipe

    if (name is None) == (recipe is None):
        _fail("give a dataset NAME or --recipe RECIPE (not both), e.g. `jepactl data check ssv2`")
    if set_ and recipe is None:
        _fail("--set overrides a recipe key; it needs --recipe")
    if recipe is not None:
        data = load_recipe(recipe, set_ or []).data
        names = recipe_datasets(data)
        if not names:
            typer.echo(f"{recipe} reads no dataset (data.source: {data.source}); nothing to check")
            return
    else:
        from jepactl.config import DataConfig

        data = DataConfig(source=canonical_dataset(name or ""), roots={})
        names = [data.source]
    data.split = split or (data.split if recipe is not None else "train")
    frames = frames or (data.num_frames if recipe is not None else 16)
    stride = stride or (data.frame_stride if recipe is not None else 2)
    indexes = index_recipe_datasets(data, _roots(root, names), OPTION_HINT)
    min_frames = (frames - 1) * stride + 1  # what one clip spans
    results = []
    for index in indexes.values():
        result = check_index(index, min_frames, workers)
        results.append(result)
        counts = result.counts()
        typer.echo(
            f"{result.dataset}/{result.split} at {result.root}: {result.checked} files checked, "
            + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no problems")
        )
        for problem in result.problems[:50]:
            typer.echo(f"  {problem.kind:<12} {problem.path}  {problem.detail}")
        if len(result.problems) > 50:
            typer.echo(f"  ... and {len(result.problems) - 50} more (see --report)")
    if report is not None:
        from jepactl.data.check import reports_json

        report.write_text(reports_json(results))
    if any(r.problems for r in results):
        raise typer.Exit(1)


bench_app = typer.Typer(help="Benchmarks (timings are measured, never asserted in tests).")
app.add_typer(bench_app, name="bench")


TASK_HELP = (
    "Evaluation task (a benchmark): diving48, ssv2, in100, ucf101, synth-shapes, synth-motion "
    "(= synth-motion-directions), synth-motion-mixed."
)
OLD_BENCH_HELP = "Old name of --task."
CHECKPOINT_HELP = (
    "Encode with this checkpoint file instead of the run's: V-JEPA (facebookresearch/jepa), "
    "V-JEPA 2 (facebookresearch/vjepa2), the paper's V-JEPA 2.1 code, or a jepactl run's "
    "latest.pt (docs/checkpoints.md). --weights auto takes its target_encoder."
)


def _task(task: str | None, bench: str | None, required: bool = True) -> str | None:
    """``--task``, or its old name ``--bench`` (still accepted, with a warning)."""
    if bench is not None:
        LOGGER.warning("--bench is now --task (it names an evaluation task)")
        if task is not None and task != bench:
            _fail(f"--task {task} and --bench {bench} disagree; give --task only")
        task = bench
    if task is None and required:
        _fail("missing option --task (which evaluation task, e.g. --task synth-motion)")
    return task


@bench_app.command("step-time")
def bench_step_time(
    recipes: Annotated[
        list[str] | None, typer.Argument(help="Recipe names or globs (default: all).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Timed steps per recipe.")] = 8,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 3,
    device: Annotated[BenchDevice, typer.Option(help="The device to time.")] = BenchDevice.cpu,
    size: Annotated[
        Size, typer.Option(help="synth: CPU-sized (recipes/base/synth.yaml); paper: as written.")
    ] = Size.synth,
    check_syncs: Annotated[
        bool, typer.Option(help="CUDA: fail if a timed step synchronises with the host.")
    ] = False,
    write: Annotated[
        Path | None,
        typer.Option(help="Also write the table into this Markdown file's step-time section."),
    ] = None,
) -> None:
    """Step time of each recipe at the synthetic CPU size, relative to synth/baseline."""
    import datetime
    import platform

    from jepactl.bench import markdown, step_times
    from jepactl.utils import write_section

    rows = step_times(recipes or ["*"], steps, warmup, device.value, size.value, check_syncs)
    if device is BenchDevice.cuda:
        import torch

        where = torch.cuda.get_device_name()
    else:
        where = f"{platform.processor() or platform.machine()} ({torch_threads()} threads)"
    header = (
        f"Measured {datetime.date.today()} on {where} at the {size.value} size, median of {steps} "
        f"steps after {warmup} warm-up steps, bf16 autocast on CUDA and fp32 on CPU (unless a "
        "recipe sets train.precision), one pre-rendered batch"
        + (", no host synchronisation inside any timed step." if check_syncs else ".")
    )
    text = markdown(rows, header)
    typer.echo(text)
    if write is not None:
        write_section(write, "step-time", text)


@bench_app.command("pretrain")
def bench_pretrain(
    recipe: Annotated[
        list[str] | None,
        typer.Option(help="Recipe to time (repeatable; the first is the reference)."),
    ] = None,
    size: Annotated[
        Size, typer.Option(help="synth: CPU-sized (recipes/base/synth.yaml); paper: as written.")
    ] = Size.synth,
    device: Annotated[BenchDevice, typer.Option(help="The device to time.")] = BenchDevice.cpu,
    steps: Annotated[int, typer.Option(help="Timed steps per recipe and round.")] = 3,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds over the recipes.")] = 3,
    warmup: Annotated[
        int, typer.Option(help="Untimed steps per recipe, all before any timing.")
    ] = 2,
    loader_steps: Annotated[
        int, typer.Option(help="Steps of the real-loader run that measures data wait (0: skip).")
    ] = 20,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every figure to this JSON file.")
    ] = None,
) -> None:
    """Step time, FLOPs and MFU of each recipe, against this machine's measured ceiling.
    One process measures the dense matrix-product rate at the training dtype (the ceiling),
    warms every recipe up, then times them in interleaved rounds (so warm-up and drift do not
    favour one), counts the FLOPs of a step (matrix products, convolutions, attention; forward
    and backward), and runs a real `pretrain` from synthetic clips written as video files for
    the data-wait fraction. Example:
    `jepactl bench pretrain --recipe synth/baseline --recipe synth/fwm_hw_ld --json perf.json`.
    """
    import json

    from jepactl.bench import BASELINE_FOR_SIZE, pretrain_bench, pretrain_markdown
    from jepactl.utils import atomic_write_bytes

    names = recipe or [BASELINE_FOR_SIZE[size.value]]
    if min(steps, rounds) < 1 or min(warmup, loader_steps) < 0:
        _fail("--steps and --rounds must be >= 1, --warmup and --loader-steps >= 0")

    result = pretrain_bench(
        names, size.value, device.value, steps, rounds, warmup, loader_steps, LOGGER.info
    )
    typer.echo(pretrain_markdown(result), nl=False)
    if json_out is not None:
        data = (json.dumps(result, indent=2) + "\n").encode()
        atomic_write_bytes(json_out, lambda f: f.write(data))
        LOGGER.info(f"wrote {json_out}")


@bench_app.command("decode")
def bench_decode(
    frames: Annotated[int, typer.Option(help="Length of the generated test video.")] = 300,
    size: Annotated[
        int, typer.Option(help="Frame height of the test video (width 4/3 of it).")
    ] = 240,
    clips: Annotated[int, typer.Option(help="Clips to decode per method.")] = 40,
    clip_len: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    stride: Annotated[int, typer.Option(help="Frame stride.")] = 2,
    short_side: Annotated[int, typer.Option(help="Resize while decoding.")] = 128,
) -> None:
    """Pretraining clip decoding (seek + decode only the clip) against decoding every frame
    from the start, on a generated H.264 video, in this process (one core)."""
    import tempfile

    import numpy as np

    from jepactl.data.decode import decode_benchmark
    from jepactl.data.synthetic import SyntheticVideoSource
    from jepactl.data.writer import write_video

    width = (size * 4 // 3) // 2 * 2
    video = SyntheticVideoSource(num_frames=frames, size=width, seed=0)[0].clip
    video = video[:, (width - size) // 2 : (width - size) // 2 + size]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "bench.mp4", np.ascontiguousarray(video.numpy()), gop=25)
        result = decode_benchmark(path, clip_len, stride, clips, short_side=short_side)
    typer.echo(
        f"{frames} frames {width}x{size} H.264 (keyframe every 25), {clips} clips of "
        f"{clip_len} frames at stride {stride}, short side {short_side}:"
    )
    typer.echo(
        f"  seek to the clip:        {result['seek_clips_per_s']:.1f} clips/s\n"
        f"  decode from the start:   {result['from_start_clips_per_s']:.1f} clips/s\n"
        f"  ratio:                   {result['speedup']:.2f}x"
    )


@bench_app.command("probe")
def bench_probe(
    run: Annotated[Path, typer.Argument(help="A trained run directory.")],
    task: Annotated[str, typer.Option(help=TASK_HELP)] = "synth-shapes",
    epochs: Annotated[int, typer.Option(help="Probe epochs.")] = 50,
    limit: Annotated[int, typer.Option(help="Clips per split.")] = 400,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
) -> None:
    """Probe from the token cache vs the re-encode-every-epoch protocol: time and accuracy."""
    from jepactl.bench import probe_cache_vs_reencode

    r = probe_cache_vs_reencode(run, task, epochs, limit, device=device)
    typer.echo(
        f"{task}, {int(r['n_train'])} train / {int(r['n_val'])} val clips, {epochs} epochs:\n"
        f"  from the cache (extract once + probe): {r['cache_s']:.1f} s, "
        f"top-1 {r['cache_top1']:.1f}%\n"
        f"  re-encode every epoch:                  {r['reencode_s']:.1f} s, "
        f"top-1 {r['reencode_top1']:.1f}%\n"
        f"  ratio: {r['speedup']:.1f}x (majority-class floor {r['majority']:.1f}%)"
    )


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _roots(pairs: list[str] | None, used: list[str]) -> dict[str, str]:
    """``--root`` values, the same form in every command: ``NAME=PATH`` for a dataset the
    command reads (``used``; names in the one vocabulary, aliases such as ``imagenet100``
    accepted), or a bare ``PATH`` when it reads exactly one dataset."""
    from jepactl.config import canonical_dataset
    from jepactl.utils import suggestion

    reads = f"it reads {', '.join(used)}" if used else "it reads no dataset"
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, path = pair.partition("=")
        if not sep:
            if len(used) != 1:
                _fail(f"--root {pair}: give NAME=PATH ({reads})")
            key, path = used[0], pair
        key = canonical_dataset(key)
        if key not in used:
            hint = suggestion(key, used) if used else ""
            _fail(f"--root {pair}: no dataset {key!r} in this command{hint} ({reads})")
        if key in out:
            _fail(f"--root names {key} twice ({out[key]} and {path}); give it once")
        out[key] = path
    return out


def _task_datasets(task: Any) -> list[str]:
    """The dataset a task reads, as ``--root`` names it (none for the generated ones)."""
    return [] if task.reader == "synth" else [task.reader]


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

    b = get_benchmark(_task(task, bench) or "", profile.value)
    paths = extract_features(
        run, b, split.split(","), weights.value, pool.value if pool else b.pool, batch_size,
        workers, force, _roots(root, _task_datasets(b)), limit, device=device,
        checkpoint=checkpoint, pixels=pixels,
    )  # fmt: skip
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run directory (with checkpoints/latest.pt).")],
    format_: Annotated[
        ExportFormat, typer.Option("--format", help="The weights' file format.")
    ] = ExportFormat.safetensors,
    out: Annotated[Path | None, typer.Option(help="Folder to write (default: RUN/export).")] = None,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.auto,
) -> None:
    """Write the run's encoder as model.safetensors plus config.json (its VideoViT arguments,
    a timm-style name such as vit_base_patch16 where the size is standard, recipe, step,
    input normalisation), for use outside jepactl: `jepactl.models.load_exported(DIR)`
    rebuilds it in one call. Both files are written by rename."""
    from jepactl.features.encoder import export_encoder

    typer.echo(export_encoder(run, out, weights.value, format_.value))


def latest_run(base: Path = Path("runs")) -> Path:
    """The run under ``base`` whose checkpoint was written last."""
    run = rundir.latest_run(base)
    if run is None:
        _fail(f"no run with a checkpoint under {base}/; pass --run RUN")
    return run.root


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
    from jepactl.features.extract import extract_features
    from jepactl.features.registry import get_benchmark
    from jepactl.probe.result import floor_warning, write_result
    from jepactl.probe.train import benchmark_settings, train_probe

    b = get_benchmark(task, profile.value)
    if checkpoint is not None and run is None:
        _fail("--checkpoint needs --run DIR: the directory its caches and result go to")
    if run is None:  # said first, before anything else is printed or computed
        run = latest_run()
        LOGGER.info(
            f"probing {run} (the newest run with a checkpoint under runs/; --run RUN to choose)"
        )
    run_dir = rundir.RunDir(run)
    recorded = _recorded(run_dir, b.name)
    if recorded is None:
        LOGGER.info(f"no {b.name} cache in {run_dir} yet; extracting it first")
    pooling = pool.value if pool else (recorded or {}).get("pooling") or b.pool
    limit = limit or (recorded or {}).get("limit")
    # Returns at once for a current cache; extracts a missing one, resumes a partial one,
    # and refuses one built from another checkpoint (the run may have trained on).
    paths = extract_features(run_dir.root, b, ("train", "val"), weights.value, pooling,
                             roots=_roots(root, _task_datasets(b)), limit=limit,
                             device=device, checkpoint=checkpoint)  # fmt: skip
    settings = benchmark_settings(b)
    kind = probe_head.value if probe_head else b.probe
    if kind != b.probe:
        settings["sklearn"] = False  # another head than the task's: a torch head
    if sklearn is not None:
        settings["sklearn"] = sklearn
    for key, value in (("epochs", epochs), ("lr", lr), ("wd", wd), ("batch_size", batch_size)):
        if value is not None:
            settings[key] = value
    result = train_probe(
        paths["train"], paths["val"], **{**settings, "probe": kind}, seed=seed, sweep=sweep,
        probe_kwargs={"depth": depth, "num_heads": heads} if kind == "attentive" else None,
        device=device,
    )  # fmt: skip
    result["profile"] = b.profile
    typer.echo(write_result(run_dir, b.name, result))
    warning = floor_warning(b.name, result)
    if warning is not None:
        LOGGER.warning(warning)


def _recorded(run: rundir.RunDir, task: str) -> dict[str, Any] | None:
    """What the run's existing caches of ``task`` were built with (``pooling``, ``limit``),
    or ``None`` when there are none yet."""
    from jepactl.features.cache import read_cache_attrs

    paths = [run.cache(task, split) for split in ("train", "val")]
    if not all(p.exists() for p in paths):
        return None
    attrs = [read_cache_attrs(p) for p in paths]
    limits = [json.loads(str(a.get("protocol", "{}"))).get("limit") for a in attrs]
    return {
        "pooling": str(attrs[0].get("pooling", "none")),
        "limit": max((int(x) for x in limits if x), default=None),
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
    from jepactl.probe.result import floor_warning
    from jepactl.probe.synth_motion import result_name, score_run
    from jepactl.report.synth_motion import format_table, run_label

    tasks = list(TASKS) if task is MotionTask.all else [check_task(task.value)]
    proto = get_protocol(protocol.value).name
    chosen = weights.value
    if profile is Profile.reference:
        proto = "reference"
        chosen = "reference" if weights is Weights.auto else chosen
    if checkpoint is not None and len(runs) != 1:
        _fail(f"--checkpoint scores one encoder: give one RUN directory, not {len(runs)}")
    tables = []
    for name in tasks:
        rows = []
        for run in runs:
            result = score_run(
                run, task=name, protocol=proto, seeds=seeds, weights=chosen,
                device=device, cache_dir=cache_dir, batch_size=batch_size,
                num_workers=workers, keep_features=keep_features,
                say=LOGGER.info, checkpoint=checkpoint,
            )  # fmt: skip
            rows.append((run_label(run), result))
            out = rundir.RunDir(run).result(result_name(name, proto))
            LOGGER.info(f"wrote {out}")
            warning = floor_warning(f"{run}: synth-motion-{name}", result)
            if warning is not None:
                LOGGER.warning(warning)
        labels = [label for label, _ in rows]
        rows = [  # several runs of one recipe (seeds): tell them apart by folder
            (f"{label} [{run.name}]" if labels.count(label) > 1 else label, result)
            for (label, result), run in zip(rows, runs, strict=True)
        ]
        tables.append(format_table(rows, name, proto, markdown=markdown))
    typer.echo("\n\n".join(tables))


@app.command()
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(help="Run directories or globs (a folder of runs expands to its runs)."),
    ],
    markdown: Annotated[bool, typer.Option(help="GitHub markdown table.")] = False,
    csv: Annotated[bool, typer.Option(help="CSV, one row per method.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Everything, as JSON.")] = False,
    baseline: Annotated[
        str | None,
        typer.Option(help="The row Δ is taken against (default: the one named 'baseline')."),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Comma-separated task columns, in this order.")
    ] = None,
    sort: Annotated[
        Sort,
        typer.Option(
            help="delta: baseline first, then by mean Δ; name; input: command-line order."
        ),
    ] = Sort.delta,
    plot: Annotated[
        Path | None, typer.Option(help="Write Figure 2 (grouped Δ bars) to this PNG.")
    ] = None,
    highlight: Annotated[
        str | None, typer.Option(help="The method highlighted in the figure (default: first).")
    ] = None,
    probe_kind: Annotated[
        list[str] | None,
        typer.Option(
            "--probe",
            help="Probe kind shown: KIND for every column or TASK=KIND for one (repeatable); "
            "kinds: attentive, attentive-reference, linear, linear-sklearn and each torch "
            "head with -sweep. Default: the task's probe if a run has it, else the most common.",
        ),
    ] = None,
    bench: Annotated[str | None, typer.Option(help=OLD_BENCH_HELP, hidden=True)] = None,
    profile: Annotated[
        Profile | None,
        typer.Option(
            help="Only runs pretrained under this profile and results evaluated under it "
            "(default: everything, with a note wherever the table mixes profiles)."
        ),
    ] = None,
) -> None:
    """The paper's tables from run directories: one row per method (seeds grouped as
    mean ± std (n)), Δ vs the baseline in points with a 95% interval when both sides have
    >= 2 seeds, ↑/↓ and Univ. (improves every benchmark); --plot draws Figure 2.
    Example: `jepactl compare 'runs/synth-*' --markdown --plot fig2.png`.
    """
    from jepactl.report import compare as cmp

    if sum((markdown, csv, json_)) > 1:
        _fail("choose one of --markdown, --csv and --json")
    columns = _task(task, bench, required=False)
    records, unreadable = cmp.collect_runs(runs)
    if not records:
        reasons = "; ".join(f"{u.path}: {u.reason}" for u in unreadable)
        _fail(f"no readable run among {' '.join(runs)}" + (f" ({reasons})" if reasons else ""))
    profile_left_out: list[str] = []
    if profile is not None:
        from jepactl.report.profiles import select_profile

        records, profile_left_out = select_profile(records, profile.value)
    table = cmp.build_table(
        records, baseline=baseline, benches=columns.split(",") if columns else None,
        sort=sort.value,
        unreadable=unreadable, probe=probe_kind,
    )  # fmt: skip
    render = (
        cmp.render_markdown if markdown else cmp.render_csv if csv
        else cmp.render_json if json_ else cmp.render_text
    )  # fmt: skip
    typer.echo(render(table), nl=False)  # every renderer ends its text with a newline
    for note in profile_left_out:
        LOGGER.info(note)
    if plot is not None:
        cmp.plot_deltas(table, plot, highlight=highlight)
        LOGGER.info(f"wrote {plot}")


@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories, one curve each.")],
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("curves.png"),
    metrics: Annotated[
        str,
        typer.Option(
            help="Comma-separated metrics.jsonl keys, one panel each (e.g. loss, rankme, "
            "rankme_tokens, feat_std_mean, feat_cos, grad_norm, probe_linear, probe_knn)."
        ),
    ] = "loss,rankme,probe_linear",
) -> None:
    """Did pretraining teach anything? Prints the online probes (logistic regression, then
    k-NN) of each method (runs that differ only in seed are one method) at the last step vs
    the same encoder at step 0 vs raw pixels, with paired 95% intervals over seeds, and draws
    the loss, RankMe and online-probe curves against step in one PNG (step-0, pixel and chance
    levels as dotted, dashed and grey lines). Needs the monitor (monitor.every > 0; the synth/
    recipes have it).
    Example: `jepactl plot runs/synth-baseline-s* --out runs/curves.png`.
    """
    from jepactl.report.curves import learning_summary, plot_curves, read_curves

    panels = [m.strip() for m in metrics.split(",") if m.strip()]
    if not panels:
        _fail("--metrics names no metric")
    curves = [read_curves(r) for r in runs]
    typer.echo(learning_summary(curves, "probe_linear"), nl=False)
    if any(c.series.get("probe_knn") for c in curves):
        typer.echo("\n" + learning_summary(curves, "probe_knn"), nl=False)
    LOGGER.info(f"wrote {plot_curves(curves, out, panels)}")


from jepactl.study.cli import study_app  # noqa: E402  (the study commands: their own room)

app.add_typer(study_app, name="study")


def main() -> None:
    app()


__all__ = ["app", "main"]
