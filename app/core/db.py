"""Database engine and sessions (async SQLAlchemy over aiosqlite or asyncpg)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, Table, TypeDecorator, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel import SQLModel

from app.core import jsontext
from app.core.config import DatabaseSettings
from app.core.sqlite_driver import one_trip_dbapi
from app.core.sqlite_lock import database_file

# Stable constraint names, so migrations can drop and alter them on every database.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata

SessionMaker = async_sessionmaker[AsyncSession]
logger = logging.getLogger(__name__)


def async_url(raw: str) -> URL:
    """Map a plain URL (`sqlite:///x.db`, `postgresql://...`) onto its async driver."""
    url = make_url(raw)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme {url.drivername!r}")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(
    settings: DatabaseSettings,
    *,
    search_path: str | None = None,
    sqlite_single_connection: bool = False,
) -> AsyncEngine:
    """The engine for `settings`. `sqlite_single_connection`: the process's transactions
    take turns on one connection (see `_configure_sqlite`) rather than on SQLite's lock,
    and its statements run on the event loop's thread (see `app.core.sqlite_driver`)."""
    url = async_url(settings.url)
    # Error messages must not quote bound values: they are tenants' payloads.
    kwargs: dict[str, Any] = {"pool_pre_ping": False, "hide_parameters": True}
    # JSON columns (a job's payload...) written by the faster encoder: same values.
    kwargs["json_serializer"] = jsontext.dumps
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
        # One thread hand-off per statement instead of four, or none on the process's one
        # connection (see sqlite_driver).
        kwargs["module"] = one_trip_dbapi(inline=sqlite_single_connection)
        if sqlite_single_connection:
            kwargs["pool_size"], kwargs["max_overflow"] = 1, 0
    else:
        kwargs["pool_size"] = settings.pool_size
        kwargs["max_overflow"] = settings.pool_size
        # Plan each execution with its parameters. asyncpg prepares every statement, and
        # PostgreSQL switches a prepared statement to a generic plan after five runs, costed
        # on the table sizes of that moment: a consumer that started on an empty queue kept
        # a sequential scan of `job` for its batch lookup while the table grew to 100k rows
        # (200 ms per batch). Where autovacuum lags or is off, nothing re-plans it.
        server_settings = {"plan_cache_mode": "force_custom_plan"}
        search_path = search_path or settings.schema_name
        if search_path:
            server_settings["search_path"] = search_path
        kwargs["connect_args"] = {"server_settings": server_settings}
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() != "sqlite":
        # A bulk INSERT (`insert(table), rows`) as one multi-row statement per page instead
        # of one statement per row: less server CPU, and the statement-level counting
        # triggers (app.core.counters) run once per batch instead of once per row.
        engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine, synchronous=settings.sqlite_synchronous)
        _keep_sqlite_file_private(engine, url)
    return engine


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL; None for in-memory and `file:` URI databases."""
    return database_file(url.database)


def _keep_sqlite_file_private(engine: AsyncEngine, url: URL) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite would make it 0644).

    It holds key hashes, encrypted secrets and every payload. SQLite creates the -wal and
    -shm files with the database file's mode, so those are 0600 too. A file that exists
    already is left as it is, with a warning when others may read it.
    """
    path = sqlite_file(url)
    if path is None:
        return
    checked = False

    @event.listens_for(engine.sync_engine, "do_connect")
    def _before_connect(*_args: Any) -> None:
        nonlocal checked
        if checked:
            return
        checked = True
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                logger.warning("%s is readable by others (mode %o): chmod 600 it", path, mode)
        except OSError:
            pass  # a missing directory or no permission: SQLite reports it on connect


def _configure_sqlite(engine: AsyncEngine, *, synchronous: str) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE for every transaction.

    BEGIN IMMEDIATE takes the write lock up front: concurrent writers queue on the busy
    timeout instead of failing with SQLITE_BUSY when a read lock would have to be upgraded,
    and it is what makes a pull an exclusive read-modify-write on SQLite.

    So one transaction runs at a time anyway, and a waiter on the busy timeout sleeps in
    steps of up to 100 ms, long after the lock is free. A process of many short
    transactions (the consumer) is faster on one pooled connection: its transactions wait
    for their turn on the event loop and start the moment the previous one ends.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A reader's snapshot needs no lock in WAL mode; holding the write lock from its
        # BEGIN to its COMMIT (across awaits) would stall every writer meanwhile.
        read_only = conn.get_execution_options().get(_READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


_READ_ONLY_OPTION = "jobgate_read_only"


def create_reader(engine: AsyncEngine) -> SessionMaker:
    """Sessions for background reads (depth samples, admission refreshes, the scheduler's
    poll), never for writes. On SQLite their transactions begin DEFERRED, so they never
    take the write lock that every other transaction takes up front. On PostgreSQL they are
    ordinary sessions."""
    return create_sessionmaker(engine.execution_options(**{_READ_ONLY_OPTION: True}))


async def session_scope(maker: SessionMaker) -> AsyncIterator[AsyncSession]:
    async with maker() as session:
        yield session


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        process = super().bind_processor(dialect)
        if process is None or dialect.name != "sqlite":
            return process
        # SQLite stores the text SQLAlchemy formats, a few microseconds a value; a batch
        # writes the same instant (one object) to every row: format it once.
        last: tuple[Any, Any] = (object(), None)

        def format_once(value: Any) -> Any:
            nonlocal last
            seen = last
            if value is seen[0]:
                return seen[1]
            formatted = process(value)
            last = (value, formatted)
            return formatted

        return format_once


JSONType = JSON().with_variant(JSONB(), "postgresql")


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a SQLModel table class (for bulk statements)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table
