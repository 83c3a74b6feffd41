"""One controller per site: an exclusive lock on a file beside the site's history.

Rule: a process that runs a site holds ``<history>.lock`` with an exclusive, non-blocking
``flock`` for as long as it runs, and writes its PID into it. A second process on the same history
cannot take the lock and is refused with :class:`SiteLocked`, naming the PID of the one that runs,
before it touches a device or the history. The lock belongs to the open file, so it is released
when the process ends in any way (even ``kill -9``); a stale lock file left on disk locks nothing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["SiteLock", "SiteLocked", "lock_path"]


class SiteLocked(Exception):
    """Another process holds the site's lock. ``pid`` is its PID when it could be read."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"PID {pid}" if pid is not None else "another process"
        super().__init__(f"another Laterne ({who}) is running this site (lock {path})")


def lock_path(history_path: Path) -> Path:
    """The lock file of the site whose history is ``history_path``."""
    return history_path.with_name(history_path.name + ".lock")


class SiteLock:
    """The exclusive lock of one site; use as a context manager or call :meth:`release`.

    Raises
    ------
    SiteLocked
        another process holds it.
    OSError
        the lock file cannot be created (missing permission, read-only file system).
    """

    def __init__(self, history_path: Path) -> None:
        self.path = lock_path(history_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise SiteLocked(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        """Let go of the lock (idempotent). The file stays: removing it could race a new owner."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
