"""`analytics-event`: concurrent jobs share one INSERT; no job returns before its row commits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.bootstrap import Runtime
from app.consumer.registry import InvalidPayload
from app.core.clock import to_datetime
from app.handlers.analytics import EventBatcher
from app.handlers.models import AnalyticsEvent
from tests.handlers.conftest import MakeRun

pytestmark = pytest.mark.asyncio


async def events(runtime: Runtime) -> list[AnalyticsEvent]:
    async with runtime.sessionmaker() as session:
        result = await session.execute(select(AnalyticsEvent).order_by(AnalyticsEvent.job_id))
        return list(result.scalars().all())


async def test_concurrent_events_are_inserted_in_one_batch(
    runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    runs = [
        make_run(
            "analytics-event",
            {"name": "order.paid", "properties": {"n": i}, "occurredAt": "2026-03-01T10:00:00Z"},
            tenant_id=tenant_id,
        )
        for i in range(40)
    ]
    await asyncio.gather(*(run() for run in runs))
    rows = await events(runtime)
    assert len(rows) == 40
    assert {row.properties["n"] for row in rows} == set(range(40))
    assert rows[0].occurred_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    batcher = runs[0].ctx.resources.state["app.handlers.analytics"]
    assert isinstance(batcher, EventBatcher)
    assert batcher.flushes == 1


async def test_each_call_returns_only_after_its_row_is_committed(
    runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    run = make_run("analytics-event", {"name": "signup"}, tenant_id=tenant_id)
    await run()
    # A fresh session (another connection) sees the row as soon as the handler returned.
    rows = await events(runtime)
    assert [row.job_id for row in rows] == [run.ctx.job_id]
    assert rows[0].occurred_at == to_datetime(run.ctx.created_at_ms)


async def test_a_redelivered_event_is_not_inserted_twice(
    runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    first = make_run("analytics-event", {"name": "signup"}, tenant_id=tenant_id)
    await first()
    again = make_run(
        "analytics-event", {"name": "signup"}, tenant_id=tenant_id, job_id=first.ctx.job_id
    )
    await asyncio.gather(again(), make_run("analytics-event", {"name": "x"}, tenant_id=tenant_id)())
    assert len(await events(runtime)) == 2


async def test_a_failed_batch_fails_every_job_in_it(
    runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    good = make_run("analytics-event", {"name": "ok"}, tenant_id=tenant_id)
    # A tenant that does not exist violates the foreign key: the whole INSERT fails.
    bad = make_run("analytics-event", {"name": "orphan"}, tenant_id="no-such-tenant")
    results = await asyncio.gather(good(), bad(), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)
    assert await events(runtime) == []
    await good()  # the retry of the good job succeeds on its own
    assert len(await events(runtime)) == 1


async def test_a_bad_timestamp_fails_permanently(tenant_id: str, make_run: MakeRun) -> None:
    """A stored payload the model refuses never reaches the handler (one attempt, `failed`)."""
    with pytest.raises(InvalidPayload, match="occurredAt: Input should be a valid datetime"):
        await make_run(
            "analytics-event", {"name": "x", "occurredAt": "yesterday"}, tenant_id=tenant_id
        )()
