"""The group committer's writer on SQLite: the stdlib driver in a thread of its own.

A group's rows are written in one transaction by a dedicated connection in a dedicated
thread: the event loop only hands the rows over, and the commit (an fsync with
`synchronous=FULL`) runs while it serves other requests.

Large groups go in multi-row INSERTs rather than `executemany`: the sqlite3 module releases
the GIL around each statement step, and `executemany` steps once per row. Every row then had
to win the GIL back from the event loop, which holds it while it serves requests (up to the
5 ms switch interval each time): a 100-job batch waited longer for the GIL than it spent in
SQLite. A statement for many rows is one step, and SQLite's own per-row work is cheaper too
(a 100-job batch: 2.2 ms of writer CPU before, 1.2-1.5 ms after). Rows go in chunks of
power-of-two sizes, so each table needs at most a dozen distinct statements, which stay in
the connection's statement cache.

Values are converted by the columns' own SQLAlchemy bind processors (the same stored text as
the ORM writes: timestamps, JSON), each distinct timestamp formatted once per group.
Failures come back as SQLAlchemy's `DBAPIError` subclasses, so they are mapped to answers
(503, 409...) exactly like the ORM path's.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

from app.core.sqlite_driver import writer_lock


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


# Rows per multi-row INSERT at most (also bounded by SQLite's limit on parameters).
MAX_ROWS_PER_STATEMENT = 256
# Fewer rows than this go through `executemany`: few GIL handoffs. Measured at 32 concurrent
# single-job requests, multi-row statements for these small groups committed sooner, so
# groups got smaller and the event loop spent more on per-group work than the writer saved.
MIN_MULTI_ROWS = 32


class MultiRowInserts:
    """Splits a table's rows into multi-row INSERTs of power-of-two sizes (13 rows: 8, 4
    and 1), each built from the single-row statement once and cached. `placeholder` is the
    driver's mark for parameter n (1-based), as for `BindConverter`. Up to `exact_up_to`
    rows go in one statement of exactly that size (a few more distinct statements, one
    round trip for a small group)."""

    def __init__(
        self,
        *,
        placeholder: Callable[[int], str],
        max_rows: int = MAX_ROWS_PER_STATEMENT,
        max_variables: int = 32766,
        exact_up_to: int = 1,
    ) -> None:
        self._placeholder = placeholder
        self._exact_up_to = exact_up_to
        self._max_rows = max_rows
        self._max_variables = max_variables
        self._statements: dict[tuple[str, int], str] = {}

    def chunks(
        self, single_row_sql: str, rows: list[tuple[Any, ...]]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """(statement, flat parameters) pairs that insert `rows` in order."""
        width = len(rows[0]) if rows else 1
        largest = max(1, min(self._max_rows, self._max_variables // width))
        out: list[tuple[str, tuple[Any, ...]]] = []
        start = 0
        while start < len(rows):
            left = len(rows) - start
            size = min(largest, left if left <= self._exact_up_to else 1 << (left.bit_length() - 1))
            params = tuple(value for row in rows[start : start + size] for value in row)
            out.append((self._statement(single_row_sql, size, width), params))
            start += size
        return out

    def _statement(self, single_row_sql: str, size: int, width: int) -> str:
        statement = self._statements.get((single_row_sql, size))
        if statement is None:
            head, marker, _ = single_row_sql.partition(" VALUES ")
            if not marker:
                raise ValueError(f"not a single-row INSERT: {single_row_sql}")
            mark = self._placeholder
            groups = (
                "(" + ", ".join(mark(row * width + column) for column in range(1, width + 1)) + ")"
                for row in range(size)
            )
            statement = f"{head} VALUES {', '.join(groups)}"
            self._statements[(single_row_sql, size)] = statement
        return statement


def _qmark(_: int) -> str:
    return "?"


class SqliteGroupWriter:
    def __init__(self, path: Path, *, synchronous: str, dialect: Dialect) -> None:
        self._path = path
        self._synchronous = synchronous
        self._converter = BindConverter(dialect, placeholder=_qmark)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobgate-sqlite-writer")
        self._connection: sqlite3.Connection | None = None
        self._inserts: MultiRowInserts | None = None  # sized for the connection's limit
        self._turn = writer_lock(path)  # shared with the process's other writers

    async def write(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> None:
        """Insert every batch in one transaction; returns once it is committed."""
        prepared = [self._converter.convert(table, rows) for table, rows in batches if rows]
        if prepared:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write, prepared)

    def _connect(self) -> tuple[sqlite3.Connection, MultiRowInserts]:
        if self._connection is None or self._inserts is None:
            # mode=rw: never create the file (the gateway's migrations do, 0600).
            connection = sqlite3.connect(
                f"file:{self._path}?mode=rw", uri=True, timeout=30, isolation_level=None
            )
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            connection.execute("PRAGMA busy_timeout=30000")
            connection.execute("PRAGMA foreign_keys=ON")
            self._inserts = MultiRowInserts(
                placeholder=_qmark,
                max_variables=connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER),
            )
            self._connection = connection
        return self._connection, self._inserts

    def _write(self, prepared: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        statement = "BEGIN IMMEDIATE"
        turn = self._turn
        try:
            connection, inserts = self._connect()
            if turn is not None:
                turn.acquire(self)
            connection.execute(statement)
            try:
                for statement, rows in prepared:  # an error names the single-row form
                    if len(rows) < MIN_MULTI_ROWS:
                        connection.executemany(statement, rows)
                        continue
                    for multi_row, params in inserts.chunks(statement, rows):
                        connection.execute(multi_row, params)
                statement = "COMMIT"
                connection.execute(statement)
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                statement, None, exc, sqlite3.Error, hide_parameters=True
            ) from exc
        finally:
            if turn is not None:
                turn.release(self)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        """Close the connection; a later `write` opens a new writer thread (idempotent)."""
        executor = self._executor
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobgate-sqlite-writer")
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=True)
