"""Errors a user can act on: the CLI prints their message as one line and exits.

Every error the user can fix (a typo, a missing dataset, a full disk, a run directory in use)
is a :class:`JepactlError`; its message is one line that says what to fix, and its
``exit_code`` is 2 for bad input and 1 for a run that stopped on a condition of the world
(full disk, diverged loss, bad data). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path


class JepactlError(Exception):
    """Base of every user-facing error: one line, printed without a traceback."""

    exit_code = 2


class ConfigError(JepactlError, ValueError):
    """A recipe or option problem the user can fix; the message is one line."""


class RunLockedError(JepactlError):
    """Another process holds the run directory (or the feature cache) this one needs."""


class CheckpointError(JepactlError):
    """No usable checkpoint where one was expected (unreadable, foreign, or missing)."""


class DiskFullError(JepactlError, OSError):
    """A write failed for lack of space (or a file-size limit); nothing committed was lost."""

    exit_code = 1


class NonFiniteLossError(JepactlError):
    """Training produced a NaN/inf loss; the last good checkpoint was kept."""

    exit_code = 1


#: ``errno`` values that mean "the disk (or a quota or file-size limit) is full".
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def format_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as ``df -H`` prints them)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


def free_bytes(path: Path) -> int:
    """Bytes available to this user on the file system holding ``path`` (or its nearest
    existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_full(path: Path, needed: int | None, cause: BaseException | None = None) -> DiskFullError:
    """The one-line error for a write to ``path`` that does not fit."""
    free = free_bytes(Path(path).parent)
    found = space_oserror(cause)
    too_large = found is not None and found.errno == errno.EFBIG
    what = (
        "file too large for this file system or ulimit -f"
        if too_large
        else "no space left on device"
    )
    need = f"; it needs about {format_bytes(needed)}" if needed else ""
    return DiskFullError(
        f"{what} writing {path} ({format_bytes(free)} free in {Path(path).parent}{need}); "
        "free some space and rerun the same command: what was written before is intact"
    )


def space_oserror(exc: BaseException | None) -> OSError | None:
    """The out-of-space ``OSError`` that ``exc`` is, or was raised while handling (``torch.save``
    closes its archive after a failed write and raises about that instead), if any."""
    for _ in range(10):  # a chain of causes and contexts, never a cycle
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def is_space_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` is (or was raised while handling) an out-of-space write failure."""
    return space_oserror(exc) is not None


@contextlib.contextmanager
def space_errors(path: Path, needed: int | None = None) -> Iterator[None]:
    """Turn an out-of-space failure inside the block into :func:`disk_full` for ``path``."""
    try:
        yield
    except DiskFullError:
        raise  # already says which file
    except Exception as exc:
        if is_space_error(exc):
            raise disk_full(path, needed, exc) from exc
        raise


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
