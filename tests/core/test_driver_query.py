"""Statements the consumer runs as driver SQL on its one SQLite connection (`DriverQuery`,
`run_rows`): the rows, effects and errors SQLAlchemy gives, in the caller's transaction,
without passing through SQLAlchemy's execution (on a pooled engine SQLAlchemy runs them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    event,
    exc,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.bulk import DriverQuery, insert_rows

pytestmark = pytest.mark.asyncio

_metadata = MetaData()
_items = Table(
    "item",
    _metadata,
    Column("id", String(8), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("size", Integer, nullable=False),
)
# An expanding list, a constant of the statement's own and a parameter used twice.
_SMALL_OF_KIND = DriverQuery(
    select(_items.c.id, _items.c.kind, _items.c.size)
    .where(
        _items.c.id.in_(bindparam("ids", expanding=True)),
        _items.c.kind != "gone",
        _items.c.size < bindparam("most"),
        _items.c.size != bindparam("most") - 1,
    )
    .order_by(_items.c.id)
)
_DELETE = DriverQuery(delete(_items).where(_items.c.id.in_(bindparam("ids", expanding=True))))
_COUNT = 250  # more ids than the consumer's batches have


@pytest_asyncio.fixture
async def engine(sqlite_engine: AsyncEngine) -> AsyncEngine:
    async with sqlite_engine.begin() as connection:
        await connection.run_sync(_metadata.create_all)
        await connection.execute(
            insert(_items),
            [
                {"id": f"i{n:03d}", "kind": "gone" if n % 7 == 0 else "kept", "size": n}
                for n in range(_COUNT)
            ],
        )
    return sqlite_engine


def _inline(engine: AsyncEngine) -> bool:
    return engine.pool.size() == 1


@contextmanager
def sqlalchemy_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _expected(session: AsyncSession, ids: list[str], most: int) -> list[tuple[Any, ...]]:
    result = await session.execute(_SMALL_OF_KIND.statement, {"ids": ids, "most": most})
    return [tuple(row) for row in result]


@pytest.mark.parametrize("length", [1, 3, 100, _COUNT])
async def test_rows_are_sqlalchemys(engine: AsyncEngine, length: int) -> None:
    ids = [f"i{n:03d}" for n in range(1, _COUNT, max(1, _COUNT // length))][:length]
    async with AsyncSession(engine) as session:
        expected = await _expected(session, ids, most=200)
        with sqlalchemy_statements(engine) as seen:
            rows = await _SMALL_OF_KIND.rows(session, ids=ids, most=200)
        assert [tuple(row) for row in rows] == expected
        assert expected
        assert all(kind == "kept" and size < 200 for _, kind, size in expected)
        assert 199 not in [size for _, _, size in expected]
        # The consumer's connection runs it as driver SQL; any other, SQLAlchemy does.
        assert len(seen) == (0 if _inline(engine) else 1)


async def test_the_same_length_again_and_then_another(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        for ids in (["i001", "i002"], ["i003", "i004"], ["i005"], ["i008", "i009", "i010"]):
            rows = await _SMALL_OF_KIND.rows(session, ids=ids, most=1000)
            assert [row[0] for row in rows] == ids


async def test_an_empty_list_selects_nothing(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        assert list(await _SMALL_OF_KIND.rows(session, ids=[], most=1000)) == []


async def test_a_delete_belongs_to_the_callers_transaction(engine: AsyncEngine) -> None:
    ids = ["i001", "i002", "i999"]
    async with AsyncSession(engine) as session:
        assert list(await _DELETE.rows(session, ids=ids)) == []
        assert list(await _SMALL_OF_KIND.rows(session, ids=ids, most=1000)) == []
        await session.rollback()
    async with AsyncSession(engine) as session:
        rows = await _SMALL_OF_KIND.rows(session, ids=ids, most=1000)
        assert [row[0] for row in rows] == ["i001", "i002"]
        await _DELETE.rows(session, ids=ids)
        await session.commit()
    async with AsyncSession(engine) as session:
        assert list(await _SMALL_OF_KIND.rows(session, ids=ids, most=1000)) == []


async def test_a_driver_error_is_sqlalchemys(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        with pytest.raises(exc.IntegrityError) as raised:
            await insert_rows(
                session,
                _items,
                [{"id": "new", "kind": "a", "size": 1}, {"id": "i001", "kind": "b", "size": 2}],
            )
        assert "UNIQUE" in str(raised.value.orig)
        await session.rollback()
    async with AsyncSession(engine) as session:
        rows = await _SMALL_OF_KIND.rows(session, ids=["new", "i001"], most=1000)
        assert [tuple(row) for row in rows] == [("i001", "kept", 1)]
