"""Status messages: the ``jepactl`` logger, one stream (stderr), and a run's ``log.txt``.

Results a command prints (tables, JSON, paths it was asked for) go to stdout with
``typer.echo``; everything said about the work (starting, resuming, wrote, warnings) goes
through :data:`LOGGER`, so ``-q`` silences it (warnings and errors stay), ``-v`` adds debug
lines, and ``pretrain`` keeps a timestamped copy in ``RUN/log.txt``.

The handler is installed when this module is imported, so messages from library calls
(``pretrain()`` in a notebook or a test) look as they do on the command line; it writes to
the ``sys.stderr`` of the moment (a redirect or pytest's capture sees it) through
``tqdm.write``, which lifts a progress bar above the line rather than tearing it. The logger
does not propagate to the root logger (a program that configures logging would print every
line twice); add a handler to ``logging.getLogger("jepactl")`` to collect them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

LOGGER = logging.getLogger("jepactl")

#: ``-q``, default, ``-v``: the least severe message shown on stderr.
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _ConsoleFormat(logging.Formatter):
    """``jepactl: message``, ``jepactl: warning: message``; ``jepactl (rank r)`` off rank 0
    (as the CLI's error line)."""

    def format(self, record: logging.LogRecord) -> str:
        rank = os.environ.get("RANK", "0")
        prefix = f"jepactl (rank {rank})" if rank != "0" else "jepactl"
        kind = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"{prefix}: {kind}{record.getMessage()}"


class ConsoleHandler(logging.Handler):
    """Writes each message as one line to the current ``sys.stderr``, through tqdm."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


CONSOLE = ConsoleHandler(LEVELS[0])
CONSOLE.setFormatter(_ConsoleFormat())
LOGGER.addHandler(CONSOLE)
LOGGER.setLevel(logging.DEBUG)  # each handler chooses what it shows
LOGGER.propagate = False


def set_verbosity(verbosity: int) -> None:
    """-1 (``-q``): warnings and errors only; 0: status lines too; 1 (``-v``): debug lines."""
    CONSOLE.setLevel(LEVELS[max(-1, min(1, verbosity))])


def progress_bars() -> bool:
    """Whether progress bars are shown: not under ``-q``."""
    return CONSOLE.level <= logging.INFO


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Append every message to ``path`` (timestamped; debug lines too under ``-v``) while
    the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(min(CONSOLE.level, logging.INFO))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        handler.close()
