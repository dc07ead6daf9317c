"""The ``jepactl`` command line: thin wrappers over library calls, one module per command
family (docs/architecture.md).

This module only assembles them: the root app (its one-line error handler and global options
live in :mod:`jepactl.cli.common`) and each family's commands, in the order ``--help`` lists
them: the top-level commands first, then the groups (``data``, ``bench``, ``study``), each
under its module's name.
"""

from __future__ import annotations

import typer

from jepactl.cli import bench, data, evaluate, export, report, study, train
from jepactl.cli.common import OneLineErrors, global_options

app = typer.Typer(
    cls=OneLineErrors,
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
app.callback()(global_options)
for family in (train, evaluate, export, report):
    app.add_typer(family.app)
for group in (data, bench, study):
    app.add_typer(group.app, name=group.__name__.rpartition(".")[2])


def main() -> None:
    app()


__all__ = ["app", "main"]
