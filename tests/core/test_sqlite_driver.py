"""The SQLite engine's driver: one hand-off to aiosqlite's thread per statement (none on a
process's one connection, the consumer's), with the results, row counts and errors
SQLAlchemy's stock aiosqlite adapter gives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
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
from tests.support.writer_turn import held_by_another_process, other_process_sees

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def engine(sqlite_engine: AsyncEngine) -> AsyncEngine:
    async with sqlite_engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
        )
    return sqlite_engine


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


def _one_connection(engine: AsyncEngine) -> bool:
    return engine.pool.size() == 1


async def test_a_statement_is_one_hand_off(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))  # the connection is open and warm
        with thread_calls(monkeypatch) as calls:
            rows = (await connection.execute(text("SELECT 1, 'a'"))).all()
        assert rows == [(1, "a")]
        # On one connection a statement runs on the event loop's thread: no hand-off.
        assert len(calls) == (0 if _one_connection(engine) else 1), calls


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


# -- the writers' turn across processes (WriterLock) ----------------------------------------


async def test_a_write_transaction_holds_the_turn_until_it_ends(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    lock_file = tmp_path / "driver.db-writers"
    async with engine.connect() as connection:
        assert other_process_sees(lock_file) == "free"
        transaction = await connection.begin()
        await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
        assert await asyncio.to_thread(other_process_sees, lock_file) == "held"
        await transaction.commit()
        assert await asyncio.to_thread(other_process_sees, lock_file) == "free"

        transaction = await connection.begin()
        await connection.execute(text("INSERT INTO item (name) VALUES ('b')"))
        await transaction.rollback()
        assert await asyncio.to_thread(other_process_sees, lock_file) == "free"

    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT name FROM item"))).scalars().all() == ["a"]


async def test_a_failed_statement_and_a_closed_connection_give_the_turn_back(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    lock_file = tmp_path / "driver.db-writers"
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
    with pytest.raises(exc.IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
    assert await asyncio.to_thread(other_process_sees, lock_file) == "free"

    connection = await engine.connect()
    await connection.begin()
    await connection.execute(text("INSERT INTO item (name) VALUES ('c')"))
    await connection.invalidate()  # e.g. a cancelled task: the transaction is lost
    assert await asyncio.to_thread(other_process_sees, lock_file) == "free"
    await connection.close()


async def test_transactions_of_one_process_share_the_turn(engine: AsyncEngine) -> None:
    """Two connections of one process: the second waits on SQLite's lock, never on the
    turn its own process holds, so it goes on once the first commits."""
    if _one_connection(engine):
        pytest.skip("one connection: its transactions take turns on the pool")
    async with engine.connect() as first, engine.connect() as second:
        await first.begin()
        await first.execute(text("INSERT INTO item (name) VALUES ('a')"))

        async def write_second() -> None:
            async with second.begin():
                await second.execute(text("INSERT INTO item (name) VALUES ('b')"))

        waiting = asyncio.create_task(write_second())
        await asyncio.sleep(0.2)
        assert not waiting.done()  # SQLite's lock: the first still writes
        await first.commit()
        await asyncio.wait_for(waiting, 30)
    async with engine.connect() as connection:
        names = (await connection.execute(text("SELECT name FROM item"))).scalars().all()
    assert sorted(names) == ["a", "b"]


async def test_a_writer_waits_for_another_processes_turn_and_starts_when_it_ends(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    lock_file = tmp_path / "driver.db-writers"

    async def write() -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO item (name) VALUES ('after')"))

    async with held_by_another_process(lock_file, 0.5) as holder:
        writing = asyncio.create_task(write())
        await asyncio.sleep(0.2)
        assert not writing.done()  # its BEGIN waits for the other process's turn
        await asyncio.wait_for(writing, 30)
        assert holder.poll() is not None  # it began only once the other let go
    async with engine.connect() as connection:
        names = (await connection.execute(text("SELECT name FROM item"))).scalars().all()
    assert names == ["after"]


async def test_on_one_connection_only_begin_and_commit_leave_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's engine: its statements run on the loop's thread (a hand-off each cost
    more than most of them), except BEGIN IMMEDIATE, which may wait for another process's
    turn, and COMMIT, which may fsync; the loop goes on serving meanwhile."""
    engine = create_engine(
        DatabaseSettings(url=f"sqlite:///{tmp_path / 'one.db'}"), sqlite_single_connection=True
    )
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE item (name TEXT)"))
        with thread_calls(monkeypatch) as calls:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO item VALUES ('a')"))
                await connection.execute(text("INSERT INTO item VALUES (:n)"), [{"n": "b"}])
                names = (await connection.execute(text("SELECT name FROM item"))).scalars()
        assert sorted(names) == ["a", "b"]
        assert calls == ["_run", "end"], calls  # BEGIN IMMEDIATE, then COMMIT

        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def write() -> None:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO item VALUES ('c')"))

        ticker = asyncio.create_task(tick())
        try:
            async with held_by_another_process(tmp_path / "one.db-writers", 0.5) as holder:
                writing = asyncio.create_task(write())
                await asyncio.sleep(0.3)
                assert not writing.done()  # waiting for the other process's turn...
                assert ticks >= 10  # ...off the event loop, which keeps running
                await asyncio.wait_for(writing, 30)
                assert holder.poll() is not None
        finally:
            ticker.cancel()
        async with engine.connect() as connection:
            count = (await connection.execute(text("SELECT count(*) FROM item"))).scalar()
        assert count == 3
    finally:
        await engine.dispose()
