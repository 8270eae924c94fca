"""`BulkUpdate`: each row gets its own values, NULLs included, on SQLite (executemany) and
PostgreSQL (one UPDATE joined on unnest arrays); a repeated key applies its updates in
turn, as `executemany` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.bootstrap import Runtime
from app.core.bulk import BulkUpdate, insert_rows, run_rows
from app.core.db import UTCDateTime, table_of
from app.queues.models import QueueMessage

pytestmark = pytest.mark.asyncio

_messages = table_of(QueueMessage)

# Lease a message: a new attempt count, lease and visibility; NULL keeps the lease it has.
_LEASE = BulkUpdate(
    update(_messages)
    .where(_messages.c.id == bindparam("b_id"))
    .values(
        attempts=_messages.c.attempts + bindparam("b_more"),
        lease_id=func.coalesce(bindparam("b_lease", type_=String()), _messages.c.lease_id),
        visible_at_ms=bindparam("b_visible"),
    ),
    key=["b_id"],
)


def _message(message_id: str, lease_id: str | None = None) -> dict[str, Any]:
    return {
        "id": message_id,
        "queue": "bulk-test",
        "body": "{}",
        "content_type": "json",
        "size_bytes": 2,
        "enqueued_ms": 1,
        "visible_at_ms": 1,
        "delay_seconds": 0,
        "attempts": 0,
        "lease_id": lease_id,
    }


@contextmanager
def _statements(engine: AsyncEngine) -> Iterator[list[tuple[str, bool, Any]]]:
    """The statements sent to the database: (sql, sent as executemany, parameters)."""
    seen: list[tuple[str, bool, Any]] = []

    def record(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        seen.append((sql, many, params))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


@contextmanager
def _updates(engine: AsyncEngine) -> Iterator[list[tuple[str, bool]]]:
    """The UPDATE statements sent to the database: (sql, sent as executemany)."""
    seen: list[tuple[str, bool]] = []

    def record(_c: Any, _cur: Any, sql: str, _p: Any, _ctx: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("UPDATE"):
            seen.append((sql, many))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _rows(runtime: Runtime) -> dict[str, tuple[int, str | None, int]]:
    async with runtime.sessionmaker() as session:
        found = await session.execute(
            select(
                _messages.c.id,
                _messages.c.attempts,
                _messages.c.lease_id,
                _messages.c.visible_at_ms,
            ).where(_messages.c.queue == "bulk-test")
        )
        await session.commit()
        return {row.id: (row.attempts, row.lease_id, row.visible_at_ms) for row in found}


async def test_each_row_gets_its_own_values(runtime: Runtime, db_engine: AsyncEngine) -> None:
    async with runtime.sessionmaker() as session:
        await session.execute(
            insert(_messages), [_message("m1"), _message("m2", "kept"), _message("m3")]
        )
        await session.commit()
    rows = [
        {"b_id": "m1", "b_more": 1, "b_lease": "lease-1", "b_visible": 100},
        {"b_id": "m2", "b_more": 2, "b_lease": None, "b_visible": 200},
    ]
    with _updates(db_engine) as sent:
        async with runtime.sessionmaker() as session:
            await _LEASE.execute(session, rows)
            await _LEASE.execute(session, [])  # nothing to do: no statement
            await session.commit()
    assert await _rows(runtime) == {
        "m1": (1, "lease-1", 100),
        "m2": (2, "kept", 200),
        "m3": (0, None, 1),
    }
    if db_engine.dialect.name == "postgresql":
        # One statement for all the rows, not one execution per row.
        assert len(sent) == 1
        assert not sent[0][1]
        assert "unnest" in sent[0][0]
    else:
        assert [many for _, many in sent] == [True]


async def test_rows_are_found_by_their_key_not_by_reading_the_table(
    runtime: Runtime, db_engine: AsyncEngine
) -> None:
    """PostgreSQL's statistics lag a growing table (here analyzed at 50 rows, now 3,000):
    updating 10 rows must look them up by key, not read every row of the table."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner (JOBGATE_DATABASE_URL=postgresql://...)")
    async with runtime.sessionmaker() as session:
        await session.execute(insert(_messages), [_message(f"m{n}") for n in range(50)])
        await session.commit()
    async with db_engine.connect() as connection:
        await connection.execute(text("ANALYZE queue_message"))
    async with runtime.sessionmaker() as session:
        more = [_message(f"m{n}") for n in range(50, 3_000)]
        await session.execute(insert(_messages), more)
        await session.commit()
    read = text(
        "SELECT coalesce(seq_tup_read, 0) FROM pg_stat_xact_user_tables "
        "WHERE relname = 'queue_message' AND schemaname = current_schema()"
    )
    rows = [{"b_id": f"m{n}", "b_more": 1, "b_lease": "x", "b_visible": 5} for n in range(10)]
    async with runtime.sessionmaker() as session:
        before = (await session.execute(read)).scalar_one()
        await _LEASE.execute(session, rows)
        after = (await session.execute(read)).scalar_one()
        await session.commit()
    assert after - before == 0
    leased = await _rows(runtime)
    assert [leased[f"m{n}"] for n in range(10)] == [(1, "x", 5)] * 10
    assert leased["m10"] == (0, None, 1)


