"""The SQLite group writer's own process: it stores each group it is sent in one transaction.

It has a GIL of its own, so its statements never wait for the gateway's event loop (see
`app.jobs.sqlite_writer`, which starts it and explains why). Standard library only (and the
writers' turn): about 40 ms to its first group, about 14 MB resident.

`SqliteGroupWriter` runs `main` with the database path and its `synchronous` setting and
talks over stdin and stdout. Each request is a length-prefixed `marshal` of [(single-row
INSERT, [row values...]), ...]; each answer a length-prefixed `marshal` of None (committed)
or a `Failure` (rolled back). The process ignores SIGINT and SIGTERM, which are meant for
the gateway (it drains its requests first, then closes the pipe), and exits when its stdin
closes: the gateway closed it, or died.
"""

from __future__ import annotations

import marshal
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from app.core.sqlite_lock import WriterLock, writer_lock

# A length prefix: 4 bytes, big-endian.
HEADER_BYTES = 4

Group = list[tuple[str, list[tuple[Any, ...]]]]
# (sqlite3 error class name, message, SQLite error code, SQLite error name, statement)
Failure = tuple[str, str, int | None, str | None, str]

# Rows per multi-row INSERT at most (also bounded by SQLite's limit on parameters).
MAX_ROWS_PER_STATEMENT = 256
# Fewer rows than this go through one `executemany`. With the writer as a gateway thread,
# multi-row statements for small groups measured worse at 32 concurrent single-job requests;
# in this process, multi-row statements for every group measured the same within noise.
MIN_MULTI_ROWS = 32


class MultiRowInserts:
    """Splits a table's rows into multi-row INSERTs of power-of-two sizes (13 rows: 8, 4
    and 1), each built from the single-row statement once and cached. `placeholder` is the
    driver's mark for parameter n (1-based), as for `BindConverter`. Up to `exact_up_to`
    rows go in one statement of exactly that size (a few more distinct statements, one
    round trip for a small group)."""

    def __init__(
        self,
        *,
        placeholder: Callable[[int], str],
        max_rows: int = MAX_ROWS_PER_STATEMENT,
        max_variables: int = 32766,
        exact_up_to: int = 1,
    ) -> None:
        self._placeholder = placeholder
        self._exact_up_to = exact_up_to
        self._max_rows = max_rows
        self._max_variables = max_variables
        self._statements: dict[tuple[str, int], str] = {}

    def chunks(
        self, single_row_sql: str, rows: list[tuple[Any, ...]]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """(statement, flat parameters) pairs that insert `rows` in order."""
        width = len(rows[0]) if rows else 1
        largest = max(1, min(self._max_rows, self._max_variables // width))
        out: list[tuple[str, tuple[Any, ...]]] = []
        start = 0
        while start < len(rows):
            left = len(rows) - start
            size = min(largest, left if left <= self._exact_up_to else 1 << (left.bit_length() - 1))
            params = tuple(value for row in rows[start : start + size] for value in row)
            out.append((self._statement(single_row_sql, size, width), params))
            start += size
        return out

    def _statement(self, single_row_sql: str, size: int, width: int) -> str:
        statement = self._statements.get((single_row_sql, size))
        if statement is None:
            head, marker, _ = single_row_sql.partition(" VALUES ")
            if not marker:
                raise ValueError(f"not a single-row INSERT: {single_row_sql}")
            mark = self._placeholder
            groups = (
                "(" + ", ".join(mark(row * width + column) for column in range(1, width + 1)) + ")"
                for row in range(size)
            )
            statement = f"{head} VALUES {', '.join(groups)}"
            self._statements[(single_row_sql, size)] = statement
        return statement


def qmark(_: int) -> str:
    """The sqlite3 driver's mark for a parameter."""
    return "?"


class GroupStore:
    """One connection that writes groups: BEGIN IMMEDIATE under the writers' turn, the
    inserts (multi-row statements for large tables), COMMIT. It connects at the first
    group, and again after a group could not connect (the file may appear later)."""

    def __init__(self, path: str, *, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._inserts: MultiRowInserts | None = None  # sized for the connection's limit
        self._turn: WriterLock | None = writer_lock(path)

    def _connect(self) -> tuple[sqlite3.Connection, MultiRowInserts]:
        if self._connection is None or self._inserts is None:
            # mode=rw: never create the file (the gateway's migrations do, 0600).
            connection = sqlite3.connect(
                f"file:{self._path}?mode=rw", uri=True, timeout=30, isolation_level=None
            )
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            connection.execute("PRAGMA busy_timeout=30000")
            connection.execute("PRAGMA foreign_keys=ON")
            self._inserts = MultiRowInserts(
                placeholder=qmark,
                max_variables=connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER),
            )
            self._connection = connection
        return self._connection, self._inserts

    def write(self, group: Group) -> Failure | None:
        """Store `group` in one transaction; the failure, if any (rolled back)."""
        statement = "BEGIN IMMEDIATE"
        turn = self._turn
        try:
            connection, inserts = self._connect()
            if turn is not None:
                turn.acquire(self)
            connection.execute(statement)
            try:
                for statement, rows in group:  # an error names the single-row form
                    if len(rows) < MIN_MULTI_ROWS:
                        connection.executemany(statement, rows)
                        continue
                    for multi_row, params in inserts.chunks(statement, rows):
                        connection.execute(multi_row, params)
                statement = "COMMIT"
                connection.execute(statement)
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            return (
                type(exc).__name__,
                str(exc),
                getattr(exc, "sqlite_errorcode", None),
                getattr(exc, "sqlite_errorname", None),
                statement,
            )
        finally:
            if turn is not None:
                turn.release(self)
        return None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def frame(value: Any) -> bytes:
    """`value` as one length-prefixed message."""
    payload = marshal.dumps(value)
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


def _read_exactly(read: Callable[[int], bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(
    path: str, synchronous: str, read: Callable[[int], bytes], write: Callable[[bytes], Any]
) -> None:
    """Answer groups until the input ends."""
    store = GroupStore(path, synchronous=synchronous)
    try:
        while (header := _read_exactly(read, HEADER_BYTES)) is not None:
            payload = _read_exactly(read, int.from_bytes(header, "big"))
            if payload is None:
                return
            write(frame(store.write(marshal.loads(payload))))
    finally:
        store.close()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, synchronous = argv[1], argv[2]
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(stdout, view) :]

    serve(path, synchronous, lambda size: os.read(stdin, size), write)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
