"""Noticing new work from another process cheaply, so an idle consumer starts at once.

On SQLite every commit (the gateway accepting a job, the relay, a retry coming due is not
one) appends to the write-ahead log file: a `stat()` of it every few milliseconds costs
nothing next to a pull (a write transaction), so the idle consumer waits on the file instead
of pulling every second, and pulls within a few milliseconds of a commit. The file does not
say which queue was written: a worker whose pulls keep coming back empty looks again less
often (`changed(settle_s)`), so idle queues do not take the write lock on every commit of a
busy one.

On PostgreSQL a trigger on `queue_message` (migration 0015) notifies the channel
`jobgate_queue_message` with `<schema>:<queue>` when a transaction that inserted messages
commits; one LISTEN connection per consumer process (`QueueNotices`) wakes the worker of
that queue only. A delayed message becoming visible commits nothing: the idle poll still
finds those, and it is all there is when the listening connection cannot be had.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from app.core.db import SessionMaker, sqlite_file

log = logging.getLogger("jobgate.consumer")

# How often the log file is looked at while idle.
WATCH_INTERVAL_S = 0.005
# The channel the migration's trigger notifies, with the payload `<schema>:<queue>`.
NOTIFY_CHANNEL = "jobgate_queue_message"
_QUEUE_SCHEMA = text(
    "SELECT nspname FROM pg_namespace WHERE oid = "
    "(SELECT relnamespace FROM pg_class WHERE oid = to_regclass('queue_message'))"
)


class Wakeup(Protocol):
    """What an idle worker waits on besides its poll timeout."""

    @property
    def active(self) -> bool: ...

    async def changed(self, settle_s: float = 0.0) -> None:
        """Return once new work may be there; not sooner than `settle_s` from now."""
        ...


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

    async def changed(self, settle_s: float = 0.0) -> None:
        if self._wal is None:
            await asyncio.Event().wait()  # nothing to watch: only the caller's timeout ends it
        before = self._stamp()
        if settle_s > 0:
            await asyncio.sleep(settle_s)  # a commit meanwhile still counts
        while True:
            if self._stamp() != before:
                return
            await asyncio.sleep(self._interval_s)


class QueueNotice:
    """One queue's share of `QueueNotices`."""

    def __init__(self, notices: QueueNotices, event: asyncio.Event) -> None:
        self._notices = notices
        self._event = event

    @property
    def active(self) -> bool:
        return self._notices.listening

    async def changed(self, settle_s: float = 0.0) -> None:
        if settle_s > 0:
            await asyncio.sleep(settle_s)
        # A notice that came during the last pull is kept: that pull may have missed it.
        await self._event.wait()
        self._event.clear()


class QueueNotices:
    """LISTEN on PostgreSQL for the trigger's notices; wakes the named queue's worker."""

    def __init__(self, url: str, sessionmaker: SessionMaker) -> None:
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._sessionmaker = sessionmaker
        self._schema: str | None = None  # where the job store's `queue_message` is
        self._events: dict[str, asyncio.Event] = {}
        self._connection: Any = None

    @classmethod
    def for_url(cls, url: str, sessionmaker: SessionMaker) -> QueueNotices | None:
        """Notices for a PostgreSQL URL; None for any other database."""
        backend = make_url(url).get_backend_name()
        return cls(url, sessionmaker) if backend in ("postgresql", "postgres") else None

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    def watch(self, queue: str) -> QueueNotice:
        return QueueNotice(self, self._events.setdefault(queue, asyncio.Event()))

    async def start(self) -> None:
        """Connect and listen; on failure the workers keep to their idle poll."""
        import asyncpg  # type: ignore[import-untyped]  # no stubs; only on PostgreSQL

        try:
            # Several schemas share one database (and its channels): only ours counts.
            async with self._sessionmaker() as session:
                self._schema = (await session.execute(_QUEUE_SCHEMA)).scalar_one()
            self._connection = await asyncpg.connect(self._dsn)
            await self._connection.add_listener(NOTIFY_CHANNEL, self._notified)
        except (OSError, SQLAlchemyError, asyncpg.PostgresError) as exc:
            log.warning("not listening for new messages (%s): idle consumers poll", exc)
            await self.close()

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        schema, _, queue = payload.partition(":")
        event = self._events.get(queue) if schema == self._schema else None
        if event is not None:
            event.set()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            await connection.close()
