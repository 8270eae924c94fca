"""The group committer's writer on SQLite: the stdlib driver in a process of its own.

A group's rows are written in one transaction by a dedicated connection in a dedicated
process (`app.jobs.sqlite_write_process`): the event loop converts the rows and hands them
over through a pipe, and the commit (an fsync with `synchronous=FULL`) runs while it serves
other requests. The writer was a thread of the gateway's before. The sqlite3 module releases
the GIL around each statement step, and every step then had to win it back from the event
loop: at 32 concurrent single-job requests each group spent 2.6 of its 3.6 ms waiting for
the GIL, and the requests of the group waited with it. In a process of its own the same
load took 4,300-5,400 accepted jobs a second instead of 2,600-3,700, with less CPU per
request counting both processes (230-285 us against 265-375).

Large groups go in multi-row INSERTs rather than `executemany` (`MultiRowInserts`): SQLite's
own per-row work is cheaper (a 100-job batch: 2.2 ms of writer CPU before, 1.2-1.5 ms
after). Rows go in chunks of power-of-two sizes, so each table needs at most a dozen
distinct statements, which stay in the connection's statement cache.

Values are converted by the columns' own SQLAlchemy bind processors (the same stored text as
the ORM writes: timestamps, JSON), each distinct timestamp formatted once per group.
Failures come back as SQLAlchemy's `DBAPIError` subclasses, so they are mapped to answers
(503, 409...) exactly like the ORM path's. A writer process that stops is replaced at the
next group; a group it was writing when it stopped fails as the store being unavailable
(503), since whether it was committed cannot be known.
"""

from __future__ import annotations

import asyncio
import marshal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.dml import Insert

from app.jobs.sqlite_write_process import HEADER_BYTES, Failure, frame, qmark


class RecordedInserts:
    """Stands in for a session while the pending writes are built: it keeps the bulk
    INSERTs (statement, rows) the writers would have executed, in order."""

    def __init__(self) -> None:
        self.batches: list[tuple[Table, list[dict[str, Any]]]] = []

    async def execute(self, statement: Any, params: Sequence[dict[str, Any]] = ()) -> None:
        if not isinstance(statement, Insert) or not isinstance(statement.table, Table):
            raise TypeError(f"the group writer only stores bulk inserts, not {statement}")
        if statement._values or statement._multi_values:
            raise TypeError("the group writer takes rows as parameters, not .values()")
        self.batches.append((statement.table, list(params)))


# (single-row INSERT, row -> values in column order, [(column index, bind processor)])
_Prepared = tuple[
    str, Callable[[dict[str, Any]], tuple[Any, ...]], list[tuple[int, Callable[[Any], Any]]]
]


class BindConverter:
    """INSERT statements per (table, columns), cached, and rows converted to their values by
    the columns' bind processors for `dialect`; each distinct timestamp is formatted once."""

    def __init__(self, dialect: Dialect, *, placeholder: Callable[[int], str]) -> None:
        self._dialect = dialect
        self._placeholder = placeholder  # the driver's mark for parameter n (1-based)
        self._statements: dict[tuple[str, tuple[str, ...]], _Prepared] = {}

    def convert(
        self, table: Table, rows: list[dict[str, Any]]
    ) -> tuple[str, list[tuple[Any, ...]]]:
        keys = tuple(rows[0])
        cached = self._statements.get((table.name, keys))
        if cached is None:
            cached = self._statements[(table.name, keys)] = self._prepare(table, keys)
        sql, take, processors = cached
        if not processors:
            return sql, [take(row) for row in rows]
        formatted: dict[datetime, Any] = {}  # one format per distinct timestamp
        values: list[tuple[Any, ...]] = []
        for row in rows:
            converted = list(take(row))
            for index, process in processors:
                value = converted[index]
                if value is None:
                    continue
                if isinstance(value, datetime):
                    done = formatted.get(value)
                    if done is None:
                        done = formatted[value] = process(value)
                    converted[index] = done
                else:
                    converted[index] = process(value)
            values.append(tuple(converted))
        return sql, values

    def _prepare(self, table: Table, keys: tuple[str, ...]) -> _Prepared:
        """The single-row INSERT, what takes a row's values in its column order, and the bind
        processor of each column that has one."""
        quote = self._dialect.identifier_preparer.quote
        columns = ", ".join(quote(key) for key in keys)
        marks = ", ".join(self._placeholder(i) for i in range(1, len(keys) + 1))
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, key in enumerate(keys):
            impl = table.c[key].type.dialect_impl(self._dialect)
            process = impl.bind_processor(self._dialect)
            if process is not None:
                processors.append((index, process))
        sql = f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({marks})"
        if len(keys) == 1:  # itemgetter of one key returns the value, not a tuple
            return sql, lambda row: (row[keys[0]],), processors
        return sql, itemgetter(*keys), processors


