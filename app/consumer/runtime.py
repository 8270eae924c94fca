"""The consumer runtime: pull batches, run handlers, settle every message.

Guarantees:
- At-least-once: a message is acked only after its outcome is committed to the job store;
  a job already finished (`succeeded`, `failed`, `dead`, `cancelled`) is acked unrun.
- One ack call per batch carries every ack and retry of that batch.
- The job store is written per batch, not per job: one transaction starts the batch's
  attempts, one records its outcomes, each with a number of statements that does not grow
  with the batch (`app.jobs.lifecycle`).
- A job runs at most `max_retries + 1` times (the queue's, or the handler's when lower);
  then it is `dead` and its message is in the dead letter queue.
- Nothing is dropped: deferred work (open breaker) and work handed back on shutdown is
  re-delayed; a copy is re-sent instead of retried when a retry would exhaust the message's
  deliveries, and the job store's attempt count still bounds the job.
- At most `max_concurrency` handlers run at once per queue; when more work is ready than a
  batch holds, the batch is filled round-robin by tenant, so one tenant's backlog cannot
  starve another's.
- Leases held (buffered or running) are extended by a heartbeat when the backend supports it
  (`SupportsLeaseExtension`), so a long handler is not delivered twice.

Only the `QueueBackend` protocol is used, so the same runtime consumes the local engine and
Cloudflare. `run_once()` runs one cycle with no waiting (tests); `run()` loops until stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from app.consumer.breaker import BreakerKey, BreakerPolicy, Breakers
from app.consumer.registry import (
    HandlerRegistry,
    HandlerSpec,
    JobContext,
    PermanentFailure,
    Resources,
    RetryLater,
)
from app.consumer.retry import RetryPolicy, clamp_delay
from app.core.clock import Clock
from app.core.db import SessionMaker
from app.jobs import lifecycle
from app.jobs.lifecycle import AttemptEnd, AttemptOutcome, AttemptStart
from app.queues.base import (
    MAX_PULL_BATCH,
    LeasedMessage,
    OutgoingMessage,
    QueueBackend,
    RetryRequest,
    SupportsLeaseExtension,
)
from app.queues.topology import MAX_VISIBILITY_TIMEOUT_MS, ConsumerConfig, Topology

log = logging.getLogger("jobgate.consumer")


@dataclass(frozen=True, slots=True)
class Envelope:
    """The message body the gateway sends: `{job_id, tenant_id, type, payload, ...}`."""

    job_id: str
    tenant_id: str
    type: str
    payload: dict[str, Any]
    idempotency_key: str | None = None
    trace: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: Any) -> Envelope | None:
        if not isinstance(body, dict):
            return None
        job_id, tenant_id, job_type = body.get("job_id"), body.get("tenant_id"), body.get("type")
        payload = body.get("payload")
        if not all(isinstance(v, str) and v for v in (job_id, tenant_id, job_type)):
            return None
        if not isinstance(payload, dict):
            return None
        trace = body.get("trace")
        key = body.get("idempotency_key")
        return cls(
            job_id=str(job_id),
            tenant_id=str(tenant_id),
            type=str(job_type),
            payload=payload,
            idempotency_key=key if isinstance(key, str) else None,
            trace=trace if isinstance(trace, dict) else None,
        )


@dataclass(slots=True)
class Delivery:
    message: LeasedMessage
    envelope: Envelope | None
    lease_expires_ms: int
    received_ms: int


@dataclass(slots=True)
class _Work:
    """One delivery of the current batch and what became of it."""

    delivery: Delivery
    envelope: Envelope
    spec: HandlerSpec | None
    max_attempts: int
    final_delivery: bool  # the queue will not deliver this message again
    attempt: int = 0
    outcome: AttemptOutcome | None = None
    error: str | None = None
    delay: int | None = None
    # True: counts as a failure for the breaker, False: a success, None: neither.
    breaker_failure: bool | None = None


@dataclass(slots=True)
class CycleReport:
    """What one batch cycle did, by disposition (succeeded, retry, dead, skipped, ...)."""

    pulled: int = 0
    selected: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: CycleReport) -> CycleReport:
        return CycleReport(
            pulled=self.pulled + other.pulled,
            selected=self.selected + other.selected,
            counts=self.counts + other.counts,
        )


@dataclass(slots=True)
class _Settlement:
    acks: list[str] = field(default_factory=list)
    retries: list[RetryRequest] = field(default_factory=list)
    sends: dict[str, list[OutgoingMessage]] = field(default_factory=dict)
    ends: list[AttemptEnd] = field(default_factory=list)
    dead: dict[str, str] = field(default_factory=dict)  # job id → reason (not run)
    deferred: dict[str, str] = field(default_factory=dict)  # job id → reason

    def send(self, queue: str, message: OutgoingMessage) -> None:
        self.sends.setdefault(queue, []).append(message)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class QueueWorker:
    """Consumes one queue. Not safe to drive from two tasks at once."""

    def __init__(
        self,
        *,
        queue: str,
        config: ConsumerConfig,
        queue_max_retries: int,
        backend: QueueBackend,
        registry: HandlerRegistry,
        resources: Resources,
        retry: RetryPolicy,
        breaker: BreakerPolicy,
        job_types: Sequence[str] = (),
    ) -> None:
        settings = resources.settings
        self.queue = queue
        self.config = config
        self._backend = backend
        self._registry = registry
        self._resources = resources
        self._sessionmaker: SessionMaker = resources.sessionmaker
        self._clock: Clock = resources.clock
        self._retry = retry
        self._breaker = breaker
        self._max_deliveries = queue_max_retries + 1
        self.batch_size = config.max_batch_size
        self.concurrency = config.max_concurrency or settings.consumer_default_concurrency
        self._extends = isinstance(backend, SupportsLeaseExtension)
        # Without lease extension a buffered lease would run out: lease one batch at a time.
        self.prefetch = (
            min(MAX_PULL_BATCH, max(self.batch_size, settings.consumer_prefetch))
            if self._extends
            else self.batch_size
        )
        self.visibility_ms = config.visibility_timeout_ms
        if not self._extends:
            # Cloudflare documents no way to extend a lease, so a lease must outlast the
            # longest handler of the queue's job types: a 30-minute order sync must not be
            # delivered again mid-run. The price: a crashed consumer's messages come back
            # only after that long.
            longest = max(
                (
                    spec.timeout_seconds
                    for job_type in job_types
                    if (spec := registry.get(job_type)) is not None and spec.timeout_seconds
                ),
                default=0.0,
            )
            if longest:
                self.visibility_ms = min(
                    MAX_VISIBILITY_TIMEOUT_MS,
                    max(self.visibility_ms, int(longest * 1000) + LEASE_MARGIN_MS),
                )
        vis = self.visibility_ms
        self.heartbeat_ms = settings.consumer_heartbeat_ms or max(10, vis // 3)
        self._buffer: list[Delivery] = []
        self._held: dict[str, Delivery] = {}
        self._running: dict[str, _Work] = {}
        self._slots = asyncio.Semaphore(self.concurrency)
        self._abort = asyncio.Event()
        self._heartbeats = 0
        self._beating = False

    # -- pulling and choosing ----------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def fill(self) -> int:
        """Lease more messages into the buffer (up to the prefetch); returns how many."""
        room = self.prefetch - len(self._buffer)
        if room <= 0:
            return 0
        vis = self.visibility_ms
        result = await self._backend.pull(
            self.queue, batch_size=min(room, MAX_PULL_BATCH), visibility_timeout_ms=vis
        )
        now = self._clock.now_ms()
        for message in result.messages:
            delivery = Delivery(message, Envelope.parse(message.body), now + vis, now)
            self._buffer.append(delivery)
            self._held[message.lease_id] = delivery
        return len(result.messages)

    def oldest_buffered_ms(self) -> int | None:
        return min((d.received_ms for d in self._buffer), default=None)

    def _select(self) -> list[Delivery]:
        """Up to one batch from the buffer, round-robin by tenant, oldest first per tenant."""
        lanes: dict[str, deque[Delivery]] = {}
        for delivery in self._buffer:
            tenant = delivery.envelope.tenant_id if delivery.envelope else ""
            lanes.setdefault(tenant, deque()).append(delivery)
        chosen: list[Delivery] = []
        while len(chosen) < self.batch_size and lanes:
            for tenant in list(lanes):
                lane = lanes[tenant]
                chosen.append(lane.popleft())
                if not lane:
                    del lanes[tenant]
                if len(chosen) == self.batch_size:
                    break
        picked = {id(d) for d in chosen}
        self._buffer = [d for d in self._buffer if id(d) not in picked]
        return chosen

    # -- one cycle ---------------------------------------------------------------------------

    async def cycle(self, *, fill: bool = True) -> CycleReport:
        """Pull (optionally), run one batch, settle it with one ack call."""
        report = CycleReport()
        async with self.heartbeating():
            if fill:
                report.pulled = await self.fill()
            batch = self._select()
            report.selected = len(batch)
            if not batch:
                return report
            plan = _Settlement()
            works = await self._start(batch, plan, report)
            if works:
                await asyncio.gather(*(self._run(work) for work in works))
                self._settle_runs(works, plan, report)
            await self._commit(plan, works)
        return report

    def _max_attempts(self, spec: HandlerSpec | None) -> int:
        if spec is not None and spec.max_retries is not None:
            return min(spec.max_retries + 1, self._max_deliveries)
        return self._max_deliveries

    async def _start(
        self, batch: list[Delivery], plan: _Settlement, report: CycleReport
    ) -> list[_Work]:
        """Decide each delivery; start attempts of the ones that run (one transaction, a
        constant number of statements)."""
        now = self._clock.now_ms()
        candidates: list[_Work] = []
        seen: set[str] = set()
        for delivery in batch:
            lease = delivery.message.lease_id
            envelope = delivery.envelope
            if envelope is None:
                log.error("queue %s: message %s is not a job envelope", self.queue, lease)
                self._dead_letter_copy(delivery, plan)
                plan.acks.append(lease)
                report.counts["malformed"] += 1
                continue
            if envelope.job_id in seen:
                # A duplicate copy in the same batch (at-least-once): run the job once.
                plan.acks.append(lease)
                report.counts["skipped"] += 1
                continue
            seen.add(envelope.job_id)
            spec = self._registry.get(envelope.type)
            candidates.append(
                _Work(
                    delivery=delivery,
                    envelope=envelope,
                    spec=spec,
                    max_attempts=self._max_attempts(spec),
                    final_delivery=delivery.message.attempts >= self._max_deliveries,
                )
            )
        if not candidates:
            return []
        runnable: list[_Work] = []
        starts: list[AttemptStart] = []
        async with self._sessionmaker() as session:
            jobs = await lifecycle.load_jobs(session, [w.envelope.job_id for w in candidates])
            breakers = Breakers(session, self._breaker)
            await breakers.load((w.envelope.tenant_id, w.envelope.type) for w in candidates)
            for work in candidates:
                job = jobs.get(work.envelope.job_id)
                lease = work.delivery.message.lease_id
                if job is None or lifecycle.is_finished(job):
                    # Already done (or deleted with its tenant): nothing to run again.
                    plan.acks.append(lease)
                    report.counts["skipped"] += 1
                    continue
                if job.attempts >= work.max_attempts:
                    # Its last attempt was lost with its consumer; no attempt is left.
                    plan.dead[job.id] = (
                        f"no attempt left after {job.attempts} (the last one was lost)"
                    )
                    self._dead_letter(work, plan)
                    report.counts["dead"] += 1
                    continue
                key: BreakerKey = (work.envelope.tenant_id, work.envelope.type)
                admission = breakers.admit(key, now)
                if not admission.allowed:
                    delay = admission.retry_in_seconds
                    plan.deferred[job.id] = f"circuit open for {key[1]}: deferred {delay}s"
                    self._redeliver(work.delivery, plan, delay=delay, fresh=True)
                    report.counts["deferred"] += 1
                    continue
                starts.append(
                    AttemptStart(
                        job=job,
                        queue=self.queue,
                        message_id=work.delivery.message.id,
                        lease_expires_ms=work.delivery.lease_expires_ms,
                        final_delivery=work.final_delivery,
                    )
                )
                runnable.append(work)
            numbers = await lifecycle.start_attempts(session, starts, now_ms=now)
            for work in runnable:
                work.attempt = numbers[work.envelope.job_id]
            await breakers.flush()
            await session.commit()
        return runnable

    async def _run(self, work: _Work) -> None:
        async with self._slots:
            if self._abort.is_set():
                work.outcome = AttemptOutcome.released
                work.error = "released unstarted: the consumer is stopping"
                return
            self._running[work.envelope.job_id] = work
            try:
                await self._invoke(work)
            finally:
                self._running.pop(work.envelope.job_id, None)

    async def _invoke(self, work: _Work) -> None:
        spec = work.spec
        if spec is None:
            self._failed(work, f"no handler is registered for job type {work.envelope.type!r}")
            return
        ctx = JobContext(
            job_id=work.envelope.job_id,
            tenant_id=work.envelope.tenant_id,
            type=work.envelope.type,
            payload=work.envelope.payload,
            attempt=work.attempt,
            report_progress=self._progress_reporter(work.envelope.job_id, work.attempt),
            resources=self._resources,
            created_at_ms=work.delivery.message.timestamp_ms,
        )
        handler = asyncio.ensure_future(
            asyncio.wait_for(spec.func(ctx), spec.timeout_seconds)
            if spec.timeout_seconds
            else spec.func(ctx)
        )
        abort = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait({handler, abort}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abort.cancel()
        if not handler.done():
            handler.cancel()
            with suppress(BaseException):
                await handler
            work.outcome = AttemptOutcome.released
            work.error = "interrupted: the consumer stopped before the handler finished"
            return
        exc = handler.exception()
        if exc is None:
            work.outcome = AttemptOutcome.succeeded
            work.breaker_failure = False
        elif isinstance(exc, RetryLater):
            self._failed(work, exc.reason, delay=clamp_delay(exc.delay_seconds))
        elif isinstance(exc, PermanentFailure) or (spec.throws and isinstance(exc, spec.throws)):
            work.outcome = AttemptOutcome.failed
            work.error = _describe(exc)
        elif isinstance(exc, TimeoutError):
            self._failed(work, f"timed out after {spec.timeout_seconds}s")
        elif isinstance(exc, Exception):
            log.warning("job %s attempt %d failed: %s", ctx.job_id, ctx.attempt, _describe(exc))
            self._failed(work, _describe(exc))
        else:
            raise exc

    def _failed(self, work: _Work, error: str, *, delay: int | None = None) -> None:
        work.breaker_failure = True
        if work.attempt >= work.max_attempts:
            work.outcome = AttemptOutcome.dead
            work.error = f"{error} (gave up after {work.attempt} attempts)"
            return
        work.outcome = AttemptOutcome.retry
        work.error = error
        if delay is None:
            delay = self._retry.delay_seconds(self.config.retry_delay, work.attempt)
        work.delay = delay

    def _progress_reporter(self, job_id: str, attempt: int) -> Any:
        async def report(percent: int, message: str | None = None) -> None:
            async with self._sessionmaker() as session:
                await lifecycle.report_progress(
                    session,
                    job_id=job_id,
                    attempt=attempt,
                    percent=percent,
                    message=message,
                    now_ms=self._clock.now_ms(),
                )
                await session.commit()

        return report

    # -- settling ----------------------------------------------------------------------------

    def _settle_runs(self, works: list[_Work], plan: _Settlement, report: CycleReport) -> None:
        for work in works:
            outcome = work.outcome
            assert outcome is not None
            lease = work.delivery.message.lease_id
            report.counts[outcome.value] += 1
            plan.ends.append(
                AttemptEnd(
                    job_id=work.envelope.job_id,
                    attempt=work.attempt,
                    outcome=outcome,
                    error=work.error,
                    retry_delay_seconds=work.delay,
                )
            )
            if outcome in (AttemptOutcome.succeeded, AttemptOutcome.failed):
                plan.acks.append(lease)
            elif outcome is AttemptOutcome.retry:
                self._redeliver(work.delivery, plan, delay=work.delay or 0)
            elif outcome is AttemptOutcome.released:
                self._redeliver(work.delivery, plan, delay=0)
            else:
                self._dead_letter(work, plan)

    def _redeliver(
        self, delivery: Delivery, plan: _Settlement, *, delay: int, fresh: bool = False
    ) -> None:
        """Deliver again after `delay`: a retry, or a re-sent copy when a retry would count
        a delivery the job did not use (`fresh`) or exhaust the message's deliveries."""
        message = delivery.message
        if fresh or message.attempts >= self._max_deliveries:
            plan.send(
                self.queue,
                OutgoingMessage(
                    body=message.body, content_type=message.content_type, delay_seconds=delay
                ),
            )
            plan.acks.append(message.lease_id)
        else:
            plan.retries.append(RetryRequest(lease_id=message.lease_id, delay_seconds=delay))

    def _dead_letter(self, work: _Work, plan: _Settlement) -> None:
        message = work.delivery.message
        if work.final_delivery and self.config.dead_letter_queue:
            # The backend moves an exhausted message to the DLQ itself on retry.
            plan.retries.append(RetryRequest(lease_id=message.lease_id, delay_seconds=0))
            return
        self._dead_letter_copy(work.delivery, plan)
        plan.acks.append(message.lease_id)

    def _dead_letter_copy(self, delivery: Delivery, plan: _Settlement) -> None:
        dlq = self.config.dead_letter_queue
        if dlq is None:
            log.error("queue %s has no dead letter queue: message dropped", self.queue)
            return
        message = delivery.message
        plan.send(dlq, OutgoingMessage(body=message.body, content_type=message.content_type))

    async def _commit(self, plan: _Settlement, works: Sequence[_Work]) -> None:
        """Copies first, then the job store, then one ack call: a crash at any point leaves
        the message leased (delivered again) and the job store ahead of the queue."""
        for queue, messages in plan.sends.items():
            for start in range(0, len(messages), 100):
                await self._backend.send_batch(queue, messages[start : start + 100])
        await self._write_job_store(plan, works)
        if plan.acks or plan.retries:
            result = await self._backend.ack(self.queue, acks=plan.acks, retries=plan.retries)
            if result.warnings:
                log.info("queue %s: ack warnings %s", self.queue, result.warnings)
        for lease in [*plan.acks, *(r.lease_id for r in plan.retries)]:
            self._held.pop(lease, None)

    async def _write_job_store(self, plan: _Settlement, works: Sequence[_Work]) -> None:
        """The batch's outcomes and breaker results in one transaction (constant statements)."""
        judged = [w for w in works if w.breaker_failure is not None]
        if not (plan.ends or plan.dead or plan.deferred or judged):
            return
        now = self._clock.now_ms()
        async with self._sessionmaker() as session:
            await lifecycle.settle(
                session, ends=plan.ends, dead=plan.dead, deferred=plan.deferred, now_ms=now
            )
            if judged:
                breakers = Breakers(session, self._breaker)
                await breakers.load((w.envelope.tenant_id, w.envelope.type) for w in judged)
                for work in judged:
                    key = (work.envelope.tenant_id, work.envelope.type)
                    if work.breaker_failure:
                        breakers.failure(key, now, work.error)
                    else:
                        breakers.success(key, now)
                await breakers.flush()
            await session.commit()

    # -- leases --------------------------------------------------------------------------------

    async def heartbeat_once(self) -> int:
        """Extend every held lease by the visibility timeout; returns how many were extended."""
        if not self._held or not isinstance(self._backend, SupportsLeaseExtension):
            return 0
        vis = self.visibility_ms
        expires = self._clock.now_ms() + vis
        extended = await self._backend.extend_leases(self.queue, list(self._held), vis)
        for delivery in self._held.values():
            delivery.lease_expires_ms = expires
        running = [(w.envelope.job_id, w.attempt) for w in self._running.values()]
        if running:
            async with self._sessionmaker() as session:
                await lifecycle.extend_attempts(session, running, lease_expires_ms=expires)
                await session.commit()
        self._heartbeats += 1
        return extended

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_ms / 1000)
            try:
                await self.heartbeat_once()
            except Exception:  # keep beating: one failed extension is not fatal
                log.exception("queue %s: lease heartbeat failed", self.queue)

    @asynccontextmanager
    async def heartbeating(self) -> AsyncIterator[None]:
        """Run the heartbeat for the duration, unless an outer block runs it already."""
        if not self._extends or self._beating:
            yield
            return
        self._beating = True
        task = asyncio.create_task(self._heartbeat_loop())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            self._beating = False

    # -- stopping ------------------------------------------------------------------------------

    def abort(self) -> None:
        """Interrupt running handlers; their messages are released for another delivery."""
        self._abort.set()

    async def release(self) -> int:
        """Hand every buffered (unstarted) message back for immediate redelivery."""
        if not self._buffer:
            return 0
        plan = _Settlement()
        for delivery in self._buffer:
            self._redeliver(delivery, plan, delay=0)
        count = len(self._buffer)
        self._buffer = []
        await self._commit(plan, ())
        return count

    async def run(self, stop: asyncio.Event, *, poll_min_ms: int, poll_max_ms: int) -> None:
        """Loop until `stop`: fill the buffer, wait for a full batch or `max_batch_timeout`
        since the oldest buffered message arrived, run it. Releases the buffer on exit."""
        idle_ms = poll_min_ms
        timeout_ms = int(self.config.max_batch_timeout * 1000)
        async with self.heartbeating():
            try:
                while not stop.is_set():
                    try:
                        await self.fill()
                        arrived = self.oldest_buffered_ms()
                        waited = 0 if arrived is None else self._clock.now_ms() - arrived
                        if self._buffer and (
                            len(self._buffer) >= self.batch_size or waited >= timeout_ms
                        ):
                            await self.cycle(fill=False)
                            idle_ms = poll_min_ms
                            continue
                        wait_ms = poll_min_ms if self._buffer else idle_ms
                        if not self._buffer:
                            idle_ms = min(idle_ms * 2, poll_max_ms)
                    except Exception:
                        log.exception("queue %s: consumer cycle failed", self.queue)
                        wait_ms = poll_max_ms
                    with suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait_ms / 1000)
            finally:
                try:
                    await self.release()
                except Exception:
                    log.exception("queue %s: releasing buffered messages failed", self.queue)


