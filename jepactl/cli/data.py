"""``jepactl data check``: decode every file of a dataset split and report what is wrong
(:mod:`jepactl.data.check`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from jepactl.cli.common import dataset_roots, fail

if TYPE_CHECKING:
    from jepactl.config import DataConfig
    from jepactl.data.check import CheckReport

app = typer.Typer(help="Inspect datasets.")


@app.command("check")
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
    from jepactl.data.check import check_index
    from jepactl.data.readers import OPTION_HINT
    from jepactl.data.sources import index_recipe_datasets

    if (name is None) == (recipe is None):
        fail("give a dataset NAME or --recipe RECIPE (not both), e.g. `jepactl data check ssv2`")
    if set_ and recipe is None:
        fail("--set overrides a recipe key; it needs --recipe")
    data, names = _datasets(name, recipe, set_)
    if not names:
        typer.echo(f"{recipe} reads no dataset (data.source: {data.source}); nothing to check")
        return
    data.split = split or (data.split if recipe is not None else "train")
    frames = frames or (data.num_frames if recipe is not None else 16)
    stride = stride or (data.frame_stride if recipe is not None else 2)
    indexes = index_recipe_datasets(data, dataset_roots(root, names), OPTION_HINT)
    min_frames = (frames - 1) * stride + 1  # what one clip spans
    results = []
    for index in indexes.values():
        result = check_index(index, min_frames, workers)
        results.append(result)
        _print_result(result)
    if report is not None:
        from jepactl.data.check import reports_json

        report.write_text(reports_json(results))
    if any(r.problems for r in results):
        raise typer.Exit(1)


def _datasets(
    name: str | None, recipe: str | None, set_: list[str] | None
) -> tuple[DataConfig, list[str]]:
    """The data section to check and the datasets it reads: the recipe's (with ``--set``),
    or one dataset NAME's."""
    from jepactl.config import DataConfig, canonical_dataset
    from jepactl.data.sources import recipe_datasets
    from jepactl.recipe import load_recipe

    if recipe is not None:
        data = load_recipe(recipe, set_ or []).data
        return data, recipe_datasets(data)
    data = DataConfig(source=canonical_dataset(name or ""), roots={})
    return data, [data.source]


def _print_result(result: CheckReport) -> None:
    """One line per dataset split checked, then its first 50 problems."""
    counts = result.counts()
    typer.echo(
        f"{result.dataset}/{result.split} at {result.root}: {result.checked} files checked, "
        + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no problems")
    )
    for problem in result.problems[:50]:
        typer.echo(f"  {problem.kind:<12} {problem.path}  {problem.detail}")
    if len(result.problems) > 50:
        typer.echo(f"  ... and {len(result.problems) - 50} more (see --report)")
