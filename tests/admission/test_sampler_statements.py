"""No statement of the periodic samplers grows with the backlog.

One tick of each sampler (admission's depth sampler and its keeper, which re-reads active
tenants' in-flight counts; the outbox relay's look and its age gauge; the queue stats of
`GET /v1/admin/queues`; the engine's Cloudflare-style `metrics` and `pull`) is recorded with
an empty store and again behind a 10,000-job backlog of the same tenant and queue: the same
statements, and no aggregate except over the counter rows or an index-bounded one.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from app.admission.service import AdmissionControl
from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.jobs.dispatchers import OutboxDispatcher
from app.jobs.payloads import AnalyticsEventJob
from app.main import create_app
from app.outbox import service as outbox_service
from app.queues.base import OutgoingMessage
from app.tenants.schemas import Principal
from tests.factories import TenantFactory, auth
from tests.outbox.conftest import make_relay
from tests.support.asgi import asgi_client
from tests.support.statements import add_job_backlog, count_statements, statement_shapes

pytestmark = pytest.mark.asyncio

BACKLOG = 10_000
QUEUE = "analytics-events"
EVENT = {"type": "analytics-event", "name": "e"}
AGGREGATE = re.compile(r"\b(count|sum|avg|min|max)\s*\(", re.IGNORECASE)
# Aggregates whose cost does not grow with the backlog, and why.
BOUNDED = (
    "from row_counter",  # the counter rows: a few per key
    "min(queue_message.enqueued_ms)",  # the end of the (queue, enqueued_ms) index
    "min(outbox_message.created_ms)",  # the end of the partial index of unpublished rows
    "queue_message.lease_id is not null and queue_message.visible_at_ms >",  # leased only
)


def _flat(statement: str) -> str:
    return " ".join(statement.split()).lower()


def _unbounded(statements: list[str]) -> list[str]:
    return [
        s for s in statements if AGGREGATE.search(s) and not any(ok in _flat(s) for ok in BOUNDED)
    ]


async def _full_scans(runtime: Runtime, statements: list[str]) -> list[str]:
    """SQLite's plans of `statements` that read a whole table of the backlog."""
    scans = []
    async with runtime.engine.connect() as conn:
        for statement in set(statements):
            if not _flat(statement).startswith(("select", "update", "delete")):
                continue
            params = (None,) * statement.count("?")
            plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)).all()
            for row in plan:
                detail = str(row[-1])
                if re.match(r"SCAN (job|queue_message|outbox_message)\b", detail):
                    scans.append(f"{detail}: {statement}")
        await conn.rollback()
    return scans


async def _add_backlog(runtime: Runtime, principal: Principal) -> None:
    """`BACKLOG` queued jobs of the tenant (with their messages) and as many outbox rows."""
    await add_job_backlog(
        runtime, principal, AnalyticsEventJob(type="analytics-event", name="e"), BACKLOG
    )
    message = OutgoingMessage(body={"job_id": "x", "payload": {"n": 1}})
    for start in range(0, BACKLOG, 1000):
        async with runtime.sessionmaker() as session:
            await outbox_service.stage(
                session, QUEUE, [message] * 1000, now_ms=runtime.clock.now_ms() + start
            )
            await session.commit()


async def _tick(runtime: Runtime, admission: AdmissionControl, clock: ManualClock) -> list[str]:
    relay = make_relay(runtime, runtime.queue_engine, clock)
    engine = runtime.queue_engine
    clock.advance(seconds=5)  # past every cache: the keeper reads again
    with count_statements(runtime.engine) as statements:
        await admission.refresh()
        await admission.refresh_active()
        await relay.pending()
        await relay.measure_age()
        await relay.backlog()
        async with runtime.sessionmaker() as session:
            await engine.stats(QUEUE, session=session)
            await session.commit()
        await engine.metrics(QUEUE)
        await engine.pull(QUEUE, batch_size=1)
    # Hand the pulled message back (outside the count): the next tick starts alike.
    async with runtime.sessionmaker() as session:
        await session.execute(text("UPDATE queue_message SET lease_id = NULL, attempts = 0"))
        await session.commit()
    return statements


async def test_sampler_ticks_do_not_grow_with_the_backlog(
    runtime: Runtime, tenants: TenantFactory, clock: ManualClock
) -> None:
    tenant = await tenants.create()
    principal = Principal(tenant_id=tenant.tenant_id, scopes=frozenset({"jobs:write"}))
    app = create_app(runtime=runtime)
    admission: AdmissionControl = app.state.admission
    assert not isinstance(runtime.dispatcher, OutboxDispatcher)
    async with asgi_client(app) as client:
        # The first job reads the cold tenant's state, the second is admitted from memory:
        # the tenant is active (the keeper refreshes it), the queue holds two messages.
        for _ in range(2):
            response = await client.post("/v1/jobs", json=EVENT, headers=auth(tenant.api_key))
            assert response.status_code == 202, response.text
        # The background sampler and keeper stop: a round of theirs racing the recorded
        # ticks would make them skip a read (it is fresh, or being read right now).
        await admission.close()
        empty = await _tick(runtime, admission, clock)
        await _add_backlog(runtime, principal)
        backlog = await _tick(runtime, admission, clock)

    assert statement_shapes(empty, 100) == statement_shapes(backlog, 100)
    assert _unbounded(empty + backlog) == []
    if runtime.engine.dialect.name == "sqlite":  # and each reads through an index
        assert await _full_scans(runtime, backlog) == []
    # The samplers saw the backlog through the counters.
    assert admission.quota.estimate(tenant.tenant_id) >= BACKLOG
    assert admission.depth.queues[QUEUE].messages >= BACKLOG


async def test_a_depth_sample_reads_every_queue_at_once(
    runtime: Runtime, tenants: TenantFactory
) -> None:
    """The depth sampler runs every second on the gateway's event loop, beside requests:
    one read of the counter rows for all queues, plus the oldest message of each non-empty
    one, not a transaction per queue (which stalled requests for milliseconds each second)."""
    tenant = await tenants.create()
    app = create_app(runtime=runtime)
    admission: AdmissionControl = app.state.admission
    async with asgi_client(app) as client:
        response = await client.post("/v1/jobs", json=EVENT, headers=auth(tenant.api_key))
        assert response.status_code == 202, response.text
        await admission.close()
        queues = list(admission.depth.queues)
        assert len(queues) > 3
        with count_statements(runtime.engine) as statements:
            await admission.depth.refresh()
    flat = [_flat(s) for s in statements]
    assert sum("from row_counter" in s for s in flat) == 1, flat
    oldest = "order by queue_message.enqueued_ms limit"  # one non-empty queue
    assert sum(oldest in s for s in flat) == 1, flat
    assert sum(s.startswith("begin") for s in flat) <= 1, flat
    assert admission.depth.queues[QUEUE].messages == 1
    assert all(admission.depth.queues[q].messages == 0 for q in queues if q != QUEUE)
