"""Query plans that must not grow with the data: PostgreSQL re-plans prepared statements as
tables grow, and a heartbeat finds its messages by primary key, not by reading the queue."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.clock import ManualClock
from app.core.db import create_sessionmaker
from app.jobs.lifecycle import load_jobs
from app.queues.base import OutgoingMessage
from app.queues.local import LocalQueueEngine
from app.queues.topology import DEFAULT_RETENTION_SECONDS, QueueSettings

pytestmark = pytest.mark.asyncio


async def test_statements_are_planned_with_their_parameters(db_engine: AsyncEngine) -> None:
    """asyncpg prepares every statement. PostgreSQL would switch one to a generic plan after
    five runs, costed on the tables as they were then, and keep it while they grow: the
    consumer's batch lookup kept a sequential scan of `job` planned on a near-empty table
    (200 ms a batch at 100k jobs). Nothing re-plans it where autovacuum lags or is off."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite plans every statement afresh")
    async with db_engine.connect() as conn:
        session = AsyncSession(bind=conn)
        for _ in range(10):
            await load_jobs(session, [uuid.uuid4().hex for _ in range(100)])
        rows = await conn.exec_driver_sql(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE cardinality(parameter_types) > 0 AND statement LIKE 'SELECT job.id%'"
        )
        plans = [(row.generic_plans, row.custom_plans) for row in rows]
        await conn.rollback()
    assert plans == [(0, 10)]


async def test_a_heartbeat_finds_its_messages_by_primary_key(
    db_engine: AsyncEngine, clock: ManualClock
) -> None:
    settings = QueueSettings(
        name="jobs",
        delivery_delay=0,
        message_retention_period=DEFAULT_RETENTION_SECONDS,
        max_retries=3,
        dead_letter_queue=None,
        retry_delay=0,
    )
    engine = LocalQueueEngine(create_sessionmaker(db_engine), {"jobs": settings}, clock=clock)
    # Enough of a backlog that reading the queue costs more than ten index probes.
    async with create_sessionmaker(db_engine)() as session:
        for _ in range(200):
            await engine.stage(session, "jobs", [OutgoingMessage(body={"n": 1})] * 100)
        await session.commit()
    leases = [m.lease_id for m in (await engine.pull("jobs", batch_size=10)).messages]

    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            sent.append((sql, params))

    event.listen(db_engine.sync_engine, "before_cursor_execute", record)
    try:
        extended = await engine.extend_leases("jobs", [*leases, "not-a-lease"], 60_000)
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", record)
    assert extended == set(leases)
    assert len(sent) == 1, sent
    sql, params = sent[0]
    sqlite = db_engine.dialect.name == "sqlite"
    async with db_engine.connect() as conn:
        # The driver's own SQL and parameters, as sent (the lock clause is not explainable
        # on SQLite, which never sends one).
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        rows = await conn.exec_driver_sql(explain + sql, params)
        plan = "\n".join(str(row[-1]) for row in rows)
    if sqlite:
        assert "(id=?)" in plan, plan
    else:
        assert "pk_queue_message" in plan, plan
    assert "queue=" not in plan.replace(" ", ""), plan
