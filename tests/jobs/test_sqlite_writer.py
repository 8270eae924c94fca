"""The SQLite group writer: its multi-row INSERTs, its own process, and its turn among
writing processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.core.errors import database_problem
from app.jobs.sqlite_write_process import MAX_ROWS_PER_STATEMENT, MultiRowInserts
from app.jobs.sqlite_writer import SqliteGroupWriter
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


# -- the writer's own process -------------------------------------------------------------------


def _writer_pids(parent: int) -> list[int]:
    """The SQLite writer processes started by `parent` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == parent and b"sqlite_write_process" in command:
            pids.append(int(entry.name))
    return pids


def _started_since(before: set[int], parent: int | None = None) -> list[int]:
    """The writer processes `parent` (this process) started since `before` was taken."""
    return sorted(set(_writer_pids(parent or os.getpid())) - before)


def _gone(pid: int) -> bool:
    """Exited (a zombie left for an init that does not reap counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


@pytest.fixture
def table_t(tmp_path: Path) -> tuple[Path, Table]:
    database = tmp_path / "group.db"
    with sqlite3.connect(database) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, a, b UNIQUE, c)")
    table = Table(
        "t",
        MetaData(),
        Column("n", Integer, primary_key=True),
        *(Column(name, String) for name in "abc"),
    )
    return database, table


def _stored(database: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(database) as check:
        return check.execute("SELECT a, b, c FROM t ORDER BY n").fetchall()


@pytest.mark.asyncio
async def test_groups_are_written_by_one_process_of_its_own(table_t: tuple[Path, Table]) -> None:
    database, table = table_t
    writer = SqliteGroupWriter(database, synchronous="FULL", dialect=sqlite_dialect.dialect())
    before = set(_writer_pids(os.getpid()))
    try:
        await writer.write([(table, [{"a": "1", "b": "x", "c": None}])])
        await writer.write([(table, [{"a": str(i), "b": f"y{i}", "c": "é"} for i in range(300)])])
        [pid] = _started_since(before)
    finally:
        await writer.close()
    assert len(_stored(database)) == 301
    assert _gone(pid)  # close() stopped it


@pytest.mark.asyncio
async def test_a_writer_process_that_died_between_groups_is_replaced(
    table_t: tuple[Path, Table],
) -> None:
    database, table = table_t
    writer = SqliteGroupWriter(database, synchronous="FULL", dialect=sqlite_dialect.dialect())
    before = set(_writer_pids(os.getpid()))
    try:
        await writer.write([(table, [{"a": "1", "b": "first", "c": None}])])
        [first] = _started_since(before)
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0.2)
        await writer.write([(table, [{"a": "2", "b": "second", "c": None}])])
        [second] = _started_since(before | {first})
        assert _gone(first)
    finally:
        await writer.close()
    assert _stored(database) == [("1", "first", None), ("2", "second", None)]


@pytest.mark.asyncio
async def test_a_writer_process_killed_during_a_group_is_a_503_and_the_next_group_goes_on(
    table_t: tuple[Path, Table],
) -> None:
    """Killed while it waited for the turn: that group fails as the store being unavailable
    (whether it was stored cannot be known, so nobody writes it again), the next is written."""
    database, table = table_t
    writer = SqliteGroupWriter(database, synchronous="FULL", dialect=sqlite_dialect.dialect())
    before = set(_writer_pids(os.getpid()))
    try:
        await writer.write([(table, [{"a": "1", "b": "before", "c": None}])])
        [pid] = _started_since(before)
        async with held_by_another_process(Path(f"{database}-writers"), 5):
            write = asyncio.create_task(writer.write([(table, [{"a": "2", "b": "x", "c": None}])]))
            await asyncio.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(DBAPIError) as failed:
                await asyncio.wait_for(write, 30)
        problem = database_problem(failed.value)
        assert problem is not None
        assert problem.status == 503
        await writer.write([(table, [{"a": "3", "b": "after", "c": None}])])
    finally:
        await writer.close()
    assert _stored(database) == [("1", "before", None), ("3", "after", None)]


@pytest.mark.asyncio
async def test_a_refused_group_is_rolled_back_and_reported_like_the_drivers_error(
    table_t: tuple[Path, Table],
) -> None:
    database, table = table_t
    writer = SqliteGroupWriter(database, synchronous="FULL", dialect=sqlite_dialect.dialect())
    try:
        await writer.write([(table, [{"a": "1", "b": "taken", "c": None}])])
        with pytest.raises(IntegrityError) as refused:
            await writer.write(
                [(table, [{"a": "2", "b": "new", "c": None}, {"a": "3", "b": "taken", "c": None}])]
            )
        assert isinstance(refused.value.orig, sqlite3.IntegrityError)
        assert refused.value.orig.sqlite_errorname == "SQLITE_CONSTRAINT_UNIQUE"
        problem = database_problem(refused.value)
        assert problem is not None
        assert problem.status == 409
        await writer.write([(table, [{"a": "4", "b": "later", "c": None}])])
    finally:
        await writer.close()
    assert _stored(database) == [("1", "taken", None), ("4", "later", None)]


@pytest.mark.asyncio
async def test_a_missing_database_file_is_a_503_with_the_upgrade_hint(tmp_path: Path) -> None:
    table = Table("t", MetaData(), Column("a", String))
    writer = SqliteGroupWriter(
        tmp_path / "missing.db", synchronous="FULL", dialect=sqlite_dialect.dialect()
    )
    try:
        with pytest.raises(DBAPIError) as failed:
            await writer.write([(table, [{"a": "1"}])])
    finally:
        await writer.close()
    problem = database_problem(failed.value)
    assert problem is not None
    assert problem.status == 503
    assert "upgrade" in (problem.detail or "")
    assert not (tmp_path / "missing.db").exists()  # never created by the writer


_ORPHAN = """
import asyncio, os, sys
from pathlib import Path
from sqlalchemy import Column, MetaData, String, Table
from sqlalchemy.dialects import sqlite
from app.jobs.sqlite_writer import SqliteGroupWriter

async def main():
    table = Table("t", MetaData(), *(Column(name, String) for name in "abc"))
    writer = SqliteGroupWriter(Path(sys.argv[1]), synchronous="FULL", dialect=sqlite.dialect())
    await writer.write([(table, [{"a": "1", "b": "orphan", "c": None}])])
    print("written", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_the_writer_process_exits_when_its_gateway_is_killed(
    table_t: tuple[Path, Table],
) -> None:
    database, _ = table_t
    gateway = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN, str(database)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert gateway.stdout is not None
        assert await asyncio.to_thread(gateway.stdout.readline) == "written\n"
        [pid] = _started_since(set(), gateway.pid)
        gateway.kill()
        gateway.wait()
        for _ in range(100):
            if _gone(pid):
                break
            await asyncio.sleep(0.05)
        assert _gone(pid)
    finally:
        gateway.kill()
        gateway.wait()
    assert _stored(database) == [("1", "orphan", None)]
