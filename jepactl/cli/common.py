"""What every command shares: the one-line error handler, the global options, the choices
(enumerations) and the option helpers more than one command family uses.

Torch-free, like every module of this package at import time: ``jepactl --help`` and the
study's ``plan``/``status`` must start without it (each command imports the library it calls
inside its body). A command module imports this module and the library, never another
command module (jepactl_tests/test_layout.py).
"""

from __future__ import annotations

import errno
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from jepactl import rundir
from jepactl.errors import SPACE_ERRNOS, ConfigError, JepactlError, disk_full, one_line
from jepactl.log import LOGGER, set_verbosity
from jepactl.version import __version__

if TYPE_CHECKING:
    from typer._click import Context  # the click typer vendors: what TyperGroup.invoke takes

#: ``errno`` values of a file operation the user can fix (a path, a permission, a disk).
USER_ERRNOS = SPACE_ERRNOS | {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


class OneLineErrors(TyperGroup):
    """Every command runs inside this: a user's mistake or a full disk becomes one line on
    stderr and a non-zero exit (2: fix the input; 1: the run stopped on a condition such as
    a full disk); anything else is a bug and keeps its traceback. ``--debug`` shows all."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except JepactlError as exc:
            if DEBUG:
                raise
            report_error(one_line(exc), exc.exit_code)
        except OSError as exc:
            if DEBUG or exc.errno not in USER_ERRNOS:
                raise
            if exc.errno in SPACE_ERRNOS and exc.filename:
                report_error(one_line(disk_full(Path(exc.filename), None, exc)), 1)
            where = f" {exc.filename}" if exc.filename else ""
            report_error(
                f"{exc.strerror or one_line(exc)}:{where}", 1 if exc.errno in SPACE_ERRNOS else 2
            )


def report_error(message: str, code: int) -> NoReturn:
    """One line on stderr (naming the rank under torchrun) and exit ``code``."""
    rank = os.environ.get("RANK", "0")
    prefix = f"jepactl (rank {rank})" if rank != "0" else "jepactl"
    typer.echo(f"{prefix}: error: {message}", err=True)
    raise typer.Exit(code)


def fail(message: str) -> NoReturn:
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


def global_options(
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
        fail("choose one of --quiet and --verbose")
    set_verbosity(-1 if quiet else 1 if verbose else 0)  # set anew by every invocation


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


class CompileVariants(str, Enum):
    """Which steps ``bench pretrain`` times: eager, compiled (as ``train.compile``), or both."""

    off = "off"
    on = "on"
    both = "both"

    def variants(self) -> tuple[bool, ...]:
        return {"off": (False,), "on": (True,), "both": (False, True)}[self.value]


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
    """:data:`jepactl.report.build.SORTS`."""

    delta = "delta"
    name = "name"
    input = "input"


#: ``--device`` of the commands that compute: auto, cpu, cuda or cuda:N (a free string: the
#: GPU index cannot be enumerated; :func:`jepactl.dist.resolve_device` checks it).
DEVICE_HELP = "auto (CUDA when visible), cpu, cuda or cuda:N."


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


def task_name(task: str | None, bench: str | None, required: bool = True) -> str | None:
    """``--task``, or its old name ``--bench`` (still accepted, with a warning)."""
    if bench is not None:
        LOGGER.warning("--bench is now --task (it names an evaluation task)")
        if task is not None and task != bench:
            fail(f"--task {task} and --bench {bench} disagree; give --task only")
        task = bench
    if task is None and required:
        fail("missing option --task (which evaluation task, e.g. --task synth-motion)")
    return task


def torch_threads() -> int:
    """Torch's math threads in this process (imports torch: call it inside a command)."""
    import torch

    return torch.get_num_threads()


def dataset_roots(pairs: list[str] | None, used: list[str]) -> dict[str, str]:
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
                fail(f"--root {pair}: give NAME=PATH ({reads})")
            key, path = used[0], pair
        key = canonical_dataset(key)
        if key not in used:
            hint = suggestion(key, used) if used else ""
            fail(f"--root {pair}: no dataset {key!r} in this command{hint} ({reads})")
        if key in out:
            fail(f"--root names {key} twice ({out[key]} and {path}); give it once")
        out[key] = path
    return out


def task_datasets(task: Any) -> list[str]:
    """The dataset a task reads, as ``--root`` names it (none for the generated ones)."""
    return [] if task.reader == "synth" else [task.reader]


def latest_run(base: Path = Path("runs")) -> Path:
    """The run under ``base`` whose checkpoint was written last."""
    run = rundir.latest_run(base)
    if run is None:
        fail(f"no run with a checkpoint under {base}/; pass --run RUN")
    return run.root
