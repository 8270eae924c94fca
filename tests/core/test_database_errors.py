"""Database failures: only an unreachable, locked or unmigrated store is a 503."""

from __future__ import annotations

import secrets
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import build_runtime
from app.core.clock import ManualClock
from app.core.config import DatabaseSettings
from app.core.db import create_engine
from app.core.errors import UPGRADE_HINT, database_problem
from app.main import create_app
from app.settings import Settings
from tests.support.asgi import asgi_client
from tests.support.databases import postgres_url_from_env


class PgError(Exception):
    """What asyncpg's errors carry through SQLAlchemy: a SQLSTATE."""

    def __init__(self, sqlstate: str, message: str = "error") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def sqlite_error(sql: str, setup: str = "") -> sqlite3.Error:
    connection = sqlite3.connect(":memory:")
    try:
        if setup:
            connection.executescript(setup)
        connection.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        connection.close()
    raise AssertionError("the statement did not fail")


def wrap(cls: type[DBAPIError], orig: BaseException) -> DBAPIError:
    return cls("SELECT 1", None, orig)  # type: ignore[arg-type]


def busy() -> sqlite3.Error:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorname = "SQLITE_BUSY"
    return error


UNIQUE = "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);"


@pytest.mark.parametrize(
    ("error", "status", "upgrade"),
    [
        # Unreachable, timed out, locked: 503.
        (ConnectionRefusedError("refused"), 503, False),
        (TimeoutError(), 503, False),
        (PoolTimeout("pool exhausted"), 503, False),
        (wrap(InterfaceError, PgError("08003", "connection is closed")), 503, False),
        (wrap(OperationalError, busy()), 503, False),
        (wrap(DBAPIError, PgError("08006")), 503, False),
        (wrap(DBAPIError, PgError("57P01")), 503, False),
        (wrap(DBAPIError, PgError("53300")), 503, False),
        (wrap(DBAPIError, PgError("40P01")), 503, False),
        # Not migrated: 503 telling the operator what to run.
        (FileNotFoundError("jobgate.db"), 503, True),
        (wrap(OperationalError, sqlite_error("SELECT * FROM job")), 503, True),
        (wrap(ProgrammingError, PgError("42P01", 'relation "job" does not exist')), 503, True),
        (wrap(ProgrammingError, PgError("42703")), 503, True),
        # A value the store refuses: the client's 4xx, never a 503.
        (wrap(DBAPIError, PgError("22P05", "unsupported Unicode escape sequence")), 422, False),
        (wrap(DBAPIError, PgError("22021")), 422, False),
        (wrap(DataError, PgError("22001")), 422, False),
        (wrap(IntegrityError, PgError("23505")), 409, False),
        (wrap(IntegrityError, sqlite_error("INSERT INTO t VALUES (1)", UNIQUE)), 409, False),
        # Bugs: a plain 500.
        (wrap(ProgrammingError, PgError("42601", "syntax error")), None, False),
        (wrap(OperationalError, sqlite_error("SELEKT 1")), None, False),
        (ValueError("not a database error"), None, False),
    ],
)
def test_database_errors_map_by_class(
    error: BaseException, status: int | None, upgrade: bool
) -> None:
    problem = database_problem(error)
    if status is None:
        assert problem is None
        return
    assert problem is not None
    assert problem.status == status
    assert (problem.detail == UPGRADE_HINT) is upgrade
    if status == 503:
        assert problem.headers["Retry-After"]


def test_an_invalidated_connection_is_a_503() -> None:
    error = wrap(DBAPIError, PgError("XX000"))
    error.connection_invalidated = True
    problem = database_problem(error)
    assert problem is not None
    assert problem.status == 503


@pytest_asyncio.fixture
async def empty_engine() -> AsyncIterator[AsyncEngine]:
    """A database nobody ran `jobgate db upgrade` on (the suite's kind of database)."""
    pg_url = postgres_url_from_env()
    if pg_url is None:
        with tempfile.TemporaryDirectory(prefix="jobgate-empty-") as tmp:
            engine = create_engine(DatabaseSettings(url=f"sqlite:///{Path(tmp) / 'empty.db'}"))
            yield engine
            await engine.dispose()
        return
    schema = f"empty_{secrets.token_hex(4)}"
    admin = create_engine(DatabaseSettings(url=pg_url))
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(DatabaseSettings(url=pg_url), search_path=schema)
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.mark.asyncio
async def test_an_unmigrated_database_answers_503_naming_the_command(
    settings: Settings, clock: ManualClock, empty_engine: AsyncEngine
) -> None:
    runtime = build_runtime(settings, clock=clock, engine=empty_engine)
    async with asgi_client(create_app(runtime=runtime)) as client:
        key = "jg_0123abcd_" + "x" * 43
        response = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    await runtime.queue_engine.close()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "jobgate db upgrade" in response.json()["detail"]
