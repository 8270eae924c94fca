"""The SQLite group writer: its multi-row INSERTs and its turn among writing processes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.dialects import sqlite as sqlite_dialect

from app.jobs.sqlite_writer import MAX_ROWS_PER_STATEMENT, MultiRowInserts, SqliteGroupWriter
from tests.support.writer_turn import held_by_another_process, other_process_sees


def _qmark(_: int) -> str:
    return "?"


SINGLE = "INSERT INTO t (a, b, c) VALUES (?, ?, ?)"


def _rows(n: int) -> list[tuple[int, str, str | None]]:
    return [(i, f"é{i}", None if i % 3 else "x") for i in range(n)]


@pytest.mark.parametrize("count", [1, 2, 13, 255, 256, 257, 1000])
def test_every_row_is_inserted_once_and_in_order(count: int) -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, a, b, c)")
    rows = _rows(count)
    for statement, params in MultiRowInserts(placeholder=_qmark).chunks(SINGLE, rows):
        connection.execute(statement, params)
    assert connection.execute("SELECT a, b, c FROM t ORDER BY n").fetchall() == rows


def test_chunks_are_powers_of_two_largest_first() -> None:
    chunks = MultiRowInserts(placeholder=_qmark).chunks(SINGLE, _rows(13))
    assert [len(params) // 3 for _, params in chunks] == [8, 4, 1]


def test_small_groups_can_take_one_statement_of_their_exact_size() -> None:
    inserts = MultiRowInserts(placeholder=_qmark, exact_up_to=16)
    assert [len(p) // 3 for _, p in inserts.chunks(SINGLE, _rows(13))] == [13]
    assert [len(p) // 3 for _, p in inserts.chunks(SINGLE, _rows(16))] == [16]
    assert [len(p) // 3 for _, p in inserts.chunks(SINGLE, _rows(21))] == [16, 5]
    statements = {s for n in range(1, 1001) for s, _ in inserts.chunks(SINGLE, _rows(n))}
    assert len(statements) <= 16 + 5  # 1..16, then 32, 64, 128, 256


def test_a_table_needs_few_distinct_statements_whatever_the_group_sizes() -> None:
    inserts = MultiRowInserts(placeholder=_qmark)
    statements = {
        statement for n in range(1, 1001) for statement, _ in inserts.chunks(SINGLE, _rows(n))
    }
    assert len(statements) <= MAX_ROWS_PER_STATEMENT.bit_length()  # 1, 2, 4 ... 256


def test_a_statement_stays_within_the_limit_on_parameters() -> None:
    connection = sqlite3.connect(":memory:")
    connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)
    connection.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, a, b, c)")
    inserts = MultiRowInserts(placeholder=_qmark, max_variables=100)
    rows = _rows(500)
    for statement, params in inserts.chunks(SINGLE, rows):
        assert len(params) <= 100
        connection.execute(statement, params)  # over the limit: sqlite3.OperationalError
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (500,)


def test_numbered_placeholders_count_on_across_rows() -> None:
    inserts = MultiRowInserts(placeholder=lambda n: f"${n}")
    [(statement, params)] = inserts.chunks("INSERT INTO t (a, b) VALUES ($1, $2)", [(1, 2), (3, 4)])
    assert statement == "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
    assert params == (1, 2, 3, 4)


def test_a_statement_that_is_not_a_single_row_insert_is_refused() -> None:
    with pytest.raises(ValueError, match="single-row INSERT"):
        MultiRowInserts(placeholder=_qmark).chunks("DELETE FROM t", _rows(2))


@pytest.mark.asyncio
async def test_the_group_writer_takes_the_writers_turn_across_processes(tmp_path: Path) -> None:
    """While another process holds the turn the group writer waits for it; it holds the
    turn only while it writes."""
    database = tmp_path / "group.db"
    with sqlite3.connect(database) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, a, b, c)")
    table = Table(
        "t",
        MetaData(),
        Column("n", Integer, primary_key=True),
        *(Column(name, String) for name in "abc"),
    )
    writer = SqliteGroupWriter(database, synchronous="FULL", dialect=sqlite_dialect.dialect())
    lock_file = tmp_path / "group.db-writers"
    try:
        async with held_by_another_process(lock_file, 0.3) as holder:
            write = asyncio.create_task(writer.write([(table, [{"a": "1", "b": "2", "c": "3"}])]))
            await asyncio.sleep(0.1)
            assert not write.done()  # the other process's turn
            await asyncio.wait_for(write, 30)
            assert holder.poll() is not None  # it had let go
    finally:
        await writer.close()
    with sqlite3.connect(database) as check:
        assert check.execute("SELECT a, b, c FROM t").fetchall() == [("1", "2", "3")]
    # Between groups the turn is free.
    assert await asyncio.to_thread(other_process_sees, lock_file) == "free"
