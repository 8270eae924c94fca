"""SQLAlchemy's aiosqlite driver with one thread round trip per statement.

aiosqlite runs every call on its connection's thread and hands the result back to the event
loop. SQLAlchemy's adapter makes four such calls per statement: open a cursor, execute, fetch
the rows, close the cursor. On a 2-core machine one hand-off costs about 75 µs of wall time
and 60 µs of CPU (a thread wake-up each way), so a 20-statement transaction spent more time
handing off than running SQL. Here the cursor opens, executes, fetches and closes in one call.

Everything else is SQLAlchemy's: the engine is created with `module=one_trip_dbapi()` and
keeps the `sqlite+aiosqlite` dialect. Server-side cursors (`stream()`) keep the stock path.
A ROLLBACK with no transaction open (the pool's reset after every COMMIT) is no hand-off.

On a process's one connection (`inline`, the consumer's engine) statements skip the thread
altogether and run on the event loop's: a consumer's statement is sub-millisecond, while
its hand-off costs two thread wake-ups and the statement's every step then waits for the
GIL held by the busy loop. BEGIN IMMEDIATE (it may wait for another process's turn) and
COMMIT (it may fsync) still go to the thread, so the loop never blocks on another process.
The price: a statement that is long for once (a retention purge after days offline) holds
the loop, not only the connection, while it runs. On the end-to-end benchmark, 4
interleaved pairs: 2,344-2,523 jobs/s against 2,024-2,362, and 339-359 us of consumer CPU
per job against 355-398. With more than one connection it stays off: a statement run
inline that waited on SQLite's lock held by a sibling connection would stall the loop that
sibling needs to commit.

Write transactions also take a `WriterLock` (an flock on `<database>-writers`) before
BEGIN IMMEDIATE, here and in the gateway's group writer. SQLite's own busy handler waits
for another process's write lock by sleeping 1, 2, 5 ... 100 ms and checking again; a
gateway and a consumer on one file take turns every few milliseconds, so the waiter kept
sleeping through the free moments: the gateway's group writer waited 40-60 ms per
transaction behind the consumer's, and ingest stalled with it. A process blocked on the
flock is woken by the kernel the moment the holder lets go (7-9 ms per transaction, ingest
up about 40% under a running consumer). SQLite's lock stays the one that guarantees anything.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

from app.core.sqlite_lock import WriterLock, writer_lock


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose statement runs to completion (rows fetched, sqlite3 cursor closed) in
    one call on aiosqlite's thread; it keeps what the statement left behind."""

    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No sqlite3 cursor is opened here: each execute opens and closes its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows: deque[Any] = deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing stays open on the driver's side

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._call(self._run, operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._call(self._run, operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _call(self, run: Any, operation: str, parameters: Any, many: bool) -> Any:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            if self._adapt_connection.inline and operation != "BEGIN IMMEDIATE":  # type: ignore[attr-defined]
                if not connection._running or not connection._connection:
                    raise ValueError("Connection closed")  # as aiosqlite says it
                return run(operation, parameters, many)
            return await connection._execute(run, operation, parameters, many)  # type: ignore[no-untyped-call]

    def _run(self, operation: str, parameters: Any, many: bool) -> None:
        """The whole statement, on aiosqlite's thread (or the event loop's: `inline`)."""
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        cursor: sqlite3.Cursor = connection._conn.cursor()
        try:
            if operation == "BEGIN IMMEDIATE":
                self._begin_immediate(cursor)
            elif many:
                cursor.executemany(operation, parameters)
            else:
                cursor.execute(operation, () if parameters is None else parameters)
            self._description = cursor.description
            self._rows = deque(cursor.fetchall()) if cursor.description else deque()
            # After the fetch: for INSERT/UPDATE ... RETURNING, sqlite3 counts rows as read.
            self._rowcount = cursor.rowcount
            self._lastrowid = cursor.lastrowid
        finally:
            cursor.close()

    def _begin_immediate(self, cursor: sqlite3.Cursor) -> None:
        lock: WriterLock | None = self._adapt_connection.writer_lock  # type: ignore[attr-defined]
        if lock is None:
            cursor.execute("BEGIN IMMEDIATE")
            return
        lock.acquire(self._adapt_connection)
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except BaseException:
            lock.release(self._adapt_connection)
            raise


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """`inline`: statements run on the event loop's thread, except BEGIN IMMEDIATE (it may
    wait for another process's turn) and COMMIT/ROLLBACK (a commit may fsync)."""

    __slots__ = ("writer_lock", "inline")
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def __init__(
        self, dbapi: Any, connection: Any, writer_lock: WriterLock | None, *, inline: bool
    ) -> None:
        super().__init__(dbapi, connection)
        self.writer_lock = writer_lock
        self.inline = inline

    def commit(self) -> None:
        self._end("commit")

    def rollback(self) -> None:
        self._end("rollback")

    def _end(self, how: str) -> None:
        """COMMIT or ROLLBACK on aiosqlite's thread; the writer's turn ends with the
        transaction (a failed COMMIT keeps it until the ROLLBACK that follows)."""
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        if not connection._connection:
            return
        lock = self.writer_lock
        if how == "rollback" and not connection._connection.in_transaction:
            # Nothing to roll back (the pool's reset of a connection whose transaction
            # ended): no hand-off.
            if lock is not None:
                lock.release(self)
            return

        def end(conn: sqlite3.Connection) -> None:
            try:
                getattr(conn, how)()
            finally:
                if lock is not None and not conn.in_transaction:
                    lock.release(self)

        try:
            await_(connection._execute(end, connection._conn))  # type: ignore[no-untyped-call]
        except Exception as error:
            self._handle_exception(error)

    # A connection closed or terminated inside a transaction (invalidated, cancelled) has
    # lost it, and its turn with it.
    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release_turn()

    async def _terminate_graceful_close(self) -> None:
        try:
            await super()._terminate_graceful_close()
        finally:
            self._release_turn()

    def _terminate_force_close(self) -> None:
        try:
            super()._terminate_force_close()
        finally:
            self._release_turn()

    def _release_turn(self) -> None:
        if self.writer_lock is not None:
            self.writer_lock.release(self)


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI shim, handing out `OneTripConnection`s."""

    def __init__(self, *, inline: bool) -> None:
        super().__init__(aiosqlite, sqlite3)
        self.inline = inline

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        if self.inline:
            kw["check_same_thread"] = False  # opened on aiosqlite's thread, used on the loop's
        stock = super().connect(*arg, **kw)
        lock = writer_lock(arg[0]) if arg and not kw.get("uri") else None
        return OneTripConnection(self, stock._connection, lock, inline=self.inline)


def one_trip_dbapi(*, inline: bool = False) -> OneTripDBAPI:
    """The `module=` for `create_async_engine` on a `sqlite+aiosqlite` URL; `inline`: see
    `OneTripConnection`."""
    return OneTripDBAPI(inline=inline)


def inline_sqlite(connection: AsyncConnection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `connection` when its statements run inline (on the
    event loop's thread, in the transaction the caller began), else None."""
    adapted = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    if not isinstance(adapted, OneTripConnection) or not adapted.inline:
        return None
    driver: aiosqlite.Connection = adapted._connection  # type: ignore[assignment]
    return driver._connection if driver._running else None


def run_inline(
    raw: sqlite3.Connection, sql: str, parameters: Sequence[Any], *, many: bool = False
) -> list[Any]:
    """`sql` on `inline_sqlite`'s connection, without SQLAlchemy's per-statement machinery
    (its compiled-statement lookup, execution context and result objects are most of the
    cost of a statement the consumer runs in a millisecond). Returns the rows; a driver
    error is raised as SQLAlchemy's, like any other statement's."""
    try:
        if many:
            raw.executemany(sql, parameters)
            return []
        return raw.execute(sql, parameters).fetchall()
    except sqlite3.Error as error:
        raise DBAPIError.instance(sql, parameters, error, sqlite3.Error, ismulti=many) from error
