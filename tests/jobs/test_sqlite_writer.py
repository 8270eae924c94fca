"""The SQLite group writer's multi-row INSERTs."""

from __future__ import annotations

import sqlite3

import pytest

from app.jobs.sqlite_writer import MAX_ROWS_PER_STATEMENT, MultiRowInserts


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
