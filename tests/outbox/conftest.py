"""Shared by the outbox tests: a tenant's principal, submitting jobs through the real job
service, reading job statuses and events."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest_asyncio
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.core.clock import Clock, to_datetime
from app.jobs import lifecycle
from app.jobs import service as jobs_service
from app.jobs.dispatchers import OutboxDispatcher
from app.jobs.models import Job, JobEvent
from app.jobs.payloads import SyncSingleOrderJob
from app.outbox.models import OutboxMessage
from app.outbox.relay import OutboxRelay
from app.queues.base import QueueBackend
from app.tenants.schemas import Principal
from tests.factories import TenantFactory


def make_relay(runtime: Runtime, backend: QueueBackend, clock: Clock, **kwargs: int) -> OutboxRelay:
    """A relay over the test database that moves job rows as the gateway's does."""
    return OutboxRelay(
        runtime.sessionmaker,
        backend,
        clock,
        on_published=lifecycle.outbox_published,
        on_failed=lifecycle.outbox_failed,
        **kwargs,  # type: ignore[arg-type]
    )


async def submit(
    runtime: Runtime, principal: Principal, dispatcher: OutboxDispatcher, count: int, **extra: int
) -> list[str]:
    ids = []
    for order_id in range(1, count + 1):
        async with runtime.sessionmaker() as session:
            [submitted] = await jobs_service.submit_jobs(
                session,
                principal=principal,
                requests=[
                    (SyncSingleOrderJob(type="sync-single-order", orderId=order_id, **extra), None)
                ],
                dispatcher=dispatcher,
                topology=runtime.topology,
                now=to_datetime(runtime.clock.now_ms()),
                idempotency_window=timedelta(days=1),
            )
            await session.commit()
        ids.append(submitted.job.id)
    return ids


async def statuses(runtime: Runtime) -> dict[str, int]:
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(select(Job.status, func.count()).group_by(Job.status))).all()
    return {str(status): int(count) for status, count in rows}


@pytest_asyncio.fixture
async def principal(tenants: TenantFactory) -> Principal:
    tenant = await tenants.create()
    return Principal(tenant_id=tenant.tenant_id, scopes=frozenset({"jobs:write"}))


async def pad_outbox_row(runtime: Runtime, job_id: str, pad_bytes: int) -> None:
    """Grow one stored message past what the queue accepts (the gateway would refuse it at
    the door; a row can still get there, e.g. written by an older version)."""
    async with runtime.sessionmaker() as session:
        row = (
            await session.execute(select(OutboxMessage).where(OutboxMessage.job_id == job_id))
        ).scalar_one()
        body = json.loads(row.body)
        body["payload"]["pad"] = "x" * pad_bytes
        row.body = json.dumps(body, separators=(",", ":"))
        row.size_bytes = len(row.body.encode())
        await session.commit()


async def job_and_events(runtime: Runtime, job_id: str) -> tuple[Job, list[JobEvent]]:
    async with runtime.sessionmaker() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        events = (
            (
                await session.execute(
                    select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)  # type: ignore[arg-type]
                )
            )
            .scalars()
            .all()
        )
    return job, list(events)
