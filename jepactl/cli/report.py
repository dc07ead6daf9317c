"""``jepactl compare`` and ``plot``: the paper's tables and figure from run directories
(:mod:`jepactl.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepactl.cli.common import OLD_BENCH_HELP, Profile, Sort, fail, task_name
from jepactl.log import LOGGER

app = typer.Typer()


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
        fail("choose one of --markdown, --csv and --json")
    columns = task_name(task, bench, required=False)
    records, unreadable = cmp.collect_runs(runs)
    if not records:
        reasons = "; ".join(f"{u.path}: {u.reason}" for u in unreadable)
        fail(f"no readable run among {' '.join(runs)}" + (f" ({reasons})" if reasons else ""))
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
    from jepactl.train.metrics import PROBE_KNN, PROBE_LINEAR

    panels = [m.strip() for m in metrics.split(",") if m.strip()]
    if not panels:
        fail("--metrics names no metric")
    curves = [read_curves(r) for r in runs]
    typer.echo(learning_summary(curves, PROBE_LINEAR), nl=False)
    if any(c.series.get(PROBE_KNN) for c in curves):
        typer.echo("\n" + learning_summary(curves, PROBE_KNN), nl=False)
    LOGGER.info(f"wrote {plot_curves(curves, out, panels)}")
