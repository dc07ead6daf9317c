"""Small shared helpers."""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (e.g. run seed, step, rank, mask group).

    Generators seeded this way need no saved state: resuming at step ``s`` re-derives exactly
    the generators the interrupted run would have used, on every rank and in every worker.
    """
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def close_match(name: str, valid: Iterable[str], cutoff: float = 0.5) -> str | None:
    """The valid name closest to ``name``, if any is close enough."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=cutoff)
    return close[0] if close else None


def suggestion(name: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"``, or the list of valid names when none is close."""
    valid = sorted(valid)
    close = close_match(name, valid)
    return f"; did you mean '{close}'?" if close else f"; valid: {', '.join(valid)}"


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks set by schedulers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def write_section(path: Path, marker: str, text: str) -> None:
    """Replace the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->``."""
    doc = path.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in doc or end not in doc:
        raise ValueError(f"{path} has no {start} ... {end} section")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}{end}{tail}")


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through ``write(fileobj)`` to a temp file beside ``path``, fsync, then rename.

    A crash at any point leaves either the old file or the new one, never a torn file. The file
    gets the permissions a plain ``open`` would give it (``mkstemp`` makes it private), so
    results, figures and checkpoints stay readable by collaborators.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
