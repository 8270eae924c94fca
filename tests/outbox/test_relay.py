"""The outbox relay over a real queue backend (the local engine on the test database)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime, build_runtime
from app.core.clock import ManualClock
from app.jobs.dispatchers import OutboxDispatcher
from app.jobs.models import Job, JobEvent
from app.main import create_app
from app.outbox.models import OutboxMessage
from app.outbox.relay import OutboxRelay, plan_batches
from app.queues.base import OutgoingMessage, QueueBackend, QueueMetrics
from app.queues.errors import QueueUnavailable
from app.settings import Settings
from app.tenants.schemas import Principal
from tests.factories import TenantFactory, auth
from tests.outbox.conftest import job_and_events, make_relay, pad_outbox_row, statuses, submit
from tests.support.asgi import asgi_client


class FlakyBackend:
    """The real local engine behind a switch that makes publishes fail (an outage)."""

    def __init__(self, inner: QueueBackend) -> None:
        self.inner = inner
        self.down = False
        self.calls = 0
        self.failure: Exception = QueueUnavailable("Cloudflare Queues unreachable: ConnectError")

    async def send_batch(
        self, queue: str, messages: Sequence[OutgoingMessage], *, delay_seconds: int | None = None
    ) -> QueueMetrics:
        self.calls += 1
        if self.down:
            raise self.failure
        return await self.inner.send_batch(queue, messages, delay_seconds=delay_seconds)


def _relay(runtime: Runtime, backend: object, **kwargs: int) -> OutboxRelay:
    return make_relay(runtime, backend, runtime.clock, **kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_jobs_are_accepted_then_queued_once_published(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    relay = _relay(runtime, runtime.queue_engine, linger_ms=1000)
    dispatcher = OutboxDispatcher(clock, wake=relay.wake)
    ids = await submit(runtime, principal, dispatcher, 3)
    assert await statuses(runtime) == {"accepted": 3}
    assert await relay.relay_once() == 0  # lingering for more
    clock.advance(ms=1000)
    assert await relay.relay_once() == 3
    assert relay.stats.publish_requests == 1
    assert await statuses(runtime) == {"queued": 3}
    pulled = await runtime.queue_engine.pull("prestashop-sync", batch_size=10)
    assert sorted(m.body["job_id"] for m in pulled.messages) == sorted(ids)
    async with runtime.sessionmaker() as session:
        events = (
            (
                await session.execute(
                    select(JobEvent.status).where(JobEvent.job_id == ids[0]).order_by(JobEvent.id)
                )
            )
            .scalars()
            .all()
        )
    assert events == ["accepted", "queued"]
    assert await relay.backlog() == 0


@pytest.mark.asyncio
async def test_a_full_batch_is_published_without_lingering(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    relay = _relay(runtime, runtime.queue_engine, linger_ms=60_000)
    dispatcher = OutboxDispatcher(clock, wake=relay.wake)
    await submit(runtime, principal, dispatcher, 250)
    # Two full batches go at once; the partial third waits to fill up or to linger out.
    assert await relay.relay_once() == 200
    assert await relay.relay_once() == 0
    assert relay.stats.publish_requests == 2
    assert await relay.backlog() == 50
    clock.advance(ms=60_000)
    assert await relay.relay_once() == 50
    assert relay.stats.messages_per_request == pytest.approx(250 / 3)


@pytest.mark.asyncio
async def test_outage_backs_off_and_every_row_is_published_exactly_once(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    backend = FlakyBackend(runtime.queue_engine)
    relay = _relay(runtime, backend, linger_ms=0)
    dispatcher = OutboxDispatcher(clock, wake=relay.wake)
    backend.down = True
    ids = await submit(runtime, principal, dispatcher, 120)
    assert await relay.relay_once() == 0
    assert relay.stats.failed_requests == 2
    # Backing off: nothing is due yet, so no further calls.
    calls = backend.calls
    assert await relay.relay_once() == 0
    assert backend.calls == calls
    assert await statuses(runtime) == {"accepted": 120}
    backend.down = False
    clock.advance(seconds=61)
    assert await relay.relay_once() == 120
    pulled = await runtime.queue_engine.pull("prestashop-sync", batch_size=100)
    pulled2 = await runtime.queue_engine.pull("prestashop-sync", batch_size=100)
    job_ids = [m.body["job_id"] for m in pulled.messages + pulled2.messages]
    assert sorted(job_ids) == sorted(ids)
    assert await statuses(runtime) == {"queued": 120}
    async with runtime.sessionmaker() as session:
        attempts = (await session.execute(select(func.max(OutboxMessage.attempts)))).scalar_one()
    assert attempts == 1


@pytest.mark.asyncio
async def test_remaining_delay_is_kept(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    relay = _relay(runtime, runtime.queue_engine, linger_ms=0)
    dispatcher = OutboxDispatcher(clock, wake=relay.wake)
    await submit(runtime, principal, dispatcher, 1, delay_seconds=60)
    clock.advance(seconds=20)
    assert await relay.relay_once() == 1
    clock.advance(seconds=39)
    assert (await runtime.queue_engine.pull("prestashop-sync")).messages == []
    clock.advance(seconds=1)
    assert len((await runtime.queue_engine.pull("prestashop-sync")).messages) == 1


@pytest.mark.asyncio
async def test_concurrent_relays_never_publish_a_row_twice(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    relays = [_relay(runtime, runtime.queue_engine, linger_ms=0) for _ in range(4)]
    dispatcher = OutboxDispatcher(clock)
    ids = await submit(runtime, principal, dispatcher, 300)
    totals = await asyncio.gather(*(r.relay_once() for r in relays))
    while (more := await relays[0].relay_once()) > 0:
        totals.append(more)
    assert sum(totals) == 300
    seen: list[str] = []
    while batch := (await runtime.queue_engine.pull("prestashop-sync", batch_size=100)).messages:
        seen.extend(m.body["job_id"] for m in batch)
    assert sorted(seen) == sorted(ids)


@pytest.mark.asyncio
async def test_crashed_claim_is_picked_up_after_it_lapses(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    relay = _relay(runtime, runtime.queue_engine, linger_ms=0, claim_ttl_ms=5000)
    await submit(runtime, principal, OutboxDispatcher(clock), 5)
    claimed = await relay._claim(clock.now_ms())  # a relay that dies right after claiming
    assert len(claimed) == 5
    assert await relay.relay_once() == 0
    clock.advance(ms=5000)
    assert await relay.relay_once() == 5


def test_plan_batches_respects_count_and_bytes() -> None:
    def row(queue: str, size: int) -> OutboxMessage:
        return OutboxMessage(
            job_id="j", queue=queue, body="{}", size_bytes=size, created_ms=0, available_at_ms=0
        )

    rows = [row("a", 1000)] * 150 + [row("b", 100_000)] * 5
    batches = plan_batches(rows)
    assert [len(b.rows) for b in batches] == [100, 50, 2, 2, 1]
    assert [b.closed for b in batches] == [True, False, True, True, False]
    assert all(sum(r.size_bytes for r in b.rows) <= 256_000 for b in batches)


@pytest.mark.asyncio
async def test_gateway_answers_202_accepted_while_cloudflare_is_unreachable(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> None:
    unreachable = settings.updated(
        queues={"backend": "cloudflare"},
        cloudflare={"api_token": "token", "api_base_url": "http://127.0.0.1:9/client/v4"},
    )
    runtime = build_runtime(unreachable, clock=clock, engine=db_engine)
    assert isinstance(runtime.dispatcher, OutboxDispatcher)
    tenant = await TenantFactory(runtime).create()
    async with asgi_client(create_app(runtime=runtime)) as client:
        response = await client.post(
            "/v1/jobs",
            json={"type": "sync-single-order", "orderId": 42},
            headers=auth(tenant.api_key),
        )
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
    assert [row.job_id for row in rows] == [response.json()["id"]]
    await runtime.backend.close()
    await runtime.committer.close()  # its writer's connection


@pytest.mark.asyncio
async def test_a_refused_row_is_isolated_and_the_rest_of_its_batch_published(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    relay = _relay(runtime, runtime.queue_engine, linger_ms=0)
    ids = await submit(runtime, principal, OutboxDispatcher(clock), 10)
    bad = ids[3]
    await pad_outbox_row(runtime, bad, 128_000)
    assert await relay.relay_once() == 9
    # Bisection: the whole batch, then halves down to the bad row (at most 2 per level).
    assert relay.stats.publish_requests <= 1 + 2 * math.ceil(math.log2(10))
    assert relay.stats.failed_messages == 1
    assert await statuses(runtime) == {"queued": 9, "failed": 1}
    job, events = await job_and_events(runtime, bad)
    assert job.status == "failed"
    assert job.last_error is not None
    assert "code 10204" in job.last_error
    assert job.finished_at is not None
    assert [e.status for e in events] == ["accepted", "failed"]
    assert events[-1].detail == job.last_error
    pulled = await runtime.queue_engine.pull("prestashop-sync", batch_size=100)
    assert sorted(m.body["job_id"] for m in pulled.messages) == sorted(set(ids) - {bad})
    # The refused row is gone: nothing left to retry, nothing counted as backlog.
    assert await relay.backlog() == 0
    clock.advance(seconds=3600)
    requests = relay.stats.publish_requests
    assert await relay.relay_once() == 0
    assert relay.stats.publish_requests == requests


@pytest.mark.asyncio
async def test_every_row_refused_fails_every_job(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    relay = _relay(runtime, runtime.queue_engine, linger_ms=0)
    ids = await submit(runtime, principal, OutboxDispatcher(clock), 3)
    for job_id in ids:
        await pad_outbox_row(runtime, job_id, 128_000)
    assert await relay.relay_once() == 0
    assert await statuses(runtime) == {"failed": 3}
    assert relay.stats.failed_messages == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "failure",
    [
        QueueUnavailable("Cloudflare Queues unreachable: ConnectError"),
        RuntimeError("a bug in a client library"),  # unforeseen: still capped
    ],
)
async def test_retryable_failures_stop_at_the_attempt_cap(
    runtime: Runtime, principal: Principal, clock: ManualClock, failure: Exception
) -> None:
    backend = FlakyBackend(runtime.queue_engine)
    backend.down = True
    backend.failure = failure
    relay = _relay(runtime, backend, linger_ms=0, max_attempts=3, max_backoff_ms=5000)
    [job_id] = await submit(runtime, principal, OutboxDispatcher(clock), 1)
    for attempt in range(1, 4):
        assert await relay.relay_once() == 0
        assert backend.calls == attempt
        status = "failed" if attempt == 3 else "accepted"
        assert await statuses(runtime) == {status: 1}
        clock.advance(ms=5000)  # past the (capped) backoff
    job, events = await job_and_events(runtime, job_id)
    assert job.last_error is not None
    assert "after 3 attempts" in job.last_error
    assert "code 15000" in job.last_error
    assert [e.status for e in events] == ["accepted", "failed"]
    # The relay has stopped trying, even once the backend is back.
    backend.down = False
    clock.advance(seconds=3600)
    assert await relay.relay_once() == 0
    assert backend.calls == 3
    assert await relay.backlog() == 0


@pytest.mark.asyncio
async def test_a_cancelled_job_is_left_alone_when_its_row_is_given_up(
    runtime: Runtime, principal: Principal, clock: ManualClock
) -> None:
    relay = _relay(runtime, runtime.queue_engine, linger_ms=0)
    [job_id] = await submit(runtime, principal, OutboxDispatcher(clock), 1)
    await pad_outbox_row(runtime, job_id, 128_000)
    async with runtime.sessionmaker() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(status="cancelled"))  # type: ignore[arg-type]
        await session.commit()
    assert await relay.relay_once() == 0
    job, events = await job_and_events(runtime, job_id)
    assert job.status == "cancelled"
    assert job.last_error is None
    assert [e.status for e in events] == ["accepted"]
    assert await relay.backlog() == 0


@pytest.mark.asyncio
async def test_oldest_unpublished_age_is_exported_on_metrics(
    runtime: Runtime, principal: Principal, clock: ManualClock, client: httpx.AsyncClient
) -> None:
    def gauge(text: str) -> float:
        [line] = [
            line
            for line in text.splitlines()
            if line.startswith("jobgate_outbox_oldest_unpublished_age_seconds ")
        ]
        return float(line.split()[1])

    backend = FlakyBackend(runtime.queue_engine)
    backend.down = True
    relay = _relay(runtime, backend, linger_ms=0)
    await submit(runtime, principal, OutboxDispatcher(clock), 2)
    clock.advance(seconds=42)
    assert await relay.relay_once() == 0  # measures, then fails: the rows back off
    assert gauge((await client.get("/metrics")).text) == pytest.approx(42.0)
    clock.advance(seconds=3)
    await relay.relay_once()  # measured under 5 s ago: not again
    assert gauge((await client.get("/metrics")).text) == pytest.approx(42.0)
    clock.advance(seconds=3)
    await relay.relay_once()
    assert gauge((await client.get("/metrics")).text) == pytest.approx(48.0)
    backend.down = False
    clock.advance(seconds=120)
    assert await relay.relay_once() == 2
    assert await relay.measure_age() == 0.0
    assert gauge((await client.get("/metrics")).text) == 0.0
