"""Per-delivery scheduling: a slow job holds one slot, never its queue; a job never runs
twice at once. On the local engine, and on the Cloudflare backend against the emulator."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from app.consumer.process import Consumer
from app.consumer.registry import HandlerRegistry, JobContext
from app.jobs.payloads import AnalyticsEventPayload
from app.queues.base import OutgoingMessage, QueueBackend
from tests.consumer.conftest import DLQ, QUEUE, Harness, MakeHarness
from tests.consumer.test_leases import WithoutLeaseExtension
from tests.contract.test_queue_backends import CloudflareHarness
from tests.emulator.conftest import Emulator
from tests.emulator.conftest import emulator as emulator  # a module-scoped fixture
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio
TYPE = "analytics-event"


class Slow:
    """A handler set: jobs whose properties say `slow` wait for `release`; others return."""

    def __init__(self) -> None:
        self.registry = HandlerRegistry()
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.runs = Counter[str]()
        self.running = Counter[str]()
        self.overlaps = 0

        @self.registry.handler(TYPE, AnalyticsEventPayload)
        async def handle(ctx: JobContext[AnalyticsEventPayload]) -> None:
            self.runs[ctx.job_id] += 1
            self.running[ctx.job_id] += 1
            self.overlaps += self.running[ctx.job_id] > 1
            try:
                if ctx.payload.properties.get("slow"):
                    self.started.set()
                    await self.release.wait()
            finally:
                self.running[ctx.job_id] -= 1


@pytest_asyncio.fixture(params=["local", "cloudflare"])
async def backend_name(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    yield request.param


class Bridge:
    """Where the consumer under test reads: the local engine itself, or the emulator (the
    gateway stages jobs in the local engine; they are moved to the emulator's queue)."""

    def __init__(self, h: Harness, cloudflare: CloudflareHarness | None) -> None:
        self.h = h
        self.cloudflare = cloudflare
        self.backend: QueueBackend = cloudflare.backend if cloudflare else h.runtime.backend

    async def submit(self, **properties: Any) -> str:
        job_id = await self.h.submit(**properties)
        if self.cloudflare is not None:
            engine = self.h.runtime.queue_engine
            [message] = (await engine.pull(QUEUE, batch_size=10)).messages
            await self.backend.send(QUEUE, OutgoingMessage(body=message.body))
            await engine.ack(QUEUE, acks=[message.lease_id])
        return job_id

    def consumer(self) -> Consumer:
        return Consumer(
            self.backend,
            topology=self.h.runtime.topology,
            registry=self.h.registry,
            resources=self.h.consumer.resources,
            queues=[QUEUE],
        )


@pytest_asyncio.fixture
async def bridge_factory(
    backend_name: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[Harness], Any]]:
    opened: list[CloudflareHarness] = []
    # Started before any gateway, and reset from a thread: these wait synchronously, and on
    # SQLite a gateway loop caught holding the write lock by that wait would never let go.
    running: Emulator | None = None
    if backend_name != "local":
        running = request.getfixturevalue("emulator")

    async def make(h: Harness) -> Bridge:
        if running is None:
            return Bridge(h, None)
        await asyncio.to_thread(running.reset)
        cloudflare = CloudflareHarness(running)
        opened.append(cloudflare)
        await cloudflare.declare(DLQ)
        await cloudflare.declare(QUEUE, dead_letter_queue=DLQ)
        return Bridge(h, cloudflare)

    yield make
    for cloudflare in opened:
        await cloudflare.close()


async def test_a_slow_job_does_not_hold_up_its_queue(
    make_harness: MakeHarness, bridge_factory: Callable[[Harness], Any]
) -> None:
    """ai-agent-tasks' shape: batches of 2, 8 at once; 1 slow job, then 10 fast ones."""
    handlers = Slow()
    h = await make_harness(handlers.registry, max_batch_size=2, max_concurrency=8)
    bridge: Bridge = await bridge_factory(h)
    slow = await bridge.submit(slow=True)
    stop = asyncio.Event()
    consumer = bridge.consumer()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(handlers.started.wait(), 30)
        fast = [await bridge.submit(n=n) for n in range(10)]

        async def fast_done() -> bool:
            return all([(await h.job(j)).status == "succeeded" for j in fast])

        await wait_until(fast_done)
        # All ten went through while the slow one still holds its slot.
        assert (await h.job(slow)).status == "running"
        assert not handlers.release.is_set()
        handlers.release.set()

        async def slow_done() -> bool:
            return (await h.job(slow)).status == "succeeded"

        await wait_until(slow_done)
    finally:
        handlers.release.set()
        stop.set()
        await asyncio.wait_for(task, 30)
    assert handlers.runs == dict.fromkeys([slow, *fast], 1)
    assert handlers.overlaps == 0


