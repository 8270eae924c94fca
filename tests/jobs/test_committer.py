"""Group commit: concurrent key-less submissions share one transaction."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from app.core.clock import to_datetime
from app.core.runtime import Runtime
from app.jobs.committer import GroupCommitter
from app.jobs.models import Job
from app.jobs.payloads import SyncSingleOrderJob
from app.jobs.service import PendingWrites, _build, _prepare
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


async def test_a_failing_group_fails_every_caller_and_stores_nothing(
    runtime: Runtime, tenants: TenantFactory
) -> None:
    tenant = await tenants.create()
    principal = Principal(tenant_id=tenant.tenant_id, scopes=frozenset({"jobs:write"}))
    committer = GroupCommitter(runtime.sessionmaker, runtime.dispatcher)
    now = to_datetime(runtime.clock.now_ms())

    def writes(queue: str) -> PendingWrites:
        prepared = _prepare(
            principal,
            SyncSingleOrderJob(type="sync-single-order", orderId=1),
            None,
            runtime.topology,
            None,
            None,
        )
        prepared.queue = queue
        return _build([prepared], [], principal.tenant_id, runtime.dispatcher.initial_status, now)[
            1
        ]

    # Two callers in one group: the second one's queue does not exist, so the group fails.
    results = await asyncio.gather(
        committer.write(writes("prestashop-sync")),
        committer.write(writes("no-such-queue")),
        return_exceptions=True,
    )
    assert all(isinstance(result, Exception) for result in results)
    assert await _count(runtime, Job) == 0
    # The committer keeps working after a failed group.
    await committer.write(writes("prestashop-sync"))
    assert await _count(runtime, Job) == 1
    await committer.close()
