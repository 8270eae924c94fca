"""Group commit: concurrent key-less submissions share one transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.bootstrap import Runtime, group_writer
from app.core.clock import to_datetime
from app.jobs.committer import TRANSIENT_RETRIES, GroupCommitter, GroupWriter
from app.jobs.models import Job
from app.jobs.payloads import AnalyticsEventJob, JobOptions, SyncSingleOrderJob
from app.jobs.service import PendingWrites, _build, _prepare
from app.jobs.sqlite_write_process import MIN_MULTI_ROWS
from app.queues import counters as queue_counters
from app.queues.models import QueueMessage
from app.tenants.schemas import Principal
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio


async def _count(runtime: Runtime, model: type) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_concurrent_submissions_share_transactions(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    body = {"type": "sync-single-order", "orderId": 1}
    responses = await asyncio.gather(
        *(client.post("/v1/jobs", json=body, headers=auth(key)) for _ in range(60))
    )
    assert [r.status_code for r in responses] == [202] * 60
    assert await _count(runtime, Job) == 60
    assert await _count(runtime, QueueMessage) == 60
    committer = runtime.committer
    assert committer is not None
    assert committer.submissions == 60
    assert committer.groups < 60  # some requests were committed together


def _writes(
    runtime: Runtime, principal: Principal, job: JobOptions, queue: str | None = None
) -> PendingWrites:
    prepared = _prepare(principal, job, None, runtime.topology, None, None)
    if queue is not None:
        prepared.queue = queue
    now = to_datetime(runtime.clock.now_ms())
    return _build([prepared], [], principal.tenant_id, runtime.dispatcher.initial_status, now)[1]


def _writes_of(runtime: Runtime, principal: Principal, jobs: list[JobOptions]) -> PendingWrites:
    prepared = [_prepare(principal, job, None, runtime.topology, None, None) for job in jobs]
    now = to_datetime(runtime.clock.now_ms())
    return _build(prepared, [], principal.tenant_id, runtime.dispatcher.initial_status, now)[1]


async def _principal(tenants: TenantFactory) -> Principal:
    tenant = await tenants.create()
    return Principal(tenant_id=tenant.tenant_id, scopes=frozenset({"jobs:write"}))


ORDER = SyncSingleOrderJob(type="sync-single-order", orderId=1)


@pytest.fixture
def raw_writer(runtime: Runtime) -> GroupWriter:
    """The database's raw group writer (the stdlib driver's thread on a SQLite file, asyncpg
    on PostgreSQL)."""
    writer = group_writer(runtime.engine, runtime.settings)
    if writer is None:
        pytest.skip("no raw writer for this database (in-memory SQLite)")
    return writer


@pytest.fixture(params=["sqlalchemy", "raw"])
def make_committer(
    request: pytest.FixtureRequest, runtime: Runtime
) -> Callable[[], GroupCommitter]:
    """Group committers writing through the session, or the database's raw writer (the
    stdlib driver's thread on a SQLite file, asyncpg on PostgreSQL)."""

    def make() -> GroupCommitter:
        writer = None
        if request.param == "raw":
            writer = group_writer(runtime.engine, runtime.settings)
            if writer is None:
                pytest.skip("no raw writer for this database (in-memory SQLite)")
        return GroupCommitter(runtime.sessionmaker, runtime.dispatcher, writer=writer)

    return make


async def test_a_failing_group_fails_only_its_faulty_member(
    runtime: Runtime, tenants: TenantFactory, make_committer: Callable[[], GroupCommitter]
) -> None:
    principal = await _principal(tenants)
    committer = make_committer()
    # Two callers in one group: the second one's queue does not exist, so the group fails,
    # and is retried member by member: the first is stored, the second gets its own error.
    results = await asyncio.gather(
        committer.write(_writes(runtime, principal, ORDER, "prestashop-sync")),
        committer.write(_writes(runtime, principal, ORDER, "no-such-queue")),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], Exception)
    assert "no-such-queue" in str(results[1])
    assert committer.isolations == 1
    assert await _count(runtime, Job) == 1
    # The committer keeps working after a failed group.
    await committer.write(_writes(runtime, principal, ORDER, "prestashop-sync"))
    assert await _count(runtime, Job) == 2
    await committer.close()


async def test_a_database_error_of_one_tenant_spares_the_other_tenants(
    runtime: Runtime,
    tenants: TenantFactory,
    caplog: pytest.LogCaptureFixture,
    make_committer: Callable[[], GroupCommitter],
) -> None:
    """A row the database refuses (a duplicate id) fails its own caller only, and no log
    line or error text quotes a payload."""
    attacker, victim = await _principal(tenants), await _principal(tenants)
    committer = make_committer()
    secret = AnalyticsEventJob(type="analytics-event", name="x", properties={"m": "PAYLOAD-42"})
    duplicate = _writes(runtime, attacker, secret)
    await committer.write(duplicate)  # stored once: writing it again violates the key
    caplog.set_level(logging.INFO)  # the drivers' DEBUG logs are for debugging sessions
    victims = [_writes(runtime, victim, ORDER) for _ in range(5)]
    results = await asyncio.gather(
        *(committer.write(w) for w in victims[:2]),
        committer.write(duplicate),
        *(committer.write(w) for w in victims[2:]),
        return_exceptions=True,
    )
    assert [r is None for r in results] == [True, True, False, True, True, True]
    error = results[2]
    assert isinstance(error, IntegrityError)
    assert "PAYLOAD-42" not in str(error)
    assert "PAYLOAD-42" not in caplog.text
    async with runtime.sessionmaker() as session:
        stored = await session.execute(
            select(func.count()).where(Job.tenant_id == victim.tenant_id)
        )
        assert stored.scalar_one() == 5
    await committer.close()


