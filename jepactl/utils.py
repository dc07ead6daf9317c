"""Small shared helpers."""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


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
