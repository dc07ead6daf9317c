"""Small shared helpers."""

from __future__ import annotations

import ctypes
import difflib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from jepactl.errors import disk_full, free_bytes, space_errors
from jepactl.log import LOGGER


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


def atomic_write_bytes(
    path: Path, write: Callable[[IO[bytes]], object], expected_size: int | None = None
) -> None:
    """Write through ``write(fileobj)`` to a temp file beside ``path``, fsync, then rename.

    A crash at any point leaves either the old file or the new one, never a torn file. The file
    gets the permissions a plain ``open`` would give it (``mkstemp`` makes it private), so
    results, figures and checkpoints stay readable by collaborators.

    A write that does not fit (no space, a quota, a file-size limit) removes the temp file and
    raises :class:`~jepactl.errors.DiskFullError` naming the path and the space needed; with
    ``expected_size`` that is checked before anything is written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if expected_size is not None and free_bytes(path.parent) < expected_size:
        raise disk_full(path, expected_size)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with space_errors(path, expected_size), os.fdopen(fd, "wb") as f:
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


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` as an independent file, atomically (temp file, fsync, rename)."""
    with open(src, "rb") as source:
        atomic_write_bytes(
            dst, lambda f: shutil.copyfileobj(source, f, 8 << 20), os.fstat(source.fileno()).st_size
        )


def reserve_space(fd: int, size: int) -> bool:
    """Allocate ``size`` bytes of disk for the open file ``fd`` now (Linux ``fallocate``), so
    later writes into that range cannot fail for lack of space. Returns False where the file
    system cannot reserve (nothing is reserved then); raises ``OSError`` (ENOSPC, EDQUOT,
    EFBIG) when the space is not there. Never emulated byte by byte, unlike
    ``posix_fallocate`` on file systems without the call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):  # not Linux/glibc
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if fallocate(fd, 0, 0, size) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


def iter_jsonl(
    path: Path, warn: Callable[[str], object] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of each JSON-object line of a JSON-lines file, skipping lines that
    do not parse (a line torn by a kill or a full disk) with a warning naming the file and
    line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                if warn is not None:
                    warn(f"{path}:{number}: dropped an unreadable (torn) line: {line[:60]!r}")
                continue
            yield number, record


def read_jsonl(path: Path, warn: Callable[[str], object] | None = None) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (:func:`iter_jsonl`, torn lines skipped)."""
    return [record for _, record in iter_jsonl(path, warn)]


def json_ready(value: Any) -> Any:
    """``value`` as JSON holds it: mappings as dicts with text keys, tuples as lists
    (recursively); anything else as it is."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def warn(message: str) -> None:
    """A one-line warning (``jepactl: warning: ...`` on stderr, see :mod:`jepactl.log`)."""
    LOGGER.warning(message)


def file_sha256(path: Path, chunk_bytes: int = 8 << 20) -> str:
    """sha256 of a file, read in ``chunk_bytes`` pieces (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()
