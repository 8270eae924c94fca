"""Noticing new work from another process cheaply, so an idle consumer starts at once.

On SQLite every commit (the gateway accepting a job, the relay, a retry coming due is not
one) appends to the write-ahead log file: a `stat()` of it every few milliseconds costs
nothing next to a pull (a write transaction), so the idle consumer waits on the file instead
of pulling every second, and pulls within a few milliseconds of a commit. A delayed message
becoming visible commits nothing: the idle poll still finds those. On PostgreSQL there is no
file to watch: the idle poll alone applies.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from app.core.db import sqlite_file

# How often the log file is looked at while idle.
WATCH_INTERVAL_S = 0.005


class StoreWatch:
    """`changed()` returns once another commit reached the database (never, without a file)."""

    def __init__(self, wal: Path | None, *, interval_s: float = WATCH_INTERVAL_S) -> None:
        self._wal = wal
        self._interval_s = interval_s

    @classmethod
    def for_url(cls, url: str | None) -> StoreWatch:
        if not url:
            return cls(None)
        parsed = make_url(url)
        path = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
        return cls(path.with_name(path.name + "-wal") if path is not None else None)

    @property
    def active(self) -> bool:
        return self._wal is not None

    def _stamp(self) -> tuple[int, int] | None:
        if self._wal is None:
            return None
        try:
            stat = os.stat(self._wal)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    async def changed(self) -> None:
        if self._wal is None:
            await asyncio.Event().wait()  # nothing to watch: only the caller's timeout ends it
        before = self._stamp()
        while True:
            await asyncio.sleep(self._interval_s)
            if self._stamp() != before:
                return
