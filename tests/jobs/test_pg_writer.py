"""The group committer's PostgreSQL writer: a group in one statement, atomic, and failing
like any other statement (translated errors, a dead connection left out of the pool)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
import pytest_asyncio
from sqlalchemy import Column, Integer, MetaData, Table, event, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.bootstrap import Runtime
from app.core.clock import to_datetime
from app.core.config import DatabaseSettings
from app.core.db import create_engine
from app.core.errors import database_problem
from app.jobs.models import Job, JobEvent
from app.jobs.payloads import JobOptions, SyncSingleOrderJob
from app.jobs.pg_writer import PostgresGroupWriter
from app.jobs.service import PendingWrites, _build, _prepare, write_pending
from app.jobs.sqlite_writer import RecordedInserts
from app.queues.models import QueueMessage
from app.tenants.schemas import Principal
from tests.factories import TenantFactory

pytestmark = pytest.mark.asyncio

MakeWriter = Callable[[AsyncEngine], PostgresGroupWriter]

ORDER = SyncSingleOrderJob(type="sync-single-order", orderId=7)


@pytest.fixture
def pg(runtime: Runtime) -> Runtime:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's group writer (JOBGATE_DATABASE_URL=postgresql://...)")
    return runtime


@pytest_asyncio.fixture
async def one_connection_engine(
    pg: Runtime, database: tuple[str, str | None]
) -> AsyncIterator[AsyncEngine]:
    """An engine of the same database whose pool keeps one connection."""
    url, schema = database
    engine = create_engine(DatabaseSettings(url=url, pool_size=1), search_path=schema)
    yield engine
    await engine.dispose()


async def _batches(runtime: Runtime, tenants: TenantFactory, jobs: int) -> PendingWrites:
    tenant = await tenants.create()
    principal = Principal(tenant_id=tenant.tenant_id, scopes=frozenset({"jobs:write"}))
    options: list[JobOptions] = [ORDER] * jobs
    prepared = [_prepare(principal, job, None, runtime.topology, None, None) for job in options]
    now = to_datetime(runtime.clock.now_ms())
    return _build(prepared, [], principal.tenant_id, runtime.dispatcher.initial_status, now)[1]


async def _recorded(runtime: Runtime, writes: PendingWrites) -> list[tuple[Table, list[Any]]]:
    recorded = RecordedInserts()
    await write_pending(cast(AsyncSession, recorded), writes, runtime.dispatcher)
    return recorded.batches


async def _count(runtime: Runtime, model: type) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


@contextmanager
def _statements_sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement asyncpg sends on the connections the engine hands out while inside.
    asyncpg reports a statement in a callback of the event loop (see `_sent_by`)."""
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        driver = dbapi_connection.driver_connection
        if log not in driver._query_loggers:
            driver.add_query_logger(log)

    event.listen(engine.sync_engine, "checkout", on_checkout)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "checkout", on_checkout)


async def _sent_by(
    writer: PostgresGroupWriter,
    engine: AsyncEngine,
    batches: list[tuple[Table, list[Any]]],
    setup: list[tuple[Table, list[Any]]],
) -> list[str]:
    """The statements `writer` sends for `batches`, after writing `setup` first: the
    connection's first statements set it up and read the array types' codecs."""
    with _statements_sent(engine) as sent:
        await writer.write(setup)
        await asyncio.sleep(0)  # asyncpg reports in a callback of the event loop
        sent.clear()
        await writer.write(batches)
        await asyncio.sleep(0)
    return sent


@pytest_asyncio.fixture
async def make_writer() -> AsyncIterator[Callable[[AsyncEngine], PostgresGroupWriter]]:
    """Writers on an engine, closed after the test (each keeps a connection)."""
    made: list[PostgresGroupWriter] = []

    def make(engine: AsyncEngine) -> PostgresGroupWriter:
        made.append(PostgresGroupWriter(engine))
        return made[-1]

    yield make
    for writer in made:
        await writer.close()


async def test_a_group_of_three_tables_is_one_statement(
    pg: Runtime,
    tenants: TenantFactory,
    one_connection_engine: AsyncEngine,
    make_writer: MakeWriter,
) -> None:
    writer = make_writer(one_connection_engine)
    writes = await _recorded(pg, await _batches(pg, tenants, 250))
    setup = await _recorded(pg, await _batches(pg, tenants, 1))
    sent = await _sent_by(writer, one_connection_engine, writes, setup)
    assert len(sent) == 1  # no BEGIN, no COMMIT: one statement is its own transaction
    assert sent[0].startswith("WITH ")
    assert await _count(pg, Job) == 251
    assert await _count(pg, JobEvent) == 251
    assert await _count(pg, QueueMessage) == 251


