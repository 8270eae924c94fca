"""asyncpg itself, on a connection of SQLAlchemy's pool, for the gateway's hot writes.

SQLAlchemy's asyncpg adapter costs a greenlet switch, an execution context and a cursor
emulation per statement, and its transactions add a BEGIN and a COMMIT round trip each. The
group committer's writes are plain INSERTs built once per shape: `DriverConnection` sends
them to asyncpg directly, on one connection it keeps from the engine's pool (so its
settings, such as the schema search path, are the engine's), plus settings of its own. One
statement runs alone, in the implicit transaction PostgreSQL gives it: one round trip,
committed when it returns.

Errors are raised as SQLAlchemy raises them (asyncpg's error translated by the adapter, then
wrapped in `DBAPIError`), so `database_problem` maps them exactly like any other statement's.
A connection that broke is invalidated, and the next call checks out another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class DriverConnection:
    """One pool connection, kept for one writer's statements (one call at a time), with
    `settings` (`SET name = value`) applied once; never handed back to the pool with them:
    `close` closes it."""

    def __init__(self, engine: AsyncEngine, settings: Mapping[str, str] | None = None) -> None:
        self._engine = engine
        self._settings = dict(settings or {})
        self._held: AsyncConnection | None = None
        self._driver: Any = None  # the held connection's asyncpg connection

    async def run(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run `(sql, positional args)` pairs in order, all committed or none: one
        statement in its implicit transaction, several in one explicit transaction."""
        if not statements:
            return
        connection, driver = await self._connection()
        sql = statements[0][0]
        try:
            if len(statements) == 1:
                await driver.execute(sql, *statements[0][1])
                return
            async with driver.transaction():
                for sql, args in statements:
                    await driver.execute(sql, *args)
        except Exception as error:
            raise await self._translated(connection, sql, error) from error
        except BaseException:
            # Cancelled mid-statement: what the connection is doing is unknown.
            await self._drop(invalidate=True)
            raise

    async def close(self) -> None:
        await self._drop(invalidate=True)

    async def _connection(self) -> tuple[AsyncConnection, Any]:
        if self._held is not None:
            return self._held, self._driver
        connection = await self._engine.connect().start()
        try:
            driver: Any = (await connection.get_raw_connection()).driver_connection
            for name, value in self._settings.items():
                await driver.execute("SELECT set_config($1, $2, false)", name, value)
        except Exception as error:
            failure = await _translated(connection, "SET", error)
            await connection.invalidate()
            await connection.close()
            raise failure from error
        self._held, self._driver = connection, driver
        return connection, driver

    async def _translated(
        self, connection: AsyncConnection, sql: str, error: Exception
    ) -> Exception:
        failure = await _translated(connection, sql, error)
        if isinstance(failure, DBAPIError) and failure.connection_invalidated:
            await self._drop(invalidate=False)
        return failure

    async def _drop(self, *, invalidate: bool) -> None:
        connection, self._held, self._driver = self._held, None, None
        if connection is None:
            return
        if invalidate:
            # Its settings are this writer's: it is closed, not pooled for others.
            await connection.invalidate()
        await connection.close()


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
