"""The group committer's writer on PostgreSQL: a group in one statement, no ORM session.

Every table's rows go in as arrays, one per column, unnested into rows:

    WITH w0 AS (INSERT INTO job (id, ...) SELECT * FROM unnest($1::VARCHAR(36)[], ...)),
         w1 AS (INSERT INTO job_event (...) SELECT * FROM unnest(...))
    INSERT INTO queue_message (...) SELECT * FROM unnest(...)

One statement is one round trip and its own transaction: no BEGIN or COMMIT of its own, and
its text depends on which tables and columns the group has, not on how many rows, so
asyncpg prepares it once per connection. It fires each table's statement-level counting
triggers (app.core.counters) once. Foreign keys are checked at the end of the statement, so
a job's events may come in the same statement as the job. Multi-row `VALUES` INSERTs (one
per table, in a transaction) cost five round trips per group through SQLAlchemy's adapter:
at 32 connections accept went from 1,337-1,517 to 2,629-3,047 req/s, and from 452-495 to
283-381 us of gateway CPU per request.

Values are converted by the columns' own bind processors (`BindConverter`, shared with the
SQLite writer). A table whose rows come with two different sets of columns (a column left
to its default in some) cannot share one unnest: then each batch is a statement of its own,
in the order given, all in one transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ARRAY, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.pg_driver import DriverConnection
from app.jobs.sqlite_writer import BindConverter

Shape = tuple[tuple[str, tuple[str, ...]], ...]  # (table, columns) per INSERT, in order


def _numbered(n: int) -> str:
    return f"${n}"


class PostgresGroupWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Foreign keys are checked by a saved query per inserted row (a job's tenant, an
        # event's job). The engine's `force_custom_plan` (see app.core.db) plans each of those
        # again per row: 28% of PostgreSQL's CPU on 100-job batches. They are primary-key
        # lookups, whose generic plan does not depend on the table's size, and neither does
        # an INSERT from unnest: this connection keeps PostgreSQL's default.
        self._connection = DriverConnection(engine, {"plan_cache_mode": "auto"})
        self._converter = BindConverter(engine.dialect, placeholder=_numbered)
        self._statements: dict[Shape, str] = {}

    async def write(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> None:
        """Insert every batch in one transaction; returns once it is committed."""
        merged: dict[tuple[str, tuple[str, ...]], tuple[Table, list[dict[str, Any]]]] = {}
        for table, rows in batches:
            if not rows:
                continue
            key = (table.name, tuple(rows[0]))
            if key in merged:
                merged[key][1].extend(rows)
            else:
                merged[key] = (table, list(rows))
        if not merged:
            return
        if len({name for name, _ in merged}) < len(merged):
            # A table twice: its statements run in the batches' order (a job's events after
            # the job, for the foreign key), in one transaction.
            await self._connection.run(
                [
                    (self._insert(table, tuple(rows[0]), first=1), self._arrays(table, rows))
                    for table, rows in batches
                    if rows
                ],
            )
            return
        shape = tuple(merged)
        sql = self._statements.get(shape)
        if sql is None:
            sql = self._statements[shape] = self._together(list(merged.values()))
        arrays: list[list[Any]] = []
        for table, rows in merged.values():
            arrays.extend(self._arrays(table, rows))
        await self._connection.run([(sql, arrays)])

    def _arrays(self, table: Table, rows: list[dict[str, Any]]) -> list[list[Any]]:
        """The rows' values, converted, as one list per column."""
        _, values = self._converter.convert(table, rows)
        return [list(column) for column in zip(*values, strict=True)]

    def _together(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> str:
        """One statement inserting every batch: all but the last in CTEs."""
        inserts: list[str] = []
        number = 1
        for table, rows in batches:
            inserts.append(self._insert(table, tuple(rows[0]), first=number))
            number += len(rows[0])
        if len(inserts) == 1:
            return inserts[0]
        ctes = ", ".join(f"w{index} AS ({sql})" for index, sql in enumerate(inserts[:-1]))
        return f"WITH {ctes} {inserts[-1]}"

    def _insert(self, table: Table, keys: tuple[str, ...], *, first: int) -> str:
        dialect = self._engine.dialect
        quote = dialect.identifier_preparer.quote
        arrays = []
        for offset, key in enumerate(keys):
            column_type = table.c[key].type
            if isinstance(column_type, ARRAY):
                # unnest would flatten an array column's values into one row per element.
                raise TypeError(f"{table.name}.{key} is an array: not writable by unnest")
            arrays.append(f"{_numbered(first + offset)}::{column_type.compile(dialect=dialect)}[]")
        columns = ", ".join(quote(key) for key in keys)
        return (
            f"INSERT INTO {quote(table.name)} ({columns}) SELECT * FROM unnest({', '.join(arrays)})"
        )

    async def close(self) -> None:
        await self._connection.close()
