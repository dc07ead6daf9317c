"""Format versions of the files a run holds, and the one path by which an older one is read.

Each file a run holds has one record type in its owner's room (the checkpoint in
:mod:`jepactl.checkpoint`, the token cache's attributes in :mod:`jepactl.features.
cache_schema`, probe settings and results in :mod:`jepactl.probe.records`, the metrics line in
:mod:`jepactl.train.metrics`, the export config in :mod:`jepactl.models.export`). The owner
declares its :class:`Format` here-by: a name for messages, the version it writes, the key the
version is stored under, and the migrations that bring each older version up by one. Reading
goes through :meth:`Format.upgrade` alone, so an old file is migrated in one place and a file
from a newer jepactl is refused with one line (:class:`NewerFormatError`) naming both versions
and what to upgrade, never a ``KeyError`` deep in a reader.

A format change adds a migration from the old version and bumps ``version``; its release also
commits a run directory it wrote under ``jepactl_tests/fixtures/runs/`` beside the older ones
(see ``jepactl_tests/test_fixture_runs.py``), which are never regenerated.

No torch, no project imports beyond errors and the version: every room may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jepactl.errors import JepactlError
from jepactl.version import __version__

#: A migration: a record of version ``v`` (a dict as read) to one of version ``v + 1``.
Migration = Callable[[dict[str, Any]], dict[str, Any]]


class FormatError(JepactlError):
    """A file whose format this jepactl cannot read (the message says which and why)."""


class NewerFormatError(FormatError):
    """A file written by a newer jepactl, in a format version this one does not know."""


@dataclass(frozen=True)
class Format:
    """One file format: ``name`` (for messages), the ``version`` this jepactl writes, the
    ``key`` it is stored under, the version of files written before the key existed
    (``unversioned``), and ``migrations[v]``, which turns a version-``v`` record into a
    version-``v + 1`` one."""

    name: str
    version: int
    key: str = "format_version"
    unversioned: int = 1
    migrations: Mapping[int, Migration] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [v for v in range(self.unversioned, self.version) if v not in self.migrations]
        if missing:
            raise ValueError(f"{self.name}: no migration from version(s) {missing}")

    def stamp(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with this format's current version under :attr:`key`, first."""
        return {self.key: self.version, **{k: v for k, v in data.items() if k != self.key}}

    def version_of(self, data: Mapping[str, Any], where: str | Path) -> int:
        """The version ``data`` records (:attr:`unversioned` where it records none)."""
        raw = data.get(self.key, self.unversioned)
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise FormatError(
                f"{where}: {self.name} {self.key} {raw!r} is not a version number; the file is "
                "damaged or not jepactl's"
            ) from None

    def upgrade(self, data: Mapping[str, Any], where: str | Path) -> dict[str, Any]:
        """``data`` brought to the current version, through each migration from its own;
        a :class:`NewerFormatError` when it is newer than this jepactl reads."""
        found = self.version_of(data, where)
        if found > self.version:
            raise NewerFormatError(
                f"{where} is {self.name} format {found}, written by a newer jepactl; this "
                f"jepactl ({__version__}) reads {self.name} formats up to {self.version}: "
                "upgrade jepactl (pip install -U jepactl) to read it"
            )
        if found < self.unversioned:
            raise FormatError(f"{where}: {self.name} format {found} was never written")
        out = dict(data)
        for v in range(found, self.version):
            out = self.migrations[v](out)
        out[self.key] = self.version
        return out