# A lease sized to a handler's timeout gets this much slack for acking after it.
LEASE_MARGIN_MS = 60_000

# Used when neither the caller nor the settings name one (service.py picks per backend).
IDLE_POLL_MAX_MS_DEFAULT = 1_000


class Consumer:
    """Consumes the named queues (all consumed queues of the topology by default)."""

    def __init__(
        self,
        backend: QueueBackend,
        *,
        topology: Topology,
        registry: HandlerRegistry,
        resources: Resources,
        queues: Sequence[str] | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        poll_max_ms: int | None = None,
    ) -> None:
        settings = resources.settings
        names = list(queues) if queues else topology.consumed_queues
        unknown = [name for name in names if name not in topology.consumers]
        if unknown:
            raise ValueError(f"no consumer is configured for queue(s) {', '.join(unknown)}")
        self.settings = settings
        self.resources = resources
        # Longest wait between pulls while the queue stays empty (never below the minimum).
        self.poll_max_ms = max(
            settings.consumer_poll_min_ms,
            poll_max_ms or settings.consumer_poll_max_ms or IDLE_POLL_MAX_MS_DEFAULT,
        )
        self.retry = retry or RetryPolicy(
            base_seconds=settings.consumer_retry_base_seconds, jitter=settings.consumer_retry_jitter
        )
        self.breaker = breaker or BreakerPolicy(
            threshold=settings.breaker_threshold,
            window_ms=settings.breaker_window_seconds * 1000,
            cooldown_ms=settings.breaker_cooldown_seconds * 1000,
        )
        self.workers: dict[str, QueueWorker] = {
            name: QueueWorker(
                queue=name,
                config=topology.consumers[name],
                queue_max_retries=topology.queues[name].max_retries,
                backend=backend,
                registry=registry,
                resources=resources,
                retry=self.retry,
                breaker=self.breaker,
                job_types=[t for t, queue in topology.routes.items() if queue == name],
            )
            for name in names
        }

    @property
    def queues(self) -> list[str]:
        return list(self.workers)

    async def run_once(self) -> CycleReport:
        """One cycle on every queue, without waiting for batches to fill."""
        reports = await asyncio.gather(*(w.cycle() for w in self.workers.values()))
        total = CycleReport()
        for report in reports:
            total = total + report
        return total

    async def sweep_lost(self) -> int:
        """Mark `dead` the jobs whose final delivery's lease ran out with no outcome.

        The queue backend dead-letters such a message by itself (no consumer sees it again),
        so this is the only place that ends those jobs. Returns how many were marked.
        """
        clock = self.resources.clock
        now = clock.now_ms()
        cutoff = now - self.settings.consumer_lost_grace_seconds * 1000
        async with self.resources.sessionmaker() as session:
            lost = await lifecycle.lost_final_attempts(
                session, queues=self.queues, expired_before_ms=cutoff
            )
            reason = (
                "its consumer was lost during the final delivery; "
                "the message is in the dead letter queue"
            )
            await lifecycle.settle(session, dead=dict.fromkeys(lost, reason), now_ms=now)
            await session.commit()
        return len(lost)

    async def _sweeper(self) -> None:
        while True:
            try:
                await self.sweep_lost()
            except Exception:
                log.exception("sweeping lost attempts failed")
            await asyncio.sleep(self.settings.consumer_sweep_interval_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; then finish in-flight batches (interrupting them after
        the shutdown grace) and hand buffered messages back."""
        settings = self.settings
        tasks = [
            asyncio.create_task(
                worker.run(
                    stop,
                    poll_min_ms=settings.consumer_poll_min_ms,
                    poll_max_ms=self.poll_max_ms,
                )
            )
            for worker in self.workers.values()
        ]
        sweeper = asyncio.create_task(self._sweeper())
        try:
            await stop.wait()
            _, pending = await asyncio.wait(tasks, timeout=settings.consumer_shutdown_grace_seconds)
            if pending:
                log.warning("shutdown grace over: releasing in-flight messages")
                for worker in self.workers.values():
                    worker.abort()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            sweeper.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(sweeper, *tasks, return_exceptions=True)