class TestDuplicates:
    async def test_a_duplicate_of_a_running_job_waits_for_its_lease(
        self, make_harness: MakeHarness
    ) -> None:
        handlers = Slow()
        h = await make_harness(handlers.registry, visibility_timeout_ms=30_000)
        job_id = await h.submit(slow=True)
        first = asyncio.create_task(h.consumer.run_once())
        await asyncio.wait_for(handlers.started.wait(), 30)
        [attempt] = await h.attempts(job_id)
        # A second message for the job (the relay re-sent it, or the queue delivered twice).
        job = await h.job(job_id)
        envelope = {"job_id": job_id, "tenant_id": h.tenant_ids["a"], "type": TYPE}
        await h.runtime.backend.send(
            QUEUE, OutgoingMessage(body={**envelope, "payload": job.payload})
        )
        other = h.new_consumer()
        report = await other.run_once()
        assert report.counts == {"redelayed": 1}
        assert handlers.runs[job_id] == 1  # not started a second time
        duplicate = next(m for m in await h.messages() if m.lease_id is None)
        # Re-delayed until the running attempt's lease ends (a fresh copy: no delivery used).
        assert duplicate.visible_at_ms == attempt.lease_expires_ms
        assert duplicate.attempts == 0
        assert [a.outcome for a in await h.attempts(job_id)] == [None]  # not closed as lost

        handlers.release.set()
        assert (await asyncio.wait_for(first, 30)).counts == {"succeeded": 1}
        h.clock.advance(ms=attempt.lease_expires_ms - h.clock.now_ms())
        report = await other.run_once()
        assert report.counts == {"skipped": 1}  # the job finished: acked unrun
        assert handlers.runs[job_id] == 1
        assert handlers.overlaps == 0
        assert await h.messages() == []
        assert [a.outcome for a in await h.attempts(job_id)] == ["succeeded"]
        assert (await h.job(job_id)).attempts == 1

    async def test_a_lost_attempt_runs_again_once_its_lease_expired(
        self, make_harness: MakeHarness
    ) -> None:
        handlers = Slow()
        h = await make_harness(handlers.registry, visibility_timeout_ms=5_000)
        job_id = await h.submit(slow=True)
        crashed = asyncio.create_task(h.consumer.run_once())
        await asyncio.wait_for(handlers.started.wait(), 30)
        crashed.cancel()  # the consumer dies mid-run: its lease is no longer extended
        with pytest.raises(asyncio.CancelledError):
            await crashed
        h.clock.advance(seconds=4)
        # Its message is still leased, and a copy would wait: the attempt may still run.
        assert (await h.new_consumer().run_once()).selected == 0
        h.clock.advance(seconds=1)
        handlers.release.set()
        assert (await h.new_consumer().run_once()).counts == {"succeeded": 1}
        assert [a.outcome for a in await h.attempts(job_id)] == ["lost", "succeeded"]


async def test_without_a_heartbeat_a_lease_that_ran_out_waiting_is_not_run(
    make_harness: MakeHarness,
) -> None:
    handlers = Slow()
    h = await make_harness(
        handlers.registry, max_batch_size=2, max_concurrency=1, visibility_timeout_ms=1000
    )
    slow = await h.submit(slow=True)
    waiting = await h.submit()
    consumer = Consumer(
        WithoutLeaseExtension(h.runtime.queue_engine),
        topology=h.runtime.topology,
        registry=h.registry,
        resources=h.consumer.resources,
        queues=[QUEUE],
    )
    cycle = asyncio.create_task(consumer.run_once())  # both started, one slot
    await asyncio.wait_for(handlers.started.wait(), 30)
    h.clock.advance(ms=1000)  # the waiting one's lease runs out before the slot frees
    handlers.release.set()
    assert (await asyncio.wait_for(cycle, 30)).counts == {"succeeded": 1}
    assert handlers.runs == {slow: 1}
    # Its message came back to the queue; whoever takes it runs the job (the attempt that
    # never ran is closed as lost).
    assert (await h.new_consumer().run_once()).counts == {"succeeded": 1}
    assert handlers.runs == {slow: 1, waiting: 1}
    assert [a.outcome for a in await h.attempts(waiting)] == ["lost", "succeeded"]