async def test_an_unreachable_database_fails_the_whole_group_without_retries(
    runtime: Runtime, tenants: TenantFactory
) -> None:
    principal = await _principal(tenants)
    calls = 0

    class Down:
        async def __aenter__(self) -> None:
            nonlocal calls
            calls += 1
            raise ConnectionRefusedError("connection refused")

        async def __aexit__(self, *_: object) -> None:
            return None

    committer = GroupCommitter(lambda: Down(), runtime.dispatcher)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(committer.write(_writes(runtime, principal, ORDER)) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ConnectionRefusedError) for r in results)
    assert committer.isolations == 0
    assert calls < 3  # one attempt per group, no member-by-member retries
    await committer.close()


@pytest.mark.parametrize("count", [1, MIN_MULTI_ROWS + 9])  # executemany, multi-row
async def test_the_raw_writer_stores_what_the_session_stores(
    runtime: Runtime, tenants: TenantFactory, raw_writer: GroupWriter, count: int
) -> None:
    """Rows written by the raw writer (sqlite3 or asyncpg) read back like the ORM path's,
    for a small group and for one large enough for multi-row statements."""
    writer = raw_writer
    principal = await _principal(tenants)
    jobs: list[JobOptions] = [
        AnalyticsEventJob(
            type="analytics-event",
            name="é",
            properties={"n": 1.5, "list": [1, "x"], "none": None, "i": i},
        )
        for i in range(count)
    ]
    by_session = GroupCommitter(runtime.sessionmaker, runtime.dispatcher)
    by_writer = GroupCommitter(runtime.sessionmaker, runtime.dispatcher, writer=writer)
    first, second = _writes_of(runtime, principal, jobs), _writes_of(runtime, principal, jobs)
    await by_session.write(first)
    await by_writer.write(second)
    await by_session.close()
    await by_writer.close()
    async with runtime.sessionmaker() as session:
        stored = {row.id: row for row in (await session.execute(select(Job))).scalars()}
        messages = {
            message.body: message
            for message in (await session.execute(select(QueueMessage))).scalars()
        }
    ignored = {"id", "_sa_instance_state"}
    for mine, theirs in zip(first.jobs, second.jobs, strict=True):
        a, b = stored[mine["id"]], stored[theirs["id"]]
        assert {k: v for k, v in vars(a).items() if k not in ignored} == {
            k: v for k, v in vars(b).items() if k not in ignored
        }
        assert b.created_at == theirs["created_at"]
        assert b.created_at.tzinfo is not None
    assert [stored[row["id"]].payload["properties"]["i"] for row in second.jobs] == list(
        range(count)
    )
    assert len(messages) == 2 * count
    # The counting triggers saw every row, whether inserted one by one or many at a time.
    queue = second.jobs[0]["queue"]
    async with runtime.sessionmaker() as session:
        counted = await queue_counters.stored(session, [queue])
    assert counted[queue][0] == sum(1 for m in messages.values() if m.queue == queue)


class _PgError(Exception):
    """What asyncpg's adapted error carries: the SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


class _FailingFirst:
    """A group writer whose first `failures` transactions fail with `sqlstate`, as PostgreSQL
    fails a deadlock victim; then the database's real writer stores the rows."""

    def __init__(self, real: GroupWriter, sqlstate: str, failures: int) -> None:
        self.real, self.sqlstate, self.failures, self.calls = real, sqlstate, failures, 0

    async def write(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise DBAPIError("INSERT INTO job ...", None, _PgError(self.sqlstate))
        await self.real.write(batches)

    async def close(self) -> None:
        await self.real.close()


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
async def test_a_deadlock_victim_group_is_written_again(
    runtime: Runtime, tenants: TenantFactory, raw_writer: GroupWriter, sqlstate: str
) -> None:
    """Two writers meeting on counter rows in opposite orders: PostgreSQL rolls one back
    whole, and its submissions are stored by running the transaction again (no 503)."""
    principal = await _principal(tenants)
    writer = _FailingFirst(raw_writer, sqlstate, failures=2)
    committer = GroupCommitter(runtime.sessionmaker, runtime.dispatcher, writer=writer)
    before = await _count(runtime, Job)
    await committer.write(_writes(runtime, principal, ORDER))
    assert writer.calls == 3
    assert await _count(runtime, Job) == before + 1
    await committer.close()


async def test_a_lasting_deadlock_fails_after_bounded_retries(
    runtime: Runtime, tenants: TenantFactory, raw_writer: GroupWriter
) -> None:
    principal = await _principal(tenants)
    writer = _FailingFirst(raw_writer, "40P01", failures=100)
    committer = GroupCommitter(runtime.sessionmaker, runtime.dispatcher, writer=writer)
    with pytest.raises(DBAPIError):
        await committer.write(_writes(runtime, principal, ORDER))
    assert writer.calls == TRANSIENT_RETRIES + 1
    await committer.close()


async def test_other_database_errors_are_not_retried(
    runtime: Runtime, tenants: TenantFactory, raw_writer: GroupWriter
) -> None:
    principal = await _principal(tenants)
    writer = _FailingFirst(raw_writer, "23505", failures=1)  # unique violation: the data's fault
    committer = GroupCommitter(runtime.sessionmaker, runtime.dispatcher, writer=writer)
    with pytest.raises(DBAPIError):
        await committer.write(_writes(runtime, principal, ORDER))
    assert writer.calls == 1
    await committer.close()
