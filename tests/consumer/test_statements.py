"""The consumer's job-store work per batch is a constant number of statements."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.consumer.registry import HandlerRegistry, JobContext, PermanentFailure
from app.jobs.payloads import AnalyticsEventPayload
from app.queues.base import OutgoingMessage
from tests.consumer.conftest import DLQ, QUEUE, MakeHarness
from tests.factories import auth
from tests.support.statements import count_statements, statement_shapes

pytestmark = pytest.mark.asyncio
TYPE = "analytics-event"
KINDS = ("ok", "flaky", "broken", "bad")  # one of each per group of four jobs
# Rows of queue_message read so far in this transaction (PostgreSQL's own statistics).
_ROWS_READ = text(
    "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
    "FROM pg_stat_xact_user_tables WHERE relname = 'queue_message' "
    "AND schemaname = current_schema()"
)


class TestStatementsPerBatch:
    async def _rounds(self, make_harness: MakeHarness, db_engine: AsyncEngine, size: int) -> Any:
        registry = HandlerRegistry()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def mixed(ctx: JobContext[AnalyticsEventPayload]) -> None:
            kind = ctx.payload.properties["kind"]
            if kind == "bad":
                raise PermanentFailure("bad input")
            if kind == "broken" or (kind == "flaky" and ctx.attempt == 1):
                raise RuntimeError("downstream 503")

        tenant = f"t{size}"
        h = await make_harness(
            registry,
            tenants=(tenant,),
            max_batch_size=100,
            max_retries=1,
            retry_delay=5,
            # No heartbeat inside the measured cycles; the breaker stays out of the way.
            settings_update={
                "consumer": {"heartbeat_ms": 3_600_000},
                "breaker": {"threshold": 1000},
            },
        )
        jobs = [
            {"type": TYPE, "name": "e", "properties": {"kind": KINDS[i % len(KINDS)]}}
            for i in range(size)
        ]
        response = await h.client.post(
            "/v1/jobs/batch", json={"jobs": jobs}, headers=auth(h.keys[tenant])
        )
        assert response.status_code == 202, response.text
        # First deliveries: succeeded, retry (x2: flaky and broken), failed.
        with count_statements(db_engine) as first:
            report = await h.consumer.run_once()
        quarter = size // len(KINDS)
        assert report.counts == {"succeeded": quarter, "retry": 2 * quarter, "failed": quarter}
        h.clock.advance(seconds=5)
        dead_letters = len(await h.messages(DLQ))
        # Second deliveries (open attempts are looked for): succeeded and dead.
        with count_statements(db_engine) as second:
            report = await h.consumer.run_once()
        assert report.counts == {"succeeded": quarter, "dead": quarter}
        assert len(await h.messages(DLQ)) == dead_letters + quarter
        return first, second

    async def test_constant_whatever_the_batch_size(
        self, make_harness: MakeHarness, db_engine: AsyncEngine
    ) -> None:
        small = await self._rounds(make_harness, db_engine, 4)
        large = await self._rounds(make_harness, db_engine, 80)
        for few, many in zip(small, large, strict=True):
            assert len(few) == len(many), (statement_shapes(few, 70), statement_shapes(many, 70))
        # Far fewer than one statement per job (19-20 on SQLite: two transactions per batch,
        # one leasing and starting it, one settling and acknowledging it).
        assert all(len(stmts) < 22 for stmts in large), [len(s) for s in large]


class TestStatementsPerPull:
    """No statement whose cost grows with the backlog: a pull reads the head of the queue
    through its index, never counts or sums the queue."""

    async def _seed(self, h: Any, count: int) -> None:
        engine = h.runtime.queue_engine
        message = OutgoingMessage(body={"job_id": "x"})
        async with h.runtime.sessionmaker() as session:
            for _ in range(count // 100):
                await engine.stage(session, QUEUE, [message] * 100)
            await session.commit()

    async def _pull(self, h: Any, db_engine: AsyncEngine) -> list[str]:
        worker = h.consumer.workers[QUEUE]
        with count_statements(db_engine) as statements:
            await worker.fill()
        await worker.release()  # hand the leases back: the next pull starts from scratch
        await h.runtime.queue_engine.purge(QUEUE)
        return statements

    async def test_a_pull_costs_the_same_whatever_the_backlog(
        self, make_harness: MakeHarness, db_engine: AsyncEngine
    ) -> None:
        registry = HandlerRegistry()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def noop(ctx: JobContext[AnalyticsEventPayload]) -> None:
            pass

        h = await make_harness(
            registry,
            max_batch_size=100,
            settings_update={"consumer": {"heartbeat_ms": 3_600_000}},
        )
        empty = await self._pull(h, db_engine)
        await self._seed(h, 100)
        one_batch = await self._pull(h, db_engine)
        await self._seed(h, 10_000)
        deep = await self._pull(h, db_engine)
        assert len(deep) == len(one_batch), (
            statement_shapes(one_batch, 70),
            statement_shapes(deep, 70),
        )
        assert statement_shapes(deep, 70) == statement_shapes(one_batch, 70)
        # An empty queue leases nothing: the same reads, no lease update.
        assert set(statement_shapes(empty, 70)) <= set(statement_shapes(deep, 70))
        for statement in [*empty, *one_batch, *deep]:
            flat = " ".join(statement.split()).lower()
            assert "count(" not in flat, statement
            assert "sum(" not in flat, statement

    async def _postgres_harness(self, make_harness: MakeHarness, db_engine: AsyncEngine) -> Any:
        if db_engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL's planner (JOBGATE_DATABASE_URL=postgresql://...)")
        registry = HandlerRegistry()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def noop(ctx: JobContext[AnalyticsEventPayload]) -> None:
            pass

        return await make_harness(registry, max_batch_size=100)

    async def test_a_pull_reads_the_head_not_the_backlog_on_postgresql(
        self, make_harness: MakeHarness, db_engine: AsyncEngine
    ) -> None:
        """PostgreSQL plans by statistics, which lag a burst: analyzed while the queue was
        empty, they make the whole queue look like a few rows. A pull must still read only
        the head of the queue (rows fetched in its transaction), not every visible message."""
        h = await self._postgres_harness(make_harness, db_engine)
        engine = h.runtime.queue_engine
        message = OutgoingMessage(body={"job_id": "x"})
        async with h.runtime.sessionmaker() as session:
            await engine.stage(session, DLQ, [message] * 100)
            await session.commit()
        async with db_engine.connect() as connection:
            await connection.execute(text("ANALYZE queue_message"))  # QUEUE has no rows
        fetched = {}
        for backlog in (200, 5_000):
            await self._seed(h, backlog)
            async with h.runtime.sessionmaker() as session:
                before = (await session.execute(_ROWS_READ)).scalar_one()
                leased = await engine.lease(
                    session, QUEUE, batch_size=100, visibility_timeout_ms=30_000
                )
                fetched[backlog] = (await session.execute(_ROWS_READ)).scalar_one() - before
                await session.rollback()
            assert len(leased) == 100
            await engine.purge(QUEUE)
        assert fetched[5_000] <= 2 * fetched[200], fetched

    async def test_stats_read_the_expired_and_the_oldest_message_only_on_postgresql(
        self, make_harness: MakeHarness, db_engine: AsyncEngine
    ) -> None:
        """Every pull, send and stats call first deletes the messages past retention, and
        stats (the admission sampler's too) read the oldest message's time. With statistics
        taken while the queue was empty, that must still read the expired messages (none
        here) and one index entry, not the 5,000 messages the queue holds."""
        h = await self._postgres_harness(make_harness, db_engine)
        engine = h.runtime.queue_engine
        async with h.runtime.sessionmaker() as session:
            await engine.stage(session, DLQ, [OutgoingMessage(body={"job_id": "x"})])
            await session.commit()
        async with db_engine.connect() as connection:
            await connection.execute(text("ANALYZE queue_message"))  # one row, of another queue
        await self._seed(h, 5_000)
        async with h.runtime.sessionmaker() as session:
            before = (await session.execute(_ROWS_READ)).scalar_one()
            await engine.stats(QUEUE, session=session)
            fetched = (await session.execute(_ROWS_READ)).scalar_one() - before
            await session.rollback()
        assert fetched < 500, fetched
