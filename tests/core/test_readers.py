"""Background reads never hold SQLite's write lock: while one runs (or while a writer in
another process holds the lock), the hot path's writer and the reads themselves go on."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from app.admission.config import AdmissionSettings
from app.bootstrap import Runtime, build_admission
from app.core.db import sqlite_file
from app.scheduler.runner import SchedulerRunner

pytestmark = pytest.mark.asyncio


def database_file(runtime: Runtime) -> str:
    path = sqlite_file(runtime.engine.url) if runtime.engine.dialect.name == "sqlite" else None
    if path is None:
        pytest.skip("SQLite's write lock: PostgreSQL readers never block writers anyway")
    return str(path)


@contextmanager
def write_lock(path: str) -> Iterator[None]:
    """Hold the database's write lock from another connection, as the consumer would."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def can_take_write_lock(path: str) -> bool:
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return False
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    return True


async def test_an_open_reader_leaves_the_write_lock_free(runtime: Runtime) -> None:
    path = database_file(runtime)
    async with runtime.reader() as session:
        await session.execute(text("SELECT count(*) FROM job"))
        assert can_take_write_lock(path)
    # What every writing session does, by contrast: BEGIN IMMEDIATE.
    async with runtime.sessionmaker() as session:
        await session.execute(text("SELECT count(*) FROM job"))
        assert not can_take_write_lock(path)


async def test_background_reads_do_not_wait_for_a_writer(runtime: Runtime) -> None:
    """Depth samples, the admission keeper and an idle scheduler poll answer while another
    connection holds the write lock (each would otherwise wait for it to be released)."""
    path = database_file(runtime)
    admission = build_admission(runtime, AdmissionSettings(quota_cache_ms=1000))
    scheduler = SchedulerRunner(runtime.sessionmaker, runtime.submitter, reader=runtime.reader)
    with write_lock(path):
        started = time.monotonic()
        await asyncio.wait_for(admission.refresh(), timeout=5)
        await asyncio.wait_for(admission.refresh_active(), timeout=5)
        assert await asyncio.wait_for(scheduler.run_once(), timeout=5) == 0
        assert time.monotonic() - started < 2
    assert all(depth.sampled_ms is not None for depth in admission.depth.queues.values())
    await admission.close()
