"""Small shared helpers."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (e.g. run seed, step, rank, mask group).

    Generators seeded this way need no saved state: resuming at step ``s`` re-derives exactly
    the generators the interrupted run would have used, on every rank and in every worker.
    """
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
