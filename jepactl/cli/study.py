"""``jepactl study ...``: a whole comparison (recipes x seeds x tasks) as one command.

Thin wrappers over :mod:`jepactl.study`; ``plan`` and ``status`` import no torch.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from jepactl.log import LOGGER

if TYPE_CHECKING:
    from jepactl.study.spec import Study

app = typer.Typer(
    help=(
        "A whole study (recipes x seeds x tasks: pretrain, extract features, probe, report) "
        "as one resumable object, run locally or on SLURM. Start with `jepactl study list` "
        "and `jepactl study plan synth/quick`."
    ),
    no_args_is_help=True,
)

STUDY_HELP = "A built-in study (see `jepactl study list`) or a study YAML file."
ROOT_HELP = "Where the study's runs, logs and report live (default: runs/<study name>)."


class Launcher(str, Enum):
    """:data:`jepactl.study.run.LAUNCHERS`."""

    local = "local"
    slurm = "slurm"


def _load(study: str, root: Path | None) -> Study:
    from jepactl.study.spec import load_study

    return load_study(study, root)


def _resume_hint(name: str, root: Path, launcher: str) -> str:
    return f"jepactl study run {name} --root {root} --launcher {launcher}"


@app.command("list")
def list_cmd() -> None:
    """List the built-in studies with their descriptions."""
    import yaml

    from jepactl.study.spec import list_studies, resolve_study_path

    names = list_studies()
    width = max((len(n) for n in names), default=0)
    for name in names:
        raw = yaml.safe_load(resolve_study_path(name).read_text()) or {}
        typer.echo(f"{name:<{width}}  {raw.get('description', '')}")


@app.command()
def plan(
    study: Annotated[str, typer.Argument(help=STUDY_HELP)],
    root: Annotated[Path | None, typer.Option(help=ROOT_HELP)] = None,
    bench: Annotated[
        list[Path] | None,
        typer.Option(
            help="`jepactl bench pretrain --json` files to estimate GPU-hours from (default: "
            "ROOT/bench/*.json)."
        ),
    ] = None,
) -> None:
    """The graph of work: each run's stages (pretrain -> extract per task -> probe per task)
    and the report, with what is done (read from the run directories), what is left, and the
    GPU-hours left where step-time figures exist."""
    from jepactl.study.state import snapshot, stages_for
    from jepactl.study.views import estimate, legend, matrix, summary

    s = _load(study, root)
    snap = snapshot(s, stages_for(s))
    typer.echo(summary(s, snap))
    typer.echo(matrix(s, snap, details=False))
    files = list(bench) if bench else sorted((s.root / "bench").glob("*.json"))
    typer.echo(estimate(s, snap, files))
    typer.echo("states:\n" + "\n".join(legend(x.state for x in snap.stages)))
    typer.echo(f"next: jepactl study run {study} --root {s.root} --launcher local|slurm")


@app.command()
def run(
    study: Annotated[str, typer.Argument(help=STUDY_HELP)],
    launcher: Annotated[
        Launcher,
        typer.Option(help="local: stages on this machine; slurm: one job per stage (submitit)."),
    ] = Launcher.local,
    root: Annotated[Path | None, typer.Option(help=ROOT_HELP)] = None,
    max_parallel: Annotated[
        int | None,
        typer.Option(help="local: stages at once (default 1 on a CPU, one per visible GPU)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(help="Print what would run (slurm: the sbatch scripts); submit nothing."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(help="Go on although the study's recipes or overrides changed (as pretrain)."),
    ] = False,
) -> None:
    """Run every stage that is not done: done stages are skipped, running ones left alone,
    failed or cancelled ones started again (they resume from their checkpoints). Safe to rerun
    at any time; a killed `study run` loses nothing."""
    from jepactl.study.run import run_study

    s = _load(study, root)
    outcome = run_study(s, launcher.value, max_parallel, dry_run, force, LOGGER.info, typer.echo)
    hint = _resume_hint(study, s.root, launcher.value)
    if outcome.nothing_to_do:
        snap = outcome.snapshot
        busy = [x for x in snap.stages if x.live] if snap else []
        what = f"{len(busy)} running or queued, the rest done" if busy else "every stage is done"
        typer.echo(
            f"nothing to do: {what} ({s.root}); `jepactl study report {study} --root {s.root}`"
        )
        return
    if dry_run:
        typer.echo(f"dry run: {len(outcome.started)} stage(s) would run; nothing was submitted")
        return
    if launcher is Launcher.slurm:
        typer.echo(
            f"submitted {len(outcome.started)} job(s); follow them with "
            f"`jepactl study status {study} --root {s.root}`"
        )
        return
    typer.echo(
        f"{len(outcome.started)} stage(s) done, {len(outcome.failed)} failed, "
        f"{len(outcome.skipped)} not run"
    )
    if outcome.failed or outcome.stopped or outcome.skipped:
        typer.echo(f"resume: {hint}")
        raise typer.Exit(130 if outcome.stopped else 1)
    from jepactl.study.graph import REPORT
    from jepactl.study.state import Paths

    paths = Paths(s.root)
    if REPORT in outcome.started and paths.report_text.is_file():  # the report stage's own
        typer.echo(paths.report_text.read_text(), nl=False)
        fig = f" and {paths.figure}" if paths.figure.is_file() else ""
        typer.echo(f"wrote {paths.report}{fig}")
        return
    from jepactl.study.report import make_report

    rep = make_report(s)
    typer.echo(rep.text, nl=False)
    typer.echo(f"wrote {rep.path}" + (f" and {rep.figure}" if rep.figure else ""))


@app.command()
def status(
    study: Annotated[str, typer.Argument(help=STUDY_HELP)],
    root: Annotated[Path | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """One table, run x stage: done / running (job id, step) / queued / failed (its log's last
    line and path) / to do, and the command that resumes."""
    from jepactl.study.state import snapshot, stages_for
    from jepactl.study.views import attention, legend, matrix, summary

    s = _load(study, root)
    snap = snapshot(s, stages_for(s))
    typer.echo(summary(s, snap))
    typer.echo(matrix(s, snap, details=True))
    for line in attention(snap):
        typer.echo(line)
    typer.echo("states:\n" + "\n".join(legend(x.state for x in snap.stages)))
    launchers = {x.job.launcher for x in snap.stages if x.job is not None}
    launcher = "slurm" if "slurm" in launchers else "local"
    if any(x.state != "done" for x in snap.stages):
        typer.echo(f"resume: {_resume_hint(study, s.root, launcher)}")
    else:
        typer.echo(f"all done: jepactl study report {study} --root {s.root}")


@app.command()
def report(
    study: Annotated[str, typer.Argument(help=STUDY_HELP)],
    root: Annotated[Path | None, typer.Option(help=ROOT_HELP)] = None,
    figure: Annotated[
        bool, typer.Option(help="Draw Figure 2 (Δ per task vs the baseline) beside the report.")
    ] = True,
) -> None:
    """`compare` over the study's runs, seeds grouped (mean and 95% intervals, Δ vs the
    baseline), written to ROOT/report.md with Figure 2 (ROOT/figure2.png)."""
    from jepactl.study.report import make_report

    s = _load(study, root)
    rep = make_report(s, figure)
    typer.echo(rep.text, nl=False)
    if rep.missing:
        LOGGER.warning(f"runs without results yet: {', '.join(rep.missing)}")
    typer.echo(f"wrote {rep.path}" + (f" and {rep.figure}" if rep.figure else ""))
