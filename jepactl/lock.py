"""One writer per run directory: an advisory lock held for the life of the process.

``RunLock(folder)`` takes a POSIX record lock (``fcntl.lockf``) on ``folder/.lock`` and writes
who holds it (host, pid, command, start time) into the file. The kernel drops the lock when
the holder exits in any way (``kill -9`` included), so a crashed run never blocks its resume,
and POSIX locks work across the nodes of NFS (v3 through the lock manager, v4 natively) and
Lustre mounted with ``flock``. A second process asking for the lock gets a one-line
:class:`~jepactl.errors.RunLockedError` naming the holder.

POSIX locks belong to the process, not the file descriptor: a second ``RunLock`` of the same
folder in the same process would succeed silently, and closing any descriptor of the file
would release the lock. Both are prevented by keeping a registry of the folders this process
holds (a second acquire is refused) and by never opening the lock file anywhere else.
Where the file system offers no locking at all, the run goes on with a warning.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from jepactl.errors import RunLockedError
from jepactl.utils import warn

LOCK_NAME = ".lock"
_HELD: set[Path] = set()  # folders whose lock this process holds


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (
        f"pid {info.get('pid')} on {info.get('host')} (`{info.get('command', '?')}`, "
        f"since {info.get('since', '?')})"
    )


class RunLock:
    """Exclusive use of ``folder`` (created if missing) while the lock is held.

    Use as a context manager, or call :meth:`acquire` and :meth:`release`.
    """

    def __init__(self, folder: Path, hint: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.hint = hint  # appended to the refusal, e.g. ", or choose another --run-dir"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        key = self.path.resolve()
        if key in _HELD:
            raise RunLockedError(f"{self.folder} is already in use by this process")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise RunLockedError(
                    f"{self.folder} is in use by {_holder_text(self.path)}; wait for it to "
                    f"finish or stop it{self.hint}"
                ) from None
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                warn(
                    f"{self.path.parent} is on a file system without file locking: make sure "
                    "no other process uses it at the same time"
                )
                _HELD.add(key)
                return self
            raise
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        _HELD.add(key)
        return self

    def release(self) -> None:
        _HELD.discard(self.path.resolve())
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # the next reader finds no stale holder
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
