"""The group committer's writer on SQLite: the stdlib driver in a thread of its own.

A group's rows are written with one prepared `executemany` per table, in one transaction,
by a dedicated connection in a dedicated thread: the event loop only hands the rows over,
and the commit (an fsync with `synchronous=FULL`) runs while it serves other requests.
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
from pathlib import Path
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

Processor = Callable[[Any], Any] | None


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


class BindConverter:
    """INSERT statements per (table, columns), cached, and rows converted to their values by
    the columns' bind processors for `dialect`; each distinct timestamp is formatted once."""

    def __init__(self, dialect: Dialect, *, placeholder: Callable[[int], str]) -> None:
        self._dialect = dialect
        self._placeholder = placeholder  # the driver's mark for parameter n (1-based)
        self._statements: dict[tuple[str, tuple[str, ...]], tuple[str, list[Processor]]] = {}

    def convert(
        self, table: Table, rows: list[dict[str, Any]]
    ) -> tuple[str, list[tuple[Any, ...]]]:
        keys = tuple(rows[0])
        cached = self._statements.get((table.name, keys))
        if cached is None:
            quote = self._dialect.identifier_preparer.quote
            columns = ", ".join(quote(key) for key in keys)
            marks = ", ".join(self._placeholder(i) for i in range(1, len(keys) + 1))
            sql = f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({marks})"
            processors: list[Processor] = [
                table.c[key].type.dialect_impl(self._dialect).bind_processor(self._dialect)
                for key in keys
            ]
            cached = (sql, processors)
            self._statements[(table.name, keys)] = cached
        sql, processors = cached
        formatted: dict[datetime, Any] = {}  # one format per distinct timestamp
        values: list[tuple[Any, ...]] = []
        for row in rows:
            converted: list[Any] = []
            for key, process in zip(keys, processors, strict=True):
                value = row[key]
                if process is not None and value is not None:
                    if isinstance(value, datetime):
                        done = formatted.get(value)
                        if done is None:
                            done = formatted[value] = process(value)
                        value = done
                    else:
                        value = process(value)
                converted.append(value)
            values.append(tuple(converted))
        return sql, values


class SqliteGroupWriter:
    def __init__(self, path: Path, *, synchronous: str, dialect: Dialect) -> None:
        self._path = path
        self._synchronous = synchronous
        self._converter = BindConverter(dialect, placeholder=lambda _: "?")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobgate-sqlite-writer")
        self._connection: sqlite3.Connection | None = None

    async def write(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> None:
        """Insert every batch in one transaction; returns once it is committed."""
        prepared = [self._converter.convert(table, rows) for table, rows in batches if rows]
        if prepared:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write, prepared)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # mode=rw: never create the file (the gateway's migrations do, 0600).
            connection = sqlite3.connect(
                f"file:{self._path}?mode=rw", uri=True, timeout=30, isolation_level=None
            )
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            connection.execute("PRAGMA busy_timeout=30000")
            connection.execute("PRAGMA foreign_keys=ON")
            self._connection = connection
        return self._connection

    def _write(self, prepared: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        statement = "BEGIN IMMEDIATE"
        try:
            connection = self._connect()
            connection.execute(statement)
            try:
                for statement, values in prepared:
                    connection.executemany(statement, values)
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
