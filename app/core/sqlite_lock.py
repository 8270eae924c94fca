"""Which SQLite database names are files, and a process's turn at writing to one.

Standard library only: the group writer's own process imports it without the application.
See `app.core.sqlite_driver` for why writers take turns on an flock before SQLite's lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


class WriterLock:
    """One process's turn at writing to a SQLite file, among the processes that use it.

    The first of this process's write transactions to begin takes an exclusive flock on
    `<database>-writers`, waiting (off the event loop, in the database thread) while another
    process holds it; the last to end lets it go. The process's own transactions share the
    turn and queue on SQLite's lock as before, so they never wait on each other here. Each
    holder (a connection) is counted once, so releasing twice is harmless; a process that
    dies loses its flock with its file descriptor.
    """

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}-writers")
        self._fd: int | None = None
        self._usable = True
        self._holders: set[int] = set()
        self._mutex = threading.Lock()

    def acquire(self, holder: object) -> None:
        with self._mutex:
            if not self._holders:
                fd = self._open()
                if fd is not None:
                    # Blocks only while another process writes: this one holds no turn now.
                    fcntl.flock(fd, fcntl.LOCK_EX)
            self._holders.add(id(holder))

    def release(self, holder: object) -> None:
        if id(holder) not in self._holders:
            return
        with self._mutex:
            self._holders.discard(id(holder))
            if not self._holders and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _open(self) -> int | None:
        if self._fd is None and self._usable:
            try:
                self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # e.g. a read-only directory: SQLite's busy timeout alone
                self._usable = False
                logger.warning("no writer lock at %s (%s)", self.path, exc)
        return self._fd


_writer_locks: dict[Path, WriterLock] = {}
_writer_locks_mutex = threading.Lock()


def database_file(name: str | None) -> Path | None:
    """The file a SQLite database name opens; None for in-memory and `file:` URI names."""
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def writer_lock(database: str | Path) -> WriterLock | None:
    """The process's `WriterLock` for a database file; None for in-memory and URI names."""
    file = database_file(str(database))
    if file is None:
        return None
    path = file.resolve()
    with _writer_locks_mutex:
        lock = _writer_locks.get(path)
        if lock is None:
            lock = _writer_locks[path] = WriterLock(path)
        return lock


