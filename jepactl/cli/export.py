"""``jepactl export``: a run's encoder as files for use outside jepactl
(:mod:`jepactl.models.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepactl.cli.common import WEIGHTS_HELP, ExportFormat, Weights

app = typer.Typer()


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