async def test_a_repeated_key_applies_each_update_in_turn(runtime: Runtime) -> None:
    async with runtime.sessionmaker() as session:
        await session.execute(insert(_messages), [_message("m1"), _message("m2")])
        await session.commit()
        rows = [
            {"b_id": "m1", "b_more": 1, "b_lease": "first", "b_visible": 10},
            {"b_id": "m2", "b_more": 1, "b_lease": None, "b_visible": 20},
            {"b_id": "m1", "b_more": 1, "b_lease": None, "b_visible": 30},
        ]
        await _LEASE.execute(session, rows)
        await session.commit()
    assert await _rows(runtime) == {"m1": (2, "first", 30), "m2": (1, None, 20)}


async def test_a_row_parameter_without_a_type_is_refused() -> None:
    # Inside a function call nothing gives it a type: PostgreSQL could not type its array.
    untyped = (
        update(_messages)
        .where(_messages.c.id == bindparam("b_id"))
        .values(lease_id=func.coalesce(bindparam("b_untyped"), _messages.c.lease_id))
    )
    with pytest.raises(TypeError, match="b_untyped"):
        BulkUpdate(untyped, key=["b_id"])


# -- rows as driver SQL (SQLite) ------------------------------------------------------------

_things = Table(
    "thing",
    MetaData(),
    Column("id", String, primary_key=True),
    Column("at", UTCDateTime, nullable=True),
    Column("flag", Boolean, nullable=False, default=False),
    Column("data", JSON, nullable=True),
    Column("note", Text, nullable=True),
)
_MARK = (
    update(_things)
    .where(_things.c.id == bindparam("b_id"))
    .values(note="marked", at=bindparam("b_at", type_=UTCDateTime()), data=None)
)


@pytest_asyncio.fixture
async def sqlite_engine(sqlite_engine: AsyncEngine) -> AsyncEngine:
    """The gateway's pooled engine and the consumer's one connection, where `run_rows`
    hands its rows straight to sqlite3."""
    async with sqlite_engine.begin() as connection:
        await connection.run_sync(_things.metadata.create_all)
    return sqlite_engine


async def _stored(engine: AsyncEngine) -> dict[str, tuple[Any, ...]]:
    """Each row as SQLite keeps it (the text of a timestamp or a JSON value included)."""
    async with engine.connect() as connection:
        result = await connection.exec_driver_sql("SELECT id, at, flag, data, note FROM thing")
        return {row[0]: tuple(row[1:]) for row in result}


async def test_driver_rows_store_what_sqlalchemy_stores(sqlite_engine: AsyncEngine) -> None:
    at = datetime(2026, 12, 2, 10, 30, 0, 123456, tzinfo=UTC)
    rows = [
        {"at": at, "flag": True, "data": {"k": [1, "é"]}, "note": None},
        {"at": None, "flag": False, "data": None, "note": "n"},
        {"at": at + timedelta(hours=1), "flag": True, "data": [], "note": ""},
    ]
    sessions = async_sessionmaker(sqlite_engine)
    with _statements(sqlite_engine) as sent:
        async with sessions() as session:
            await insert_rows(session, _things, [{"id": f"a{i}", **r} for i, r in enumerate(rows)])
            await session.execute(
                insert(_things), [{"id": f"b{i}", **r} for i, r in enumerate(rows)]
            )
            await session.commit()
    stored = await _stored(sqlite_engine)
    for i in range(len(rows)):
        assert stored[f"a{i}"] == stored[f"b{i}"]
    assert [stored[f"a{i}"][1] for i in range(3)] == [1, 0, 1]
    # The driver-SQL rows go as positional tuples in one executemany.
    driver_insert = next(s for s in sent if s[0].startswith("INSERT"))
    assert driver_insert[1]
    assert all(isinstance(values, tuple) for values in driver_insert[2])


async def test_driver_rows_keep_constants_and_column_defaults(sqlite_engine: AsyncEngine) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    sessions = async_sessionmaker(sqlite_engine)
    async with sessions() as session:
        # No `flag`: its Python-side default is SQLAlchemy's to fill in, row by row.
        await insert_rows(
            session, _things, [{"id": "a1", "data": {"a": 1}}, {"id": "a2", "data": None}]
        )
        await session.execute(
            insert(_things), [{"id": "b1", "data": {"a": 1}}, {"id": "b2", "data": None}]
        )
        await session.commit()
    async with sessions() as session:
        # A constant (`note`), a NULL constant (`data`) and a processed per-row value.
        await run_rows(session, _MARK, [{"b_id": "a1", "b_at": at}, {"b_id": "a2", "b_at": None}])
        await session.execute(_MARK, [{"b_id": "b1", "b_at": at}, {"b_id": "b2", "b_at": None}])
        await session.commit()
    stored = await _stored(sqlite_engine)
    assert stored["a1"] == stored["b1"]
    assert stored["a2"] == stored["b2"]
    assert stored["a1"][1:] == (0, "null", "marked")  # JSON null, as SQLAlchemy writes it
    assert stored["a1"][0] is not None
    assert stored["a2"][0] is None