class SqliteGroupWriter:
    """Stores groups through its own writer process (`app.jobs.sqlite_write_process`),
    started at the first write and again after it died; one group at a time."""

    def __init__(self, path: Path, *, synchronous: str, dialect: Dialect) -> None:
        self._path = path
        self._synchronous = synchronous
        self._converter = BindConverter(dialect, placeholder=qmark)
        self._process: asyncio.subprocess.Process | None = None
        self._exchange: asyncio.Lock | None = None

    async def write(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> None:
        """Insert every batch in one transaction; returns once it is committed."""
        prepared = [self._converter.convert(table, rows) for table, rows in batches if rows]
        if not prepared:
            return
        request = frame(prepared)
        if self._exchange is None:
            self._exchange = asyncio.Lock()
        async with self._exchange:
            failure = await self._send(request)
        if failure is not None:
            raise _database_error(*failure)

    async def _send(self, request: bytes) -> Failure | None:
        retried = False
        while True:
            process = self._process
            if process is None or process.returncode is not None or _closing(process):
                process = self._process = await self._start()
            stdin, stdout = process.stdin, process.stdout
            if stdin is None or stdout is None:
                raise RuntimeError("the writer process has no pipes")
            try:
                stdin.write(request)
                await stdin.drain()
            except ConnectionError as exc:
                # The process stopped before it had the whole group: nothing of it is
                # stored, so another process may write it (once).
                self._discard()
                if retried:
                    raise _stopped(exc) from exc
                retried = True
                continue
            except BaseException:
                self._discard()
                raise
            try:
                header = await stdout.readexactly(HEADER_BYTES)
                answer = await stdout.readexactly(int.from_bytes(header, "big"))
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                # Committed or not is unknown: a 503 for every member, never a retry.
                self._discard()
                raise _stopped(exc) from exc
            except BaseException:
                self._discard()  # cancelled mid-exchange: its answer must not reach the next
                raise
            failure: Failure | None = marshal.loads(answer)
            return failure

    async def _start(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _BOOTSTRAP,
            str(self._path),
            self._synchronous,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    def _discard(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()

    async def close(self) -> None:
        """Stop the writer process once it has written what it was sent (idempotent; a
        later `write` starts another)."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


# How long `close` waits for the writer process to finish its group and exit.
CLOSE_TIMEOUT_S = 30.0
# The process imports this very package, and nothing from site-packages or the environment
# (`-I -S`): it is ready for its first group in about 40 ms, in about 14 MB.
_BOOTSTRAP = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
    "from app.jobs.sqlite_write_process import main; sys.exit(main(sys.argv))"
)


def _closing(process: asyncio.subprocess.Process) -> bool:
    transport = getattr(process.stdin, "transport", None)
    return transport is not None and transport.is_closing()


def _stopped(exc: BaseException) -> StatementError:
    return _database_error(
        "OperationalError", f"the SQLite writer process stopped: {exc!r}", None, None, ""
    )


def _database_error(
    name: str, message: str, code: int | None, error_name: str | None, statement: str
) -> StatementError:
    """The writer process's failure as the thread's was: SQLAlchemy's `DBAPIError`
    subclass for the sqlite3 exception (mapped to answers like the ORM path's)."""
    cls = getattr(sqlite3, name, None)
    if not (isinstance(cls, type) and issubclass(cls, sqlite3.Error)):
        cls = sqlite3.Error
    exc = cls(message)
    if code is not None and error_name is not None:
        exc.sqlite_errorcode, exc.sqlite_errorname = code, error_name
    return DBAPIError.instance(statement, None, exc, sqlite3.Error, hide_parameters=True)
