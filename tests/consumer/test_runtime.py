"""The consumer runtime on the real local engine and job store, driven by `run_once()`."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from app.consumer.breaker import BreakerPolicy, is_open
from app.consumer.models import CircuitBreaker
from app.consumer.registry import HandlerRegistry, JobContext, PermanentFailure, RetryLater
from app.jobs.payloads import AnalyticsEventPayload
from app.queues.base import OutgoingMessage
from tests.consumer.conftest import DLQ, QUEUE, MakeHarness
from tests.factories import auth
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio
TYPE = "analytics-event"


class TestOutcomes:
    async def test_success_goes_queued_running_succeeded(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        seen: list[JobContext[AnalyticsEventPayload]] = []

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def ok(ctx: JobContext[AnalyticsEventPayload]) -> None:
            seen.append(ctx)

        h = await make_harness(registry)
        job_id = await h.submit(x=1)
        report = await h.consumer.run_once()
        assert report.counts["succeeded"] == 1
        job = await h.job(job_id)
        assert (job.status, job.attempts, job.progress) == ("succeeded", 1, 100)
        assert job.started_at is not None
        assert job.finished_at is not None
        assert await h.statuses(job_id) == ["queued", "running", "succeeded"]
        [attempt] = await h.attempts(job_id)
        assert attempt.outcome == "succeeded"
        assert attempt.ended_at is not None
        assert seen[0].payload.properties == {"x": 1}
        assert seen[0].attempt == 1
        assert seen[0].tenant_id == h.tenant_ids["a"]
        assert await h.messages() == []

    async def test_exponential_delays_then_dead_in_dlq(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        calls = Counter[str]()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def boom(ctx: JobContext[AnalyticsEventPayload]) -> None:
            calls[ctx.job_id] += 1
            raise RuntimeError("downstream 503")

        h = await make_harness(registry, retry_delay="exponential", max_retries=3)
        job_id = await h.submit()
        for attempt, delay in [(1, 10), (2, 20), (3, 40)]:
            report = await h.consumer.run_once()
            assert report.counts["retry"] == 1, report
            job = await h.job(job_id)
            assert (job.status, job.attempts) == ("retrying", attempt)
            assert (await h.attempts(job_id))[-1].retry_delay_seconds == delay
            h.clock.advance(seconds=delay - 1)
            assert (await h.consumer.run_once()).selected == 0  # not a second early
            h.clock.advance(seconds=1)
        report = await h.consumer.run_once()
        assert report.counts["dead"] == 1
        job = await h.job(job_id)
        assert (job.status, job.attempts) == ("dead", 4)
        assert calls[job_id] == 4
        assert "downstream 503" in (job.last_error or "")
        assert await h.messages() == []
        [dead] = await h.messages(DLQ)
        assert job_id in dead.body

    async def test_fixed_retry_delay(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        runs: list[int] = []

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def flaky(ctx: JobContext[AnalyticsEventPayload]) -> None:
            runs.append(ctx.attempt)
            if ctx.attempt == 1:
                raise ValueError("first time fails")

        h = await make_harness(registry, retry_delay=7)
        job_id = await h.submit()
        await h.consumer.run_once()
        [message] = await h.messages()
        assert message.visible_at_ms == h.clock.now_ms() + 7000
        h.clock.advance(seconds=6.999)
        assert (await h.consumer.run_once()).selected == 0
        h.clock.advance(ms=1)
        assert (await h.consumer.run_once()).counts["succeeded"] == 1
        assert runs == [1, 2]
        assert [a.outcome for a in await h.attempts(job_id)] == ["retry", "succeeded"]

    async def test_retry_later_uses_the_handlers_delay(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def throttled(ctx: JobContext[AnalyticsEventPayload]) -> None:
            raise RetryLater(120, "429 from PrestaShop")

        h = await make_harness(registry, retry_delay=5)
        job_id = await h.submit()
        await h.consumer.run_once()
        job = await h.job(job_id)
        assert job.status == "retrying"
        assert job.last_error == "429 from PrestaShop"
        [message] = await h.messages()
        assert message.visible_at_ms == h.clock.now_ms() + 120_000

    async def test_permanent_failure_is_not_retried(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def bad(ctx: JobContext[AnalyticsEventPayload]) -> None:
            raise PermanentFailure("site shop-9 does not exist")

        h = await make_harness(registry)
        job_id = await h.submit()
        assert (await h.consumer.run_once()).counts["failed"] == 1
        job = await h.job(job_id)
        assert (job.status, job.attempts) == ("failed", 1)
        assert "shop-9" in (job.last_error or "")
        assert await h.messages() == []
        assert await h.messages(DLQ) == []

    async def test_handler_max_retries_lowers_the_queues(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()

        @registry.handler(TYPE, AnalyticsEventPayload, max_retries=1)
        async def boom(ctx: JobContext[AnalyticsEventPayload]) -> None:
            raise RuntimeError("no")

        h = await make_harness(registry, max_retries=5)
        job_id = await h.submit()
        await h.consumer.run_once()
        assert (await h.consumer.run_once()).counts["dead"] == 1
        assert (await h.job(job_id)).attempts == 2
        assert len(await h.messages(DLQ)) == 1
        assert await h.messages() == []

    async def test_succeeded_job_is_acked_without_running(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        runs: list[str] = []

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def ok(ctx: JobContext[AnalyticsEventPayload]) -> None:
            runs.append(ctx.job_id)

        h = await make_harness(registry)
        job_id = await h.submit()
        await h.consumer.run_once()
        # A duplicate delivery of the same envelope (at-least-once).
        async with h.runtime.sessionmaker() as session:
            from app.queues.models import QueueMessage

            assert (await session.get(QueueMessage, "x")) is None
        job = await h.job(job_id)
        envelope = {
            "job_id": job_id,
            "tenant_id": h.tenant_ids["a"],
            "type": TYPE,
            "payload": job.payload,
            "idempotency_key": None,
            "trace": None,
        }
        await h.runtime.backend.send(QUEUE, OutgoingMessage(body=envelope))
        report = await h.consumer.run_once()
        assert report.counts["skipped"] == 1
        assert runs == [job_id]
        assert await h.messages() == []
        assert (await h.job(job_id)).attempts == 1


class TestScheduling:
    async def test_never_more_than_max_concurrency(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        active = 0
        peak = 0

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def slow(ctx: JobContext[AnalyticsEventPayload]) -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1

        h = await make_harness(registry, max_concurrency=3, max_batch_size=10)
        for _ in range(10):
            await h.submit()
        report = await h.consumer.run_once()
        assert report.counts["succeeded"] == 10
        assert peak == 3

    async def test_running_on_never_more_than_max_concurrency(
        self, make_harness: MakeHarness
    ) -> None:
        """The run loop leases the next batch while the current one still queues for its
        slots: the slots still bound what runs at once, and every job runs once."""
        registry = HandlerRegistry()
        active = peak = 0
        ran: list[str] = []

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def slow(ctx: JobContext[AnalyticsEventPayload]) -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.005)
            ran.append(ctx.job_id)
            active -= 1

        h = await make_harness(registry, max_concurrency=3, max_batch_size=10)
        jobs = [await h.submit() for _ in range(35)]
        stop = asyncio.Event()
        task = asyncio.create_task(h.consumer.run(stop))
        await wait_until(lambda: len(ran) == len(jobs), timeout=30)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert peak == 3
        assert sorted(ran) == sorted(jobs)
        assert Counter([(await h.job(j)).status for j in jobs]) == {"succeeded": 35}

    async def test_small_tenant_runs_in_first_cycle(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        ran: list[str] = []

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def ok(ctx: JobContext[AnalyticsEventPayload]) -> None:
            ran.append(ctx.tenant_id)

        h = await make_harness(registry, tenants=("a", "b"), max_batch_size=10)
        response = await h.client.post(
            "/v1/jobs/batch",
            json={"jobs": [{"type": TYPE, "name": "bulk"}] * 50},
            headers=auth(h.keys["a"]),
        )
        assert response.status_code == 202
        b_jobs = [await h.submit("b"), await h.submit("b")]
        report = await h.consumer.run_once()
        assert report.selected == 10
        assert Counter(ran) == {h.tenant_ids["a"]: 8, h.tenant_ids["b"]: 2}
        assert [(await h.job(j)).status for j in b_jobs] == ["succeeded", "succeeded"]
        # The rest stays leased in the buffer and runs in later cycles, none lost.
        for _ in range(5):
            await h.consumer.run_once()
        assert len(ran) == 52

    async def test_heartbeat_keeps_a_slow_handler_leased(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        started = asyncio.Event()
        release = asyncio.Event()
        runs = 0

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def long_sync(ctx: JobContext[AnalyticsEventPayload]) -> None:
            nonlocal runs
            runs += 1
            started.set()
            await release.wait()

        # The test beats by hand against the manual clock (the background beat never comes).
        h = await make_harness(
            registry,
            visibility_timeout_ms=1000,
            settings_update={"consumer": {"heartbeat_ms": 3_600_000}},
        )
        job_id = await h.submit()
        worker = h.consumer.workers[QUEUE]
        cycle = asyncio.create_task(h.consumer.run_once())
        await asyncio.wait_for(started.wait(), 20)
        other = h.new_consumer()
        for _ in range(30):  # 27 s of clock time against a 1 s visibility timeout
            h.clock.advance(ms=900)
            assert await worker.heartbeat_once() == 1
            lease_end = h.clock.now_ms() + 1000
            [message] = await h.messages()
            [attempt] = await h.attempts(job_id)
            # The queue's lease and the attempt's moved together (one transaction).
            assert message.visible_at_ms == attempt.lease_expires_ms == lease_end
            assert (await other.run_once()).selected == 0  # not delivered twice
        release.set()
        report = await asyncio.wait_for(cycle, 20)
        assert report.counts["succeeded"] == 1
        assert runs == 1
        assert (await h.job(job_id)).attempts == 1

    async def test_a_lease_the_heartbeat_lost_stops_its_work(
        self, make_harness: MakeHarness
    ) -> None:
        registry = HandlerRegistry()
        started = asyncio.Event()
        stopped: list[int] = []

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def sync(ctx: JobContext[AnalyticsEventPayload]) -> None:
            if ctx.attempt == 1:
                started.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    stopped.append(ctx.attempt)
                    raise

        h = await make_harness(
            registry,
            visibility_timeout_ms=1000,
            settings_update={"consumer": {"heartbeat_ms": 3_600_000}},
        )
        job_id = await h.submit()
        worker = h.consumer.workers[QUEUE]
        cycle = asyncio.create_task(h.consumer.run_once())
        await asyncio.wait_for(started.wait(), 20)
        # The consumer stalls past its lease: another one gets the message and runs the job.
        h.clock.advance(ms=1001)
        assert (await h.new_consumer().run_once()).counts == {"succeeded": 1}
        # The next beat cannot extend the lease: the first run is stopped, nothing settled.
        assert await worker.heartbeat_once() == 0
        report = await asyncio.wait_for(cycle, 20)
        assert report.counts == {}
        assert stopped == [1]
        assert worker.leases.held == {}
        job = await h.job(job_id)
        assert (job.status, job.attempts) == ("succeeded", 2)
        assert [a.outcome for a in await h.attempts(job_id)] == ["lost", "succeeded"]


class TestBreaker:
    async def test_opens_defers_half_opens_and_closes(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        healthy = False
        runs: list[str] = []

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def downstream(ctx: JobContext[AnalyticsEventPayload]) -> None:
            runs.append(ctx.tenant_id)
            if ctx.tenant_id == h.tenant_ids["a"] and not healthy:
                raise RuntimeError("shop down")

        h = await make_harness(
            registry,
            tenants=("a", "b"),
            max_retries=0,
            settings_update={
                "breaker": {"threshold": 2, "window_seconds": 60, "cooldown_seconds": 30}
            },
        )
        policy = BreakerPolicy(threshold=2, window_ms=60_000, cooldown_ms=30_000)
        await h.submit("a")
        await h.submit("a")
        assert (await h.consumer.run_once()).counts["dead"] == 2
        async with h.runtime.sessionmaker() as session:
            row = await session.get(CircuitBreaker, (h.tenant_ids["a"], TYPE))
            assert row is not None
            assert row.state == "open"
            assert row.failures == 2
            assert await is_open(
                session,
                tenant_id=h.tenant_ids["a"],
                job_type=TYPE,
                now_ms=h.clock.now_ms(),
                policy=policy,
            )
        deferred = await h.submit("a")
        other = await h.submit("b")
        report = await h.consumer.run_once()
        assert report.counts == {"deferred": 1, "succeeded": 1}
        assert (await h.job(other)).status == "succeeded"
        job = await h.job(deferred)
        assert (job.status, job.attempts) == ("queued", 0)
        [message] = await h.messages()  # re-delayed by the cool-down, not dropped
        assert message.visible_at_ms == h.clock.now_ms() + 30_000
        assert message.attempts == 0
        h.clock.advance(seconds=29)
        assert (await h.consumer.run_once()).selected == 0
        h.clock.advance(seconds=1)
        healthy = True
        report = await h.consumer.run_once()
        assert report.counts["succeeded"] == 1  # the half-open trial
        assert (await h.job(deferred)).status == "succeeded"
        async with h.runtime.sessionmaker() as session:
            row = await session.get(CircuitBreaker, (h.tenant_ids["a"], TYPE))
            assert row is not None
            await session.refresh(row)
            assert (row.state, row.failures) == ("closed", 0)

    async def test_failed_trial_opens_again(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def down(ctx: JobContext[AnalyticsEventPayload]) -> None:
            raise RuntimeError("still down")

        h = await make_harness(
            registry,
            max_retries=0,
            settings_update={"breaker": {"threshold": 1, "cooldown_seconds": 10}},
        )
        await h.submit()
        await h.consumer.run_once()
        h.clock.advance(seconds=10)
        trial, waiting = await h.submit(), await h.submit()
        report = await h.consumer.run_once()
        # One trial at a time while half-open; it fails, so the breaker opens again.
        assert report.counts == {"dead": 1, "deferred": 1}
        assert {(await h.job(trial)).status, (await h.job(waiting)).status} == {"dead", "queued"}
        async with h.runtime.sessionmaker() as session:
            row = await session.get(CircuitBreaker, (h.tenant_ids["a"], TYPE))
            assert row is not None
            assert row.state == "open"
            assert row.opened_at_ms == h.clock.now_ms()


class TestProgressAndShutdown:
    async def test_progress_is_visible_through_the_api(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        reported = asyncio.Event()
        release = asyncio.Event()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def sync(ctx: JobContext[AnalyticsEventPayload]) -> None:
            await ctx.progress(40, "page 4 of 10")
            reported.set()
            await release.wait()

        h = await make_harness(registry)
        job_id = await h.submit()
        cycle = asyncio.create_task(h.consumer.run_once())
        await asyncio.wait_for(reported.wait(), 20)
        body = (await h.client.get(f"/v1/jobs/{job_id}", headers=auth(h.keys["a"]))).json()
        assert (body["status"], body["progress"], body["progress_message"]) == (
            "running",
            40,
            "page 4 of 10",
        )
        assert body["attempts"] == 1
        release.set()
        await asyncio.wait_for(cycle, 20)
        body = (await h.client.get(f"/v1/jobs/{job_id}", headers=auth(h.keys["a"]))).json()
        assert (body["status"], body["progress"]) == ("succeeded", 100)

    async def test_shutdown_finishes_in_flight_and_releases_the_rest(
        self, make_harness: MakeHarness
    ) -> None:
        registry = HandlerRegistry()
        running = 0
        release = asyncio.Event()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def work(ctx: JobContext[AnalyticsEventPayload]) -> None:
            nonlocal running
            running += 1
            await release.wait()

        h = await make_harness(registry, max_batch_size=2, max_concurrency=2)
        jobs = [await h.submit() for _ in range(5)]
        stop = asyncio.Event()
        task = asyncio.create_task(h.consumer.run(stop))

        async def two_running() -> bool:
            return running == 2

        await wait_until(two_running)
        stop.set()
        release.set()
        await asyncio.wait_for(task, 30)
        statuses = Counter([(await h.job(j)).status for j in jobs])
        assert statuses == {"succeeded": 2, "queued": 3}
        messages = await h.messages()
        assert len(messages) == 3
        assert all(m.lease_id is None and m.visible_at_ms <= h.clock.now_ms() for m in messages)
        # Nothing was lost: another consumer picks the released ones up at once.
        survivor = h.new_consumer()
        first, second = await survivor.run_once(), await survivor.run_once()
        assert first.counts["succeeded"] + second.counts["succeeded"] == 3
        assert Counter([(await h.job(j)).status for j in jobs]) == {"succeeded": 5}

    async def test_grace_over_releases_in_flight(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        started = asyncio.Event()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def stuck(ctx: JobContext[AnalyticsEventPayload]) -> None:
            started.set()
            await asyncio.Event().wait()

        h = await make_harness(
            registry, settings_update={"consumer": {"shutdown_grace_seconds": 0.1}}
        )
        job_id = await h.submit()
        stop = asyncio.Event()
        task = asyncio.create_task(h.consumer.run(stop))
        await asyncio.wait_for(started.wait(), 20)
        stop.set()
        await asyncio.wait_for(task, 30)
        job = await h.job(job_id)
        assert (job.status, job.attempts) == ("queued", 1)
        assert [a.outcome for a in await h.attempts(job_id)] == ["released"]
        [message] = await h.messages()
        assert message.lease_id is None

    @pytest.mark.parametrize("kind", ["ignores the interruption", "batch handler"])
    async def test_grace_over_releases_every_run(
        self, make_harness: MakeHarness, kind: str
    ) -> None:
        registry = HandlerRegistry()
        started: list[str] = []
        finished: list[str] = []

        if kind == "batch handler":

            @registry.batch_handler(TYPE, AnalyticsEventPayload)
            async def stuck(ctxs: list[JobContext[AnalyticsEventPayload]]) -> None:
                started.extend(ctx.job_id for ctx in ctxs)
                await asyncio.Event().wait()

        else:

            @registry.handler(TYPE, AnalyticsEventPayload)
            async def stubborn(ctx: JobContext[AnalyticsEventPayload]) -> None:
                started.append(ctx.job_id)
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    await asyncio.sleep(0.05)  # swallows it and finishes its work
                    finished.append(ctx.job_id)

        h = await make_harness(
            registry, settings_update={"consumer": {"shutdown_grace_seconds": 0.1}}
        )
        jobs = [await h.submit(), await h.submit()]
        stop = asyncio.Event()
        task = asyncio.create_task(h.consumer.run(stop))
        await wait_until(lambda: len(started) == 2)
        stop.set()
        await asyncio.wait_for(task, 30)
        if kind != "batch handler":
            assert sorted(finished) == sorted(jobs)
        for job_id in jobs:
            job = await h.job(job_id)
            assert (job.status, job.attempts) == ("queued", 1)
            assert [a.outcome for a in await h.attempts(job_id)] == ["released"]
        assert all(m.lease_id is None for m in await h.messages())

    async def test_lost_final_attempt_ends_dead(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        started = asyncio.Event()

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def hangs(ctx: JobContext[AnalyticsEventPayload]) -> None:
            started.set()
            await asyncio.Event().wait()

        h = await make_harness(
            registry,
            max_retries=0,
            visibility_timeout_ms=5000,
            settings_update={"consumer": {"lost_grace_seconds": 10}},
        )
        job_id = await h.submit()
        crashed = asyncio.create_task(h.consumer.run_once())
        await asyncio.wait_for(started.wait(), 20)
        crashed.cancel()  # the consumer dies mid-run: nothing is settled
        with pytest.raises(asyncio.CancelledError):
            await crashed
        survivor = h.new_consumer()
        h.clock.advance(seconds=5 + 9)
        assert await survivor.sweep_lost() == 0  # still inside the grace
        h.clock.advance(seconds=2)
        assert (await survivor.run_once()).selected == 0  # the engine dead-letters it
        assert len(await h.messages(DLQ)) == 1
        assert await survivor.sweep_lost() == 1
        job = await h.job(job_id)
        assert job.status == "dead"
        assert "lost" in (job.last_error or "")
        assert [a.outcome for a in await h.attempts(job_id)] == ["lost"]


class TestLostAttempts:
    async def test_redelivery_closes_the_lost_attempt(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        started = asyncio.Event()
        runs: list[int] = []

        @registry.handler(TYPE, AnalyticsEventPayload)
        async def hangs_once(ctx: JobContext[AnalyticsEventPayload]) -> None:
            runs.append(ctx.attempt)
            if ctx.attempt == 1:
                started.set()
                await asyncio.Event().wait()

        h = await make_harness(registry, visibility_timeout_ms=5000)
        job_id = await h.submit()
        crashed = asyncio.create_task(h.consumer.run_once())
        await asyncio.wait_for(started.wait(), 20)
        crashed.cancel()  # the consumer dies mid-run: nothing is settled
        with pytest.raises(asyncio.CancelledError):
            await crashed
        h.clock.advance(seconds=5)
        assert (await h.new_consumer().run_once()).counts["succeeded"] == 1
        assert runs == [1, 2]
        job = await h.job(job_id)
        assert (job.status, job.attempts) == ("succeeded", 2)
        attempts = await h.attempts(job_id)
        assert [(a.outcome, a.error) for a in attempts] == [
            ("lost", "consumer lost"),
            ("succeeded", None),
        ]
        assert all(a.ended_at is not None for a in attempts)
        assert await h.statuses(job_id) == ["queued", "running", "running", "succeeded"]

    async def test_no_attempt_left_is_dead_without_running(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        started = asyncio.Event()
        runs = 0

        @registry.handler(TYPE, AnalyticsEventPayload, max_retries=0)
        async def hangs(ctx: JobContext[AnalyticsEventPayload]) -> None:
            nonlocal runs
            runs += 1
            started.set()
            await asyncio.Event().wait()

        # The queue would deliver 4 times, the handler allows 1 attempt.
        h = await make_harness(registry, visibility_timeout_ms=5000, max_retries=3)
        job_id = await h.submit()
        crashed = asyncio.create_task(h.consumer.run_once())
        await asyncio.wait_for(started.wait(), 20)
        crashed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await crashed
        h.clock.advance(seconds=5)
        assert (await h.new_consumer().run_once()).counts == {"dead": 1}
        assert runs == 1
        job = await h.job(job_id)
        assert (job.status, job.attempts) == ("dead", 1)
        assert job.finished_at is not None
        assert "no attempt left" in (job.last_error or "")
        assert [a.outcome for a in await h.attempts(job_id)] == ["lost"]
        assert await h.statuses(job_id) == ["queued", "running", "dead"]
        assert await h.messages() == []
        [copy] = await h.messages(DLQ)
        assert job_id in copy.body