async def test_a_failing_row_stores_nothing_of_its_group(
    pg: Runtime,
    tenants: TenantFactory,
    make_writer: MakeWriter,
) -> None:
    """The job, event and message rows go in together or not at all: a message id already
    taken fails the statement after the job rows were inserted by it."""
    writer = make_writer(pg.engine)
    first = await _recorded(pg, await _batches(pg, tenants, 1))
    await writer.write(first)
    second = await _recorded(pg, await _batches(pg, tenants, 3))
    taken = first[-1][1][0]["id"]
    second[-1][1][-1]["id"] = taken  # the last table's last row
    with pytest.raises(IntegrityError) as raised:
        await writer.write(second)
    problem = database_problem(raised.value)
    assert problem is not None
    assert problem.status == 409
    assert await _count(pg, Job) == 1
    assert await _count(pg, QueueMessage) == 1


async def test_a_table_with_two_column_sets_is_written_in_one_transaction(
    pg: Runtime,
    tenants: TenantFactory,
    one_connection_engine: AsyncEngine,
    make_writer: MakeWriter,
) -> None:
    """Rows of one table that name different columns cannot share an unnest: each set is a
    statement of its own, all in one transaction, which a failure rolls back whole."""
    writer = make_writer(one_connection_engine)
    plain = await _recorded(pg, await _batches(pg, tenants, 2))
    started = await _recorded(pg, await _batches(pg, tenants, 2))
    for row in started[0][1]:
        row["progress_message"] = "queued by hand"  # a column the other rows leave out
        del row["request_hash"]
    setup = await _recorded(pg, await _batches(pg, tenants, 1))
    sent = await _sent_by(writer, one_connection_engine, plain + started, setup)
    assert sent[0] == "BEGIN;"
    assert sent[-1] == "COMMIT;"
    assert await _count(pg, Job) == 5
    async with pg.sessionmaker() as session:
        stored = (await session.execute(select(Job.progress_message))).scalars().all()
    assert sorted(stored, key=str) == [None, None, None, "queued by hand", "queued by hand"]

    again = await _recorded(pg, await _batches(pg, tenants, 2))
    mixed = await _recorded(pg, await _batches(pg, tenants, 1))
    del mixed[0][1][0]["request_hash"]
    mixed[-1][1][0]["id"] = plain[-1][1][0]["id"]  # a taken message id, in the last statement
    with pytest.raises(IntegrityError):
        await writer.write(again + mixed)
    assert await _count(pg, Job) == 5


async def _writers_backends(runtime: Runtime) -> list[int]:
    """The backends whose last statement was a group writer's."""
    async with runtime.engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND datname = current_database() AND query LIKE 'WITH w0 AS (INSERT INTO%'"
            )
        )
        return list(found.scalars())


async def test_a_dead_connection_is_a_503_and_not_reused(
    pg: Runtime,
    tenants: TenantFactory,
    one_connection_engine: AsyncEngine,
    make_writer: MakeWriter,
) -> None:
    writer = make_writer(one_connection_engine)
    await writer.write(await _recorded(pg, await _batches(pg, tenants, 1)))
    backends = await _writers_backends(pg)
    assert backends
    async with pg.engine.connect() as connection:
        for pid in backends:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(DBAPIError) as raised:
        await writer.write(await _recorded(pg, await _batches(pg, tenants, 1)))
    assert raised.value.connection_invalidated
    problem = database_problem(raised.value)
    assert problem is not None
    assert problem.status == 503
    await writer.write(await _recorded(pg, await _batches(pg, tenants, 1)))
    assert await _count(pg, Job) == 2
    await writer.close()


async def test_the_writers_plan_setting_stays_on_its_own_connection(
    pg: Runtime,
    tenants: TenantFactory,
    one_connection_engine: AsyncEngine,
    make_writer: MakeWriter,
) -> None:
    """The writer plans its statements (and their foreign-key checks) with PostgreSQL's
    default; the engine's other connections keep `force_custom_plan`, also after the
    writer closed its connection."""
    writer = make_writer(one_connection_engine)
    await writer.write(await _recorded(pg, await _batches(pg, tenants, 1)))
    async with one_connection_engine.connect() as connection:
        setting = await connection.execute(text("SHOW plan_cache_mode"))
        assert setting.scalar_one() == "force_custom_plan"
    await writer.close()
    for _ in range(3):  # every connection the pool now holds
        async with one_connection_engine.connect() as connection:
            setting = await connection.execute(text("SHOW plan_cache_mode"))
            assert setting.scalar_one() == "force_custom_plan"
    await writer.write(await _recorded(pg, await _batches(pg, tenants, 1)))  # opens another
    assert await _count(pg, Job) == 2
    await writer.close()


async def test_an_array_column_is_refused(pg: Runtime, make_writer: MakeWriter) -> None:
    """unnest would spread an array column's elements over rows."""
    table = Table("with_array", MetaData(), Column("id", Integer), Column("tags", ARRAY(Integer)))
    writer = make_writer(pg.engine)
    with pytest.raises(TypeError, match="array"):
        await writer.write([(table, [{"id": 1, "tags": [1, 2]}])])
