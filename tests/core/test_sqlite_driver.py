"""The SQLite engine's driver: one hand-off to aiosqlite's thread per statement, with the
results, row counts and errors SQLAlchemy's stock aiosqlite adapter gives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import pytest_asyncio
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import DatabaseSettings
from app.core.db import create_engine

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'driver.db'}"))
    async with engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
        )
    yield engine
    await engine.dispose()


@contextmanager
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The functions handed to aiosqlite's thread meanwhile."""
    calls: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(aiosqlite.Connection, "_execute", counted)
        yield calls


async def test_a_statement_is_one_hand_off(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))  # the connection is open and warm
        with thread_calls(monkeypatch) as calls:
            rows = (await connection.execute(text("SELECT 1, 'a'"))).all()
        assert rows == [(1, "a")]
        assert len(calls) == 1, calls


async def test_rows_counts_and_returning(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(
            text("INSERT INTO item (name) VALUES ('a'), ('b'), ('c') RETURNING id, name")
        )
        assert [row.name for row in inserted] == ["a", "b", "c"]
        assert inserted.rowcount == 3
        single = await connection.execute(text("INSERT INTO item (name) VALUES ('d')"))
        assert single.lastrowid == 4
        many = await connection.execute(
            text("UPDATE item SET name = name || '!' WHERE id = :id"), [{"id": 1}, {"id": 2}]
        )
        assert many.rowcount == 2
        updated = await connection.execute(text("UPDATE item SET name = 'z' WHERE id > 100"))
        assert updated.rowcount == 0
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT id, name FROM item ORDER BY id"))
        assert list(result.keys()) == ["id", "name"]
        assert result.fetchmany(2) == [(1, "a!"), (2, "b!")]
        assert result.fetchone() == (3, "c")
        assert result.all() == [(4, "d")]
        streamed = await connection.stream(text("SELECT name FROM item ORDER BY id"))
        assert [row.name async for row in streamed] == ["a!", "b!", "c", "d"]


async def test_errors_are_sqlalchemy_errors_and_the_connection_lives_on(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('x')"))
        with pytest.raises(exc.IntegrityError):
            await connection.execute(text("INSERT INTO item (name) VALUES ('x')"))
        with pytest.raises(exc.OperationalError):
            await connection.execute(text("SELECT nope FROM item"))
        await connection.rollback()
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 0
