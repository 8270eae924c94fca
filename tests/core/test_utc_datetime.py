"""`UTCDateTime`: aware UTC values only, stored and read back unchanged on both databases;
on SQLite the text of an instant written to many rows is formatted once, and still right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import UTCDateTime


def test_sqlite_text_is_right_for_every_value_even_when_repeated() -> None:
    dialect = sqlite.dialect()
    column = UTCDateTime()
    process = column.dialect_impl(dialect).bind_processor(dialect)
    plain = UTCDateTime.impl.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert plain is not None
    now = datetime(2026, 12, 2, 10, 30, 0, 123456, tzinfo=UTC)
    later = now + timedelta(seconds=1)
    paris = now.astimezone(timezone(timedelta(hours=1)))  # the same instant, another offset
    for value in [now, now, later, now, paris, paris, None, now]:
        assert process(value) == plain(value)
    with pytest.raises(ValueError, match="naive"):
        process(datetime(2026, 12, 2, 10, 30))


@pytest.mark.asyncio
async def test_values_round_trip(db_engine: AsyncEngine) -> None:
    table = Table(
        "utc_round_trip",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("at", UTCDateTime()),
    )
    now = datetime(2026, 12, 2, 10, 30, 0, 123456, tzinfo=UTC)
    values = [now, now, now + timedelta(microseconds=1), now]
    async with db_engine.begin() as conn:
        await conn.run_sync(table.create)
        try:
            await conn.execute(insert(table), [{"id": i, "at": v} for i, v in enumerate(values)])
            rows = (await conn.execute(select(table.c.at).order_by(table.c.id))).scalars().all()
        finally:
            await conn.run_sync(table.drop)
    assert rows == values
    assert all(row.tzinfo is not None for row in rows)
