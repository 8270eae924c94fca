"""The group committer's writer on PostgreSQL: prepared multi-row INSERTs, no ORM session.

A group's rows are written with multi-row INSERTs (one statement for up to 16 rows, chunks
of power-of-two sizes beyond: asyncpg prepares 20 statements per table at most, once per
connection, within its cache of 100), in one transaction, on a connection of the engine's
pool, so its settings (the schema search path...) are the engine's. Not `executemany`: that
runs the INSERT once per row, and each run fires the tables' statement-level counting
triggers (app.core.counters), a function call and a transition table per row; a multi-row
INSERT fires them once per statement. The statements are plain driver SQL: nothing is
compiled per group, and no session or ORM object is built. Values are converted by the
columns' own bind processors (`BindConverter`, shared with the SQLite writer), and the
driver's errors are translated by the engine itself, so failures map to answers (503,
409...) exactly like the ORM path's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.jobs.sqlite_write_process import MultiRowInserts
from app.jobs.sqlite_writer import BindConverter

# PostgreSQL's protocol counts a statement's parameters in 16 bits.
MAX_PARAMETERS = 32767
# Groups up to this many rows per table take one statement of their exact size.
EXACT_ROWS = 16


def _numbered(n: int) -> str:
    return f"${n}"


class PostgresGroupWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._converter = BindConverter(engine.dialect, placeholder=_numbered)
        self._inserts = MultiRowInserts(
            placeholder=_numbered, max_variables=MAX_PARAMETERS, exact_up_to=EXACT_ROWS
        )

    async def write(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> None:
        """Insert every batch in one transaction; returns once it is committed."""
        prepared = [self._converter.convert(table, rows) for table, rows in batches if rows]
        if not prepared:
            return
        async with self._engine.begin() as connection:
            for single_row, rows in prepared:
                for statement, params in self._inserts.chunks(single_row, rows):
                    await connection.exec_driver_sql(statement, params)

    async def close(self) -> None:
        """Nothing of its own to close: the connections are the engine's."""
