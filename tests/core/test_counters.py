"""The trigger-kept row counters equal the real counts after what a running system does
(accept, batch, consumer acks and retries, dead letters, cancel, retry of a dead job, purge,
retention expiry, outbox publishing), and `jobgate db recount` repairs them.

On SQLite and, with JOBGATE_DATABASE_URL, on PostgreSQL (statement-level triggers there).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli.db import recount_all
from app.consumer.registry import HandlerRegistry, JobContext, PermanentFailure
from app.core import counters
from app.core.counters import CountedRows
from app.core.db import table_of
from app.jobs.counters import UNFINISHED_JOBS, count_unfinished
from app.jobs.models import FINISHED_STATUSES, Job, JobStatus
from app.jobs.payloads import AnalyticsEventPayload
from app.outbox import service as outbox_service
from app.outbox.counters import UNPUBLISHED
from app.outbox.models import OutboxMessage
from app.queues.base import OutgoingMessage
from app.queues.counters import QUEUE_MESSAGES
from app.queues.models import QueueMessage
from app.tenants import service as tenants_service
from tests.consumer.conftest import DLQ, QUEUE, Harness, MakeHarness, make_harness
from tests.factories import auth
from tests.support.servers import jobgate_env, run_jobgate_async

__all__ = ["make_harness"]  # the fixture, shared with the consumer's tests

pytestmark = pytest.mark.asyncio

_jobs, _messages, _outbox = table_of(Job), table_of(QueueMessage), table_of(OutboxMessage)
KINDS = ("ok", "flaky", "broken", "bad")
ALL = [UNFINISHED_JOBS, QUEUE_MESSAGES, UNPUBLISHED]


async def _real(session: AsyncSession) -> dict[str, dict[str, tuple[int, int]]]:
    """What the counters should say, counted from the rows."""
    unfinished = [s.value for s in JobStatus if s not in FINISHED_STATUSES]
    jobs = await session.execute(
        select(_jobs.c.tenant_id, func.count())
        .where(_jobs.c.status.in_(unfinished))
        .group_by(_jobs.c.tenant_id)
    )
    messages = await session.execute(
        select(_messages.c.queue, func.count(), func.sum(_messages.c.size_bytes)).group_by(
            _messages.c.queue
        )
    )
    outbox = await session.execute(
        select(_outbox.c.queue, func.count(), func.sum(_outbox.c.size_bytes))
        .where(_outbox.c.published_at.is_(None))
        .group_by(_outbox.c.queue)
    )
    return {
        UNFINISHED_JOBS.kind: {str(k): (int(n), 0) for k, n in jobs.all()},
        QUEUE_MESSAGES.kind: {str(k): (int(n), int(b)) for k, n, b in messages.all()},
        UNPUBLISHED.kind: {str(k): (int(n), int(b)) for k, n, b in outbox.all()},
    }


async def _counted(session: AsyncSession, specs: list[CountedRows]) -> dict[str, Any]:
    result = {}
    for spec in specs:
        totals = await counters.totals(session, spec.kind)
        # A key whose rows are all gone keeps a zero counter row: the same as no row.
        result[spec.kind] = {key: value for key, value in totals.items() if value != (0, 0)}
    return result


async def _assert_exact(h: Harness) -> dict[str, Any]:
    async with h.runtime.sessionmaker() as session:
        real, counted = await _real(session), await _counted(session, ALL)
        await session.commit()
    assert counted == real
    return real


def _registry() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("analytics-event", AnalyticsEventPayload)
    async def mixed(ctx: JobContext[AnalyticsEventPayload]) -> None:
        kind = ctx.payload.properties.get("kind", "ok")
        if kind == "bad":
            raise PermanentFailure("bad input")
        if kind == "broken" or (kind == "flaky" and ctx.attempt == 1):
            raise RuntimeError("downstream 503")

    return registry


async def _operator(h: Harness) -> dict[str, str]:
    async with h.runtime.sessionmaker() as session:
        key, _ = await tenants_service.create_operator_key(session, name="ops")
        await session.commit()
    return auth(key)


async def test_counters_equal_the_rows_after_a_realistic_mix(make_harness: MakeHarness) -> None:
    h = await make_harness(
        _registry(),
        tenants=("a", "b"),
        max_batch_size=100,
        max_retries=1,
        retry_delay=5,
        settings_update={"breaker": {"threshold": 1000}},
    )
    # Accept: single jobs, a batch, a keyed job and its repeat.
    for n in range(8):
        await h.submit("a", kind=KINDS[n % 4])
    batch = [{"type": "analytics-event", "name": "e", "properties": {"kind": k}} for k in KINDS]
    response = await h.client.post(
        "/v1/jobs/batch", json={"jobs": batch * 5}, headers=auth(h.keys["b"])
    )
    assert response.status_code == 202, response.text
    keyed = {"type": "analytics-event", "name": "k", "idempotency_key": "once"}
    for expected in (202, 200):
        response = await h.client.post("/v1/jobs", json=keyed, headers=auth(h.keys["a"]))
        assert response.status_code == expected, response.text
    real = await _assert_exact(h)
    assert real[UNFINISHED_JOBS.kind] == {h.tenant_ids["a"]: (9, 0), h.tenant_ids["b"]: (20, 0)}

    # The consumer: acks, retries, a permanent failure; then dead letters.
    await h.consumer.run_once()
    await _assert_exact(h)
    h.clock.advance(seconds=5)
    await h.consumer.run_once()
    real = await _assert_exact(h)
    assert real[QUEUE_MESSAGES.kind][DLQ][0] > 0

    # Cancel a delayed job; retry a dead one (unfinished again, a new message).
    delayed = {"type": "analytics-event", "name": "later", "delay_seconds": 600}
    response = await h.client.post("/v1/jobs", json=delayed, headers=auth(h.keys["a"]))
    job_id = response.json()["id"]
    cancel = await h.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(h.keys["a"]))
    assert cancel.status_code == 200, cancel.text
    async with h.runtime.sessionmaker() as session:
        dead = (
            await session.execute(
                select(_jobs.c.id, _jobs.c.tenant_id).where(_jobs.c.status == "dead")
            )
        ).first()
        await session.commit()
    assert dead is not None
    tenant = "a" if dead.tenant_id == h.tenant_ids["a"] else "b"
    retried = await h.client.post(f"/v1/jobs/{dead.id}/retry", headers=auth(h.keys[tenant]))
    assert retried.status_code == 202, retried.text
    await _assert_exact(h)

    # Purge the dead letter queue and the queue (its waiting jobs are cancelled).
    ops = await _operator(h)
    for name in (DLQ, QUEUE):
        purged = await h.client.post(
            f"/v1/admin/queues/{name}/purge", json={"confirm": name}, headers=ops
        )
        assert purged.status_code == 200, purged.text
    await _assert_exact(h)

    # Retention: messages older than the queue's retention period are deleted by the next
    # call that applies time.
    for _ in range(3):
        await h.submit("b", kind="ok")
    retention = h.runtime.topology.queues[QUEUE].message_retention_period
    h.clock.advance(seconds=retention + 1)
    await h.runtime.queue_engine.metrics(QUEUE)
    real = await _assert_exact(h)
    assert QUEUE not in real[QUEUE_MESSAGES.kind]

    # What admission reads is the same number.
    async with h.runtime.sessionmaker() as session:
        for name in ("a", "b"):
            expected = real[UNFINISHED_JOBS.kind].get(h.tenant_ids[name], (0, 0))[0]
            assert await count_unfinished(session, h.tenant_ids[name]) == expected
        await session.commit()


async def test_outbox_rows_are_counted_until_published(make_harness: MakeHarness) -> None:
    h = await make_harness(_registry())
    now = h.clock.now_ms()

    async with h.runtime.sessionmaker() as session:
        for n in range(5):
            message = OutgoingMessage(body={"job_id": f"j{n}", "n": n})
            await outbox_service.stage(session, QUEUE, [message], now_ms=now)
        await session.commit()
    assert (await outbox_service.pending_by_queue(h.runtime.sessionmaker))[QUEUE][0] == 5
    async with h.runtime.sessionmaker() as session:
        first_two = select(_outbox.c.id).order_by(_outbox.c.id).limit(2).scalar_subquery()
        await session.execute(
            _outbox.update().where(_outbox.c.id.in_(first_two)).values(published_at=func.now())
        )
        newest = select(func.max(_outbox.c.id)).scalar_subquery()
        await session.execute(_outbox.delete().where(_outbox.c.id == newest))
        await session.commit()
    real = await _assert_exact(h)
    assert real[UNPUBLISHED.kind][QUEUE][0] == 2


async def test_recount_repairs_counters_a_manual_edit_broke(
    make_harness: MakeHarness, database: tuple[str, str | None]
) -> None:
    h = await make_harness(_registry(), tenants=("a",))
    for _ in range(4):
        await h.submit("a")
    async with h.runtime.sessionmaker() as session:
        await session.execute(text("UPDATE row_counter SET row_count = row_count + 7"))
        await session.execute(
            text("DELETE FROM row_counter WHERE kind = :kind"), {"kind": QUEUE_MESSAGES.kind}
        )
        await session.commit()
    async with h.runtime.sessionmaker() as session:
        assert await _counted(session, ALL) != await _real(session)
        await session.commit()

    async with h.runtime.sessionmaker() as session:
        await recount_all(session, h.runtime.settings)
        await session.commit()
    await _assert_exact(h)

    # The command an operator runs, in its own process.
    async with h.runtime.sessionmaker() as session:
        await session.execute(text("UPDATE row_counter SET row_count = row_count + 3"))
        await session.commit()
    url, schema = database
    await run_jobgate_async("db", "recount", env=jobgate_env(url, schema=schema))
    real = await _assert_exact(h)
    assert real[UNFINISHED_JOBS.kind] == {h.tenant_ids["a"]: (4, 0)}


async def test_concurrent_writers_keep_them_exact(make_harness: MakeHarness) -> None:
    """Producers and consumers on connections of their own (several processes' worth on
    PostgreSQL: each backend writes its own counter shard), interleaving their commits."""
    h = await make_harness(_registry())
    engine = h.runtime.queue_engine
    queues = [QUEUE, "email-sending"]

    async def produce(queue: str) -> None:
        for n in range(10):
            await engine.send_batch(queue, [OutgoingMessage(body={"n": n, "q": queue})] * 20)

    async def consume(queue: str) -> None:
        for _ in range(15):
            pulled = await engine.pull(queue, batch_size=10)
            leases = [m.lease_id for m in pulled.messages]
            await engine.ack(queue, acks=leases[::2])

    await asyncio.gather(*(produce(q) for q in queues * 2), *(consume(q) for q in queues))
    real = await _assert_exact(h)
    assert sum(count for count, _ in real[QUEUE_MESSAGES.kind].values()) > 0
    if h.runtime.engine.dialect.name == "postgresql":
        async with h.runtime.sessionmaker() as session:
            shards = await session.execute(
                text("SELECT COUNT(DISTINCT shard) FROM row_counter WHERE kind = :kind"),
                {"kind": QUEUE_MESSAGES.kind},
            )
            assert shards.scalar_one() > 1  # the backends spread over shards
            await session.commit()


async def test_no_counted_condition_is_an_in_list() -> None:
    # In a SQLite trigger an IN list is rebuilt on every firing (~100 us a row, measured on
    # the consumer's settle); the same test as an OR chain costs next to nothing.
    for spec in ALL:
        assert spec.condition is None or " IN (" not in spec.condition.upper(), spec.kind


async def test_migrated_triggers_are_the_ones_the_code_defines(runtime: Any) -> None:
    """A migrated database (upgrades included) counts with today's trigger definitions."""
    async with runtime.sessionmaker() as session:
        dialect = session.get_bind().dialect.name
        for spec in ALL:
            if dialect == "sqlite":
                rows = await session.execute(
                    text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
                    {"t": spec.table},
                )
                found = {sql for (sql,) in rows if f"counter_{spec.kind}_" in sql}
                assert found == set(counters.create_ddl(spec, "sqlite"))
            else:
                rows = await session.execute(
                    text(
                        "SELECT prosrc FROM pg_proc WHERE proname = :name "
                        "AND pronamespace = current_schema()::regnamespace"
                    ),
                    {"name": spec.trigger("row")},
                )
                sources = [source for (source,) in rows]
                assert sources, spec.kind
                assert all(f"IF {spec.counts('OLD')} THEN" in s for s in sources)
        await session.commit()
