"""The group committer's writer on PostgreSQL: prepared `executemany`s, no ORM session.

A group's rows are written with one `executemany` per table (asyncpg prepares each statement
once per connection and sends the rows in one round trip), in one transaction, on a
connection of the engine's pool, so its settings (the schema search path...) are the engine's.
The statements are plain driver SQL: nothing is compiled per group, and no session or ORM
object is built. Values are converted by the columns' own bind processors (`BindConverter`,
shared with the SQLite writer), and the driver's errors are translated by the engine itself,
so failures map to answers (503, 409...) exactly like the ORM path's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.jobs.sqlite_writer import BindConverter


class PostgresGroupWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._converter = BindConverter(engine.dialect, placeholder=lambda i: f"${i}")

    async def write(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> None:
        """Insert every batch in one transaction; returns once it is committed."""
        prepared = [self._converter.convert(table, rows) for table, rows in batches if rows]
        if not prepared:
            return
        async with self._engine.begin() as connection:
            for statement, values in prepared:
                await connection.exec_driver_sql(statement, values)

    async def close(self) -> None:
        """Nothing of its own to close: the connections are the engine's."""
