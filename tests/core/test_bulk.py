"""`BulkUpdate`: each row gets its own values, NULLs included, on SQLite (executemany) and
PostgreSQL (one UPDATE joined on unnest arrays); a repeated key applies its updates in
turn, as `executemany` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import String, bindparam, event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime
from app.core.bulk import BulkUpdate
from app.core.db import table_of
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
