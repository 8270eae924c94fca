"""An idle consumer starts new work as soon as it is committed, not at its next idle poll:
on SQLite it watches the write-ahead log, on PostgreSQL it listens for the notices of the
trigger on `queue_message` (one per queue)."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.consumer.registry import HandlerRegistry, JobContext
from app.consumer.wakeup import QueueNotices, StoreWatch
from app.jobs.payloads import AnalyticsEventPayload
from app.queues.base import OutgoingMessage
from app.settings import Settings
from tests.consumer.conftest import QUEUE, MakeHarness
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio
TYPE = "analytics-event"
# Idle polls this far apart: only a wake-up can start the job in time.
SLOW_POLL = {"consumer": {"poll_min_ms": 30_000, "poll_max_ms": 60_000}}


async def test_idle_consumer_runs_a_new_job_at_once(make_harness: MakeHarness) -> None:
    """The operator's consumer (no HTTP caller) and tenant a's job: it runs within seconds
    although the idle poll would come only after 30 s."""
    registry = HandlerRegistry()
    ran: list[str] = []

    @registry.handler(TYPE, AnalyticsEventPayload)
    async def record(ctx: JobContext[AnalyticsEventPayload]) -> None:
        ran.append(ctx.tenant_id)

    h = await make_harness(registry, settings_update=SLOW_POLL)
    stop = asyncio.Event()
    task = asyncio.create_task(h.consumer.run(stop))
    try:
        await asyncio.sleep(0.3)  # the first pull found nothing: the worker is idle now
        started = time.monotonic()
        job_id = await h.submit("a")

        async def succeeded() -> bool:
            return (await h.job(job_id)).status == "succeeded"

        await wait_until(succeeded, timeout=10, message="the idle consumer did not wake up")
        assert time.monotonic() - started < 10
        assert ran == [h.tenant_ids["a"]]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_notices_wake_only_the_queue_written(
    make_harness: MakeHarness, settings: Settings
) -> None:
    """PostgreSQL: a commit that stages a message on one queue wakes that queue's watch,
    and not another queue's."""
    if not settings.db.url.startswith("postgresql"):
        pytest.skip("notices are PostgreSQL's (SQLite watches its log file)")
    registry = HandlerRegistry()

    @registry.handler(TYPE, AnalyticsEventPayload)
    async def record(ctx: JobContext[AnalyticsEventPayload]) -> None:
        pass

    h = await make_harness(registry)
    notices = QueueNotices.for_url(settings.db.url, h.runtime.sessionmaker)
    assert notices is not None
    mine, other = notices.watch(QUEUE), notices.watch("image-processing")
    await notices.start()
    try:
        assert mine.active
        assert other.active
        async with h.runtime.sessionmaker() as session:
            await h.runtime.queue_engine.stage(session, QUEUE, [OutgoingMessage(body={"x": 1})])
            await session.commit()
        await asyncio.wait_for(mine.changed(), 10)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.changed(), 0.3)
    finally:
        await notices.close()
    assert not mine.active


async def test_log_watch_settles_before_waking(
    make_harness: MakeHarness, settings: Settings
) -> None:
    """SQLite: a worker woken for nothing looks again only after `settle_s`, and a commit
    made meanwhile still wakes it then (none is missed); no commit, no wake-up."""
    watch = StoreWatch.for_url(settings.db.url)
    if not watch.active:
        pytest.skip("the log file is SQLite's (PostgreSQL sends notices)")
    registry = HandlerRegistry()

    @registry.handler(TYPE, AnalyticsEventPayload)
    async def record(ctx: JobContext[AnalyticsEventPayload]) -> None:
        pass

    h = await make_harness(registry)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(watch.changed(), 0.3)
    started = time.monotonic()
    waiting = asyncio.create_task(watch.changed(settle_s=0.4))
    await asyncio.sleep(0.05)
    await h.submit("a")  # commits during the settle
    await asyncio.wait_for(waiting, 10)
    assert time.monotonic() - started >= 0.4
