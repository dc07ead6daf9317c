"""``jepactl pretrain``, ``recipes`` and ``show-recipe``: the commands that read recipes and
train from them (:mod:`jepactl.train`, :mod:`jepactl.recipe`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from jepactl.cli.common import DEVICE_HELP, PROFILE_HELP, Profile, fail
from jepactl.config import list_recipes, load_raw, resolve_recipe_path

app = typer.Typer()


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
        fail(f"{exc}\n(to try the recipe without the dataset: --set data.source=synth)")


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
    schema: Annotated[
        bool,
        typer.Option(
            "--schema",
            help="Print a JSON Schema (draft 2020-12) of a resolved recipe instead: every key "
            "with its type, default, allowed values and description, the terms and mask "
            "strategies installed included. Save it, e.g. `jepactl recipes --schema > "
            "jepactl-recipe.schema.json`, and point your editor's YAML support at it for "
            "completion and checks as you type (docs/recipes.md, Editor support).",
        ),
    ] = False,
) -> None:
    """List the shipped recipes with a one-line description each."""
    if schema:
        import json

        typer.echo(json.dumps(recipe_json_schema(), indent=2))
        return
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


def recipe_json_schema() -> dict[str, Any]:
    """The JSON Schema of a resolved recipe, with this installation's terms, mask strategies,
    presets, monitor tasks and dataset readers (a plugin that fails to import is left out)."""
    from jepactl.config import DATASET_ALIASES, ConfigError
    from jepactl.config.json_schema import Choices, recipe_schema
    from jepactl.data.readers import READER_REGISTRY
    from jepactl.data.tasks import TASKS
    from jepactl.masks import MASK_REGISTRY
    from jepactl.objectives import TERM_REGISTRY
    from jepactl.presets import ENCODER_PRESETS
    from jepactl.recipe import DATA_SOURCES
    from jepactl.version import __version__

    def loaded(registry: Any) -> dict[str, type]:
        out = {}
        for name in registry.names():
            try:
                out[name] = registry.get(name)
            except ConfigError:
                continue
        return out

    readers = (*READER_REGISTRY.names(), *DATASET_ALIASES)
    choices = {
        "model.preset": Choices(tuple(ENCODER_PRESETS)),
        "monitor.task": Choices(tuple(TASKS)),
        "data.source": Choices((*DATA_SOURCES, *READER_REGISTRY.plugins(), *DATASET_ALIASES), True),
        "data.mix": Choices(readers, True),
        "data.roots": Choices(readers, True),
    }
    return recipe_schema(
        loaded(TERM_REGISTRY), loaded(MASK_REGISTRY), choices,
        schema_id=f"urn:jepactl:recipe-schema:{__version__}",
    )  # fmt: skip


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
