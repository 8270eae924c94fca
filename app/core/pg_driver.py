"""asyncpg itself, on a connection of SQLAlchemy's pool, for the gateway's hot writes.

SQLAlchemy's asyncpg adapter costs a greenlet switch, an execution context and a cursor
emulation per statement, and its transactions add a BEGIN and a COMMIT round trip each. The
group committer's writes are plain INSERTs built once per shape: `run_statements` sends them
to asyncpg directly, on a connection checked out from the engine's pool (so its settings,
such as the schema search path, are the engine's). One statement runs alone, in the
implicit transaction PostgreSQL gives it: one round trip, committed when it returns.

Errors are raised as SQLAlchemy raises them (asyncpg's error translated by the adapter, then
wrapped in `DBAPIError`), so `database_problem` maps them exactly like any other statement's;
a connection that broke is invalidated, not handed back to the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def run_statements(
    engine: AsyncEngine, statements: Sequence[tuple[str, Sequence[Any]]]
) -> None:
    """Run `(sql, positional args)` pairs in order, all committed or none: one statement in
    its implicit transaction, several in one explicit transaction."""
    if not statements:
        return
    async with engine.connect() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        sql = statements[0][0]
        try:
            if len(statements) == 1:
                await driver.execute(sql, *statements[0][1])
                return
            async with driver.transaction():
                for sql, args in statements:
                    await driver.execute(sql, *args)
        except Exception as error:
            raise await _translated(connection, sql, error) from error
        except BaseException:
            # Cancelled mid-statement: what the connection is doing is unknown.
            await connection.invalidate()
            raise


async def _translated(connection: AsyncConnection, sql: str, error: Exception) -> Exception:
    """`error` as SQLAlchemy would have raised it; the connection is invalidated when the
    error says it is gone."""
    dialect = connection.dialect
    dbapi = dialect.loaded_dbapi
    adapted = (await connection.get_raw_connection()).dbapi_connection
    try:
        # The adapter's own translation: asyncpg's exception classes to its DB-API ones
        # (they keep `sqlstate`); anything else it raises again unchanged.
        adapted._handle_exception(error)  # type: ignore[union-attr]
    except dbapi.Error as translated:
        invalidated = dialect.is_disconnect(translated, adapted, None)
        if invalidated:
            await connection.invalidate(translated)
        return DBAPIError.instance(
            sql,
            None,
            translated,
            dbapi.Error,
            connection_invalidated=invalidated,
            dialect=dialect,
        )
    except Exception as other:
        return other
    return error
