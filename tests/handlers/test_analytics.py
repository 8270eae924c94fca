"""`analytics-event`: a batch is one INSERT; no job returns before its row commits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime
from app.consumer.registry import BatchOutcomes, InvalidPayload, registry
from app.core.clock import to_datetime
from app.handlers.models import AnalyticsEvent
from tests.handlers.conftest import MakeRun, Run
from tests.support.statements import count_statements

pytestmark = pytest.mark.asyncio


async def events(runtime: Runtime) -> list[AnalyticsEvent]:
    async with runtime.sessionmaker() as session:
        result = await session.execute(select(AnalyticsEvent).order_by(AnalyticsEvent.job_id))
        return list(result.scalars().all())


async def record(runs: list[Run]) -> BatchOutcomes | None:
    """One call of the batch handler with these runs' jobs, as the consumer makes it."""
    spec = registry.get("analytics-event")
    assert spec is not None
    assert spec.batch_func is not None
    return await spec.batch_func([run.ctx for run in runs])


async def test_a_batch_is_inserted_with_one_statement(
    runtime: Runtime, db_engine: AsyncEngine, tenant_id: str, make_run: MakeRun
) -> None:
    runs = [
        make_run(
            "analytics-event",
            {"name": "order.paid", "properties": {"n": i}, "occurredAt": "2026-03-01T10:00:00Z"},
            tenant_id=tenant_id,
        )
        for i in range(40)
    ]
    with count_statements(db_engine) as statements:
        assert await record(runs) is None
    assert len([s for s in statements if s.lstrip().upper().startswith("INSERT")]) == 1
    rows = await events(runtime)
    assert len(rows) == 40
    assert {row.properties["n"] for row in rows} == set(range(40))
    assert rows[0].occurred_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


async def test_each_call_returns_only_after_its_row_is_committed(
    runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    run = make_run("analytics-event", {"name": "signup"}, tenant_id=tenant_id)
    await run()  # a batch of one (the handler as a single handler)
    # A fresh session (another connection) sees the row as soon as the handler returned.
    rows = await events(runtime)
    assert [row.job_id for row in rows] == [run.ctx.job_id]
    assert rows[0].occurred_at == to_datetime(run.ctx.created_at_ms)


async def test_a_redelivered_event_is_not_inserted_twice(
    runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    first = make_run("analytics-event", {"name": "signup"}, tenant_id=tenant_id)
    await record([first])
    again = make_run(
        "analytics-event", {"name": "signup"}, tenant_id=tenant_id, job_id=first.ctx.job_id
    )
    other = make_run("analytics-event", {"name": "x"}, tenant_id=tenant_id)
    assert await record([again, other]) is None
    assert len(await events(runtime)) == 2


async def test_a_bad_event_fails_only_its_own_job(
    runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    good = make_run("analytics-event", {"name": "ok"}, tenant_id=tenant_id)
    # A tenant that does not exist violates the foreign key: the batch's INSERT fails.
    bad = make_run("analytics-event", {"name": "orphan"}, tenant_id="no-such-tenant")
    outcomes = await record([good, bad])
    assert outcomes is not None
    assert set(outcomes) == {bad.ctx.job_id}
    assert isinstance(outcomes[bad.ctx.job_id], Exception)
    assert [row.job_id for row in await events(runtime)] == [good.ctx.job_id]
    with pytest.raises(IntegrityError):
        await bad()  # alone, the handler raises: a transient failure, retried


async def test_a_bad_timestamp_fails_permanently(tenant_id: str, make_run: MakeRun) -> None:
    """A stored payload the model refuses never reaches the handler (one attempt, `failed`)."""
    with pytest.raises(InvalidPayload, match="occurredAt: Input should be a valid datetime"):
        await make_run(
            "analytics-event", {"name": "x", "occurredAt": "yesterday"}, tenant_id=tenant_id
        )()
