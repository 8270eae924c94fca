"""One queue's worker: lease messages, run each delivery as its own task, settle in groups.

Guarantees:
- At-least-once: a message is acked only after its outcome is committed to the job store;
  a job already finished (`succeeded`, `failed`, `dead`, `cancelled`) is acked unrun.
- At most one running attempt per job: a delivery of a job whose open attempt still holds
  its lease is not started but re-delayed until that lease ends (a duplicate copy, or the
  relay's re-send); an open attempt counts as `lost` only once its lease has expired.
- No head-of-line blocking: each delivery runs as its own task under the queue's
  `max_concurrency` semaphore, and the worker pulls again as soon as a slot frees, so a slow
  job holds one slot, never the queue. Without a lease heartbeat (Cloudflare) it leases only
  what its free slots take; with one, buffered leases are kept alive, so it leases ahead
  (`JOBGATE_CONSUMER_PREFETCH`) to interleave tenants and starts up to a batch beyond its
  free slots in one transaction.
- Batched writes: deliveries decided together start in one transaction; finished runs are
  settled in groups (`SettlementGroups`: by count, or after a short linger), each group
  with one job-store transaction of a constant number of statements (`app.jobs.lifecycle`)
  and one ack call.
- A job runs at most `max_retries + 1` times (the queue's, or the handler's when lower);
  then it is `dead` and its message is in the dead letter queue.
- Nothing is dropped: deferred work (open breaker, running duplicate) and work handed back
  on shutdown is re-delayed; a copy is re-sent instead of retried when a retry would exhaust
  the message's deliveries, and the job store's attempt count still bounds the job.
- Fairness: deliveries are started round-robin by tenant from the leased buffer, so one
  tenant's backlog cannot starve another's.
- Held leases are extended by a heartbeat (`app.consumer.leases`) when the backend can.

Only the `QueueBackend` protocol is used, so the same worker consumes the local engine and
Cloudflare. `cycle()` runs one batch with no waiting (tests); `run()` loops until stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.consumer.breaker import BreakerPolicy, Breakers
from app.consumer.envelope import Delivery, Envelope
from app.consumer.leases import LeaseKeeper, lease_for
from app.consumer.registry import (
    AnyHandlerSpec,
    HandlerRegistry,
    InvalidPayload,
    JobContext,
    PermanentFailure,
    Resources,
    RetryLater,
)
from app.consumer.retry import RetryPolicy, clamp_delay
from app.consumer.settlement import Plan, QueueRules, Work
from app.consumer.wakeup import StoreWatch, Wakeup
from app.core.clock import Clock
from app.core.db import SessionMaker
from app.jobs import lifecycle
from app.jobs.lifecycle import AttemptOutcome, AttemptStart
from app.observability import jobs as observe
from app.observability import metrics
from app.queues.base import (
    MAX_PULL_BATCH,
    LeasedMessage,
    QueueBackend,
    SupportsJointTransactions,
    SupportsLeaseExtension,
)
from app.queues.topology import ConsumerConfig

log = logging.getLogger("jobgate.consumer")
T = TypeVar("T")

# How long a finished run waits for others to share its settlement (one transaction and
# one ack call per group): short next to any handler, long next to a burst of quick ones.
SETTLE_LINGER_MS = 20
# A group that fails to commit is tried again this many times (then its leases are let go,
# so the messages come back when the leases expire).
SETTLE_TRIES = 5
MAX_SETTLE_GROUP = 100
# An idle worker woken by a commit that brought it nothing waits this long before the next
# wake-up (doubling from the first, up to the last): on SQLite a commit to any queue wakes
# every idle worker, and each pull takes the write lock the busy queue's work needs.
WAKE_SETTLE_S = (0.005, 0.1)


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


async def _within(call: Awaitable[T], timeout_seconds: float | None) -> T:
    """`call`, raising TimeoutError after `timeout_seconds` (None: no limit); one task
    where `asyncio.wait_for` makes two."""
    if not timeout_seconds:
        return await call
    async with asyncio.timeout(timeout_seconds):
        return await call


@dataclass(frozen=True, slots=True)
class _Ended:
    """How a handler's call ended: what it returned, or what it raised."""

    result: Any = None
    error: BaseException | None = None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SettlementGroups:
    """Gathers settled deliveries' plans and commits them together: as soon as `max_size`
    deliveries wait, or `linger_ms` after the first of a group arrived (while `running()`);
    `flush()` commits whatever waits now."""

    def __init__(
        self,
        commit: Callable[[Plan], Awaitable[None]],
        *,
        queue: str,
        max_size: int,
        linger_ms: int,
        abandon: Callable[[Plan], None],
    ) -> None:
        self._commit = commit
        self._queue = queue
        self.max_size = max_size
        self._linger_s = linger_ms / 1000
        self._abandon = abandon
        self._pending = Plan()
        self._lock = asyncio.Lock()
        self._arrived = asyncio.Event()
        self._closing = False
        self._failures = 0

    def add(self, plan: Plan) -> None:
        if plan:
            self._pending.merge(plan)
            self._arrived.set()

    def outcome(self, work: Work, rules: QueueRules) -> None:
        """A run's outcome, straight into the waiting group (no plan of its own to merge)."""
        self._pending.outcome(work, rules)
        self._arrived.set()

    async def flush(self) -> Plan:
        """Commit what waits; on failure it waits again (for the next flush)."""
        async with self._lock:
            plan, self._pending = self._pending, Plan()
            if not plan:
                return plan
            try:
                await self._commit(plan)
            except BaseException:
                plan.merge(self._pending)
                self._pending = plan
                raise
            return plan

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._arrived.wait()
            deadline = loop.time() + self._linger_s
            while not self._closing and self._pending.size < self.max_size:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._arrived.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            self._arrived.clear()
            if self._closing:
                return
            try:
                await self.flush()
                self._failures = 0
            except Exception:
                self._failures += 1
                log.exception("queue %s: settling %d deliveries failed", self._queue, self.size)
                if self._failures >= SETTLE_TRIES:
                    self._give_up()
                else:
                    await asyncio.sleep(min(0.1 * 2**self._failures, 2.0))
                self._arrived.set()

    def _give_up(self) -> None:
        plan, self._pending = self._pending, Plan()
        self._failures = 0
        log.error(
            "queue %s: giving up settling %d deliveries; they are delivered again when "
            "their leases expire",
            self._queue,
            plan.size,
        )
        self._abandon(plan)

    @property
    def size(self) -> int:
        return self._pending.size

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Commit groups in the background for the duration; the rest is flushed at exit."""
        self._closing = False
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            self._closing = True
            self._arrived.set()
            with suppress(asyncio.CancelledError):
                await task
            try:
                await self.flush()
            except Exception:
                log.exception("queue %s: settling at exit failed", self._queue)


class QueueWorker:
    """Consumes one queue. `cycle()` and `run()` are not meant to run at the same time."""

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
        wakeup: Wakeup | None = None,
    ) -> None:
        settings = resources.settings
        self.queue = queue
        self.config = config
        self._backend = backend
        # The local engine shares the job store's database: a batch is leased and started in
        # one transaction, and settled and acknowledged in another.
        self._joint = backend if isinstance(backend, SupportsJointTransactions) else None
        # Idle, it waits for a commit to the queue's database rather than a poll's timeout
        # (PostgreSQL's notices are the caller's, shared by a process's workers).
        self._watch: Wakeup = wakeup or StoreWatch.for_url(
            settings.db.url if self._joint is not None else None
        )
        self._empty_wakes = 0  # pulls in a row that a wake-up started and found nothing
        self._registry = registry
        self._resources = resources
        self._sessionmaker: SessionMaker = resources.sessionmaker
        self._clock: Clock = resources.clock
        self._retry = retry
        self._breaker = breaker
        self.rules = QueueRules(queue, queue_max_retries + 1, config.dead_letter_queue)
        self.batch_size = config.max_batch_size
        self.concurrency = config.max_concurrency or settings.consumer.default_concurrency
        # Buffered leases are kept alive only by a heartbeat: without one, lease one batch at
        # a time; with one, look a little further ahead so tenants can be interleaved.
        self.prefetch = (
            min(MAX_PULL_BATCH, max(self.batch_size, settings.consumer.prefetch))
            if isinstance(backend, SupportsLeaseExtension)
            else self.batch_size
        )
        # Where a batch already outnumbers the slots (its runs queue for them under leases the
        # heartbeat extends), the next batch is leased and started while half a batch still
        # queues: its transaction overlaps their runs instead of following them.
        extends = isinstance(backend, SupportsLeaseExtension)
        self._lookahead = (
            self.batch_size // 2 if extends and self.batch_size > self.concurrency else 0
        )
        self.visibility_ms = lease_for(backend, config.visibility_timeout_ms, registry, job_types)
        self.leases = LeaseKeeper(
            queue=queue,
            backend=backend,
            sessionmaker=self._sessionmaker,
            clock=self._clock,
            visibility_ms=self.visibility_ms,
            heartbeat_ms=settings.consumer.heartbeat_ms or max(10, self.visibility_ms // 3),
            on_lost=self._lost,
        )
        self._groups = SettlementGroups(
            self._commit,
            queue=queue,
            max_size=min(MAX_SETTLE_GROUP, max(self.batch_size, self.concurrency)),
            linger_ms=SETTLE_LINGER_MS,
            abandon=lambda plan: self.leases.release(plan.leases),
        )
        self._buffer: list[Delivery] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}  # lease id → its run
        # Each run (one delivery, or a batch handler's call) → its deliveries; one slot each.
        self._runs: dict[asyncio.Task[None], list[Work]] = {}
        self._works: dict[str, Work] = {}
        self._slots = asyncio.Semaphore(self.concurrency)
        self._abort = asyncio.Event()
        # Runs inside a handler call now (its task runs the call itself), and those of them
        # that `abort()` interrupted.
        self._in_handler: set[asyncio.Task[Any]] = set()
        self._interrupted: set[asyncio.Task[Any]] = set()
        self._ended = asyncio.Event()  # a run ended: a slot may be free

    # -- pulling and choosing ----------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def in_flight(self) -> int:
        """Deliveries started and not finished (running or waiting for a slot)."""
        return len(self._tasks)

    async def fill(self, *, most: int | None = None) -> int:
        """Lease more messages into the buffer (up to the prefetch, and to `most` buffered);
        returns how many."""
        if self._joint is not None:
            pulled, _ = await self._pull_and_launch(most, lambda: [])
            return pulled
        room = self._room(most)
        if room <= 0:
            return 0
        result = await self._backend.pull(
            self.queue, batch_size=room, visibility_timeout_ms=self.visibility_ms
        )
        metrics.pulled(self.queue)
        fresh = self._buffered(result.messages)
        self._hold(fresh)
        return len(fresh)

    def _room(self, most: int | None) -> int:
        room = min(self.prefetch, self.prefetch if most is None else most) - len(self._buffer)
        return min(room, MAX_PULL_BATCH)

    def _buffered(self, messages: list[LeasedMessage]) -> list[Delivery]:
        now, vis = self._clock.now_ms(), self.visibility_ms
        fresh = [Delivery(m, Envelope.parse(m.body), now + vis, now) for m in messages]
        self._buffer.extend(fresh)
        return fresh

    def _hold(self, fresh: list[Delivery]) -> None:
        """Keep these leases alive from now on (once their lease is committed: a heartbeat
        before would not find them, and count them lost)."""
        for delivery in fresh:
            self.leases.hold(delivery)

    async def _pull_and_launch(
        self, most: int | None, choose: Callable[[], list[Delivery]]
    ) -> tuple[int, list[asyncio.Task[None]]]:
        """On the local engine: lease into the buffer, then start what `choose` takes from it,
        in one transaction. Returns how many were leased and the started runs."""
        joint = self._joint
        if joint is None:
            raise TypeError("only a backend that joins transactions leases and starts at once")
        room = self._room(most)
        if room <= 0:  # nothing to lease: no transaction unless something starts
            group = choose()
            return 0, await self._launch(group) if group else []
        async with self._sessionmaker() as session:
            fresh: list[Delivery] = []
            try:
                messages = await joint.lease(
                    session, self.queue, batch_size=room, visibility_timeout_ms=self.visibility_ms
                )
                metrics.pulled(self.queue)
                fresh = self._buffered(messages)
                group = choose()
                if group:
                    tasks = await self._launch(group, session, fresh)
                else:
                    tasks = []
                    await session.commit()
                    self._hold(fresh)
            except BaseException:
                # Rolled back: those leases were never taken.
                leases = {d.lease_id for d in fresh}
                self._buffer = [d for d in self._buffer if d.lease_id not in leases]
                self.leases.release(leases)
                raise
        return len(fresh), tasks

    def oldest_buffered_ms(self) -> int | None:
        return min((d.received_ms for d in self._buffer), default=None)

    def _select(self, count: int) -> list[Delivery]:
        """Up to `count` deliveries from the buffer, round-robin by tenant, oldest first per
        tenant."""
        lanes: dict[str, deque[Delivery]] = {}
        for delivery in self._buffer:
            lanes.setdefault(delivery.tenant, deque()).append(delivery)
        chosen: list[Delivery] = []
        while len(chosen) < count and lanes:
            for tenant in list(lanes):
                lane = lanes[tenant]
                chosen.append(lane.popleft())
                if not lane:
                    del lanes[tenant]
                if len(chosen) == count:
                    break
        picked = {id(d) for d in chosen}
        self._buffer = [d for d in self._buffer if id(d) not in picked]
        return chosen

    # -- one cycle (tests) ---------------------------------------------------------------------

    async def cycle(self, *, fill: bool = True) -> CycleReport:
        """Pull (optionally), run one batch to its end, settle it as one group."""
        report = CycleReport()
        async with self.leases.heartbeating():
            batch: list[Delivery] = []

            def choose() -> list[Delivery]:
                batch.extend(self._select(self.batch_size))
                return batch

            if fill and self._joint is not None:
                report.pulled, tasks = await self._pull_and_launch(None, choose)
            else:
                if fill:
                    report.pulled = await self.fill()
                group = choose()
                tasks = await self._launch(group) if group else []
            report.selected = len(batch)
            if tasks:
                await asyncio.gather(*tasks)
            report.counts = (await self._groups.flush()).counts
        return report

    async def heartbeat_once(self) -> int:
        """One heartbeat now; returns how many leases it kept."""
        return await self.leases.beat()

    # -- starting ----------------------------------------------------------------------------

    async def _launch(
        self,
        group: list[Delivery],
        session: AsyncSession | None = None,
        fresh: list[Delivery] | None = None,
    ) -> list[asyncio.Task[None]]:
        """Decide the group's deliveries (one transaction: `session`'s when given, which this
        commits, with the leases of `fresh` taken in it) and start a task per run."""
        plan = Plan()
        try:
            if session is None:
                async with self._sessionmaker() as own:
                    works = await self._start(group, plan, own)
                    await own.commit()
            else:
                works = await self._start(group, plan, session)
                await session.commit()
        except BaseException:
            self._buffer[:0] = group  # still leased: tried again by the next launch
            raise
        self._hold(fresh or [])
        for work in works:
            self.leases.attempt_started(work.delivery.lease_id, work.envelope.job_id, work.attempt)
        self._groups.add(plan)
        tasks: list[asyncio.Task[None]] = []
        batches: dict[str, list[Work]] = {}  # a batch handler's job type → its deliveries
        runs: list[list[Work]] = []
        for work in works:
            if work.spec is not None and work.spec.batch_func is not None:
                batches.setdefault(work.spec.job_type, []).append(work)
            else:
                runs.append([work])
        for run in [*runs, *batches.values()]:
            batch = run[0].spec is not None and run[0].spec.batch_func is not None
            task = asyncio.create_task(self._execute_batch(run) if batch else self._execute(run[0]))
            self._runs[task] = run
            task.add_done_callback(self._finished)
            for work in run:
                lease = work.delivery.lease_id
                self._tasks[lease], self._works[lease] = task, work
                task.add_done_callback(lambda done, lease=lease: self._ran(lease, done))  # type: ignore[misc]
            tasks.append(task)
        return tasks

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._runs.pop(task, None)

    def _max_attempts(self, spec: AnyHandlerSpec | None) -> int:
        max_deliveries = self.rules.max_deliveries
        if spec is not None and spec.max_retries is not None:
            return min(spec.max_retries + 1, max_deliveries)
        return max_deliveries

    async def _start(self, group: list[Delivery], plan: Plan, session: AsyncSession) -> list[Work]:
        """Decide each delivery; start attempts of the ones that run (in `session`, a
        constant number of statements; the caller commits)."""
        now = self._clock.now_ms()
        rules = self.rules
        candidates: list[Work] = []
        seen: set[str] = set()
        for delivery in group:
            envelope = delivery.envelope
            if envelope is None:
                log.error(
                    "queue %s: message %s is not a job envelope", self.queue, delivery.lease_id
                )
                plan.malformed(delivery, rules)
                continue
            if envelope.job_id in seen:
                plan.skip(delivery)  # a duplicate copy in the same group: run the job once
                continue
            seen.add(envelope.job_id)
            spec = self._registry.get(envelope.type)
            candidates.append(
                Work(
                    delivery=delivery,
                    envelope=envelope,
                    spec=spec,
                    max_attempts=self._max_attempts(spec),
                    final_delivery=delivery.message.attempts >= rules.max_deliveries,
                )
            )
        if not candidates:
            return []
        runnable: list[Work] = []
        starts: list[AttemptStart] = []
        jobs = await lifecycle.load_jobs(session, [w.envelope.job_id for w in candidates])
        breakers = Breakers(session, self._breaker)
        await breakers.load(w.breaker_key for w in candidates)
        for work in candidates:
            job = jobs.get(work.envelope.job_id)
            if job is None or lifecycle.is_finished(job):
                # Already done (or deleted with its tenant): nothing to run again.
                plan.skip(work.delivery)
                continue
            if (lease_end := job.running_until(now)) is not None:
                # Another delivery's attempt runs under a live lease: never run a job
                # twice at once. Come back when that lease ends (finished by then, or
                # lost and then run again).
                delay = max(1, clamp_delay((lease_end - now) / 1000))
                plan.defer(
                    work.delivery,
                    rules,
                    job_id=job.id,
                    delay=delay,
                    reason=f"duplicate delivery while attempt {job.attempts} runs: "
                    f"re-delayed {delay}s",
                    disposition="redelayed",
                )
                continue
            # A manual retry renewed the budget: count attempts from its base.
            work.max_attempts += job.attempts_base
            if job.attempts >= work.max_attempts:
                # Its last attempt was lost with its consumer; no attempt is left.
                reason = f"no attempt left after {job.attempts} (the last one was lost)"
                plan.exhausted(work, rules, reason)
                observe.ended_unrun(self.queue, work.envelope, job.attempts, "dead", reason)
                continue
            key = work.breaker_key
            admission = breakers.admit(key, now)
            if not admission.allowed:
                delay = admission.retry_in_seconds
                plan.defer(
                    work.delivery,
                    rules,
                    job_id=job.id,
                    delay=delay,
                    reason=f"circuit open for {key[1]}: deferred {delay}s",
                    disposition="deferred",
                )
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
        await breakers.flush()
        for work in runnable:
            work.attempt = numbers[work.envelope.job_id]
        return runnable

    # -- running -----------------------------------------------------------------------------

    async def _execute(self, work: Work) -> None:
        """One delivery's run: wait for a slot, run the handler, hand the outcome over."""
        try:
            async with self._slots:
                if self._clock.now_ms() >= work.delivery.lease_expires_ms:
                    # It waited past its lease (no heartbeat): another consumer may run it.
                    log.warning(
                        "queue %s: job %s not run: its lease ran out before a slot freed",
                        self.queue,
                        work.envelope.job_id,
                    )
                    work.dropped = True
                    self.leases.release([work.delivery.lease_id])
                    return
                if self._abort.is_set():
                    work.outcome = AttemptOutcome.released
                    work.error = "released unstarted: the consumer is stopping"
                else:
                    with observe.attempt(self.queue, work.envelope, work.attempt) as run:
                        await self._invoke(work)
                        run.ended(work.outcome and work.outcome.value, work.error, delay=work.delay)
        except asyncio.CancelledError:
            if work.dropped:
                return  # its lease is gone: nothing to settle
            raise
        self._groups.outcome(work, self.rules)

    async def _execute_batch(self, works: list[Work]) -> None:
        """A batch handler's call for `works` (one job type): wait for a slot, run it once,
        hand each delivery's outcome over."""
        try:
            async with self._slots:
                live: list[Work] = []
                now = self._clock.now_ms()
                for work in works:
                    if now >= work.delivery.lease_expires_ms:
                        log.warning(
                            "queue %s: job %s not run: its lease ran out before a slot freed",
                            self.queue,
                            work.envelope.job_id,
                        )
                        work.dropped = True
                        self.leases.release([work.delivery.lease_id])
                    elif self._abort.is_set():
                        work.outcome = AttemptOutcome.released
                        work.error = "released unstarted: the consumer is stopping"
                    else:
                        live.append(work)
                if live:
                    # Each job of the call is one attempt for metrics, logs and traces.
                    jobs = [(work.envelope, work.attempt) for work in live]
                    with observe.attempts(self.queue, jobs) as runs:
                        await self._invoke_batch(live)
                        for work, run in zip(live, runs, strict=True):
                            outcome = work.outcome and work.outcome.value
                            run.ended(outcome, work.error, delay=work.delay)
        except asyncio.CancelledError:
            if all(work.dropped for work in works):
                return  # their leases are gone: nothing to settle
            raise
        plan = Plan()
        for work in works:
            if not work.dropped:
                plan.outcome(work, self.rules)
        self._groups.add(plan)

    def _ran(self, lease: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(lease, None)
        work = self._works.pop(lease, None)
        self._ended.set()
        if task.cancelled() or task.exception() is not None:
            if work is not None and not work.dropped:
                # Unsettled (the worker was cancelled or a handler raised past Exception):
                # stop holding the lease, the message comes back when it expires.
                self.leases.release([lease])

    def _lost(self, leases: list[str]) -> None:
        """The heartbeat could not keep these leases: stop their work, settle nothing."""
        gone = set(leases)
        self._buffer = [d for d in self._buffer if d.lease_id not in gone]
        for lease in leases:
            task, work = self._tasks.get(lease), self._works.get(lease)
            if task is not None and work is not None and not task.done():
                log.warning(
                    "queue %s: job %s attempt %d stopped: its lease was lost",
                    self.queue,
                    work.envelope.job_id,
                    work.attempt,
                )
                work.dropped = True
                # A batch handler's call goes on for the deliveries it still holds.
                if all(w.dropped for w in self._runs.get(task, [work])):
                    task.cancel()

    async def _invoke(self, work: Work) -> None:
        spec = work.spec
        if spec is None:
            self._failed(work, f"no handler is registered for job type {work.envelope.type!r}")
            return
        try:
            payload = spec.parse(work.envelope.payload)
        except InvalidPayload as invalid:
            # No attempt could ever succeed: failed now, the handler never sees it.
            work.outcome = AttemptOutcome.failed
            work.error = str(invalid)
            return
        ctx = self._context(work, payload)
        ended = await self._call(spec.func(ctx), spec.timeout_seconds)
        if ended is None:
            work.outcome = AttemptOutcome.released
            work.error = "interrupted: the consumer stopped before the handler finished"
            return
        self._judge(work, spec, ended.error)

    async def _call(self, call: Awaitable[Any], timeout: float | None) -> _Ended | None:
        """Run a handler's call in this task (no task of its own: a job's run is one task);
        None when `abort()` interrupted it. A cancellation from elsewhere (the worker
        stops, the lease was lost) goes on up."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a handler runs in a task")
        self._in_handler.add(task)
        try:
            result = await _within(call, timeout)
        except asyncio.CancelledError:
            if self._was_interrupted(task):
                return None
            raise
        except BaseException as exc:
            return None if self._was_interrupted(task) else _Ended(error=exc)
        finally:
            self._in_handler.discard(task)
        # A handler that swallowed the interruption finished anyway: still released.
        return None if self._was_interrupted(task) else _Ended(result=result)

    def _was_interrupted(self, task: asyncio.Task[Any]) -> bool:
        if task not in self._interrupted:
            return False
        self._interrupted.discard(task)
        task.uncancel()  # the interruption is handled here, not a cancellation of the run
        return True

    def _judge(self, work: Work, spec: AnyHandlerSpec, exc: BaseException | None) -> None:
        """A run's outcome from what its handler raised (or reported for it)."""
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
            self._failed(work, _describe(exc))
        else:
            raise exc

    async def _invoke_batch(self, works: list[Work]) -> None:
        """One call of the works' batch handler; each work's outcome from what it reports."""
        spec = works[0].spec
        if spec is None or spec.batch_func is None:
            raise TypeError("a batch run needs a batch handler")
        valid: list[Work] = []
        contexts: list[JobContext[Any]] = []
        for work in works:
            try:
                payload = spec.parse(work.envelope.payload)
            except InvalidPayload as invalid:
                work.outcome = AttemptOutcome.failed
                work.error = str(invalid)
                continue
            valid.append(work)
            contexts.append(self._context(work, payload))
        if not valid:
            return
        ended = await self._call(spec.batch_func(contexts), spec.timeout_seconds)
        if ended is None:
            for work in valid:
                work.outcome = AttemptOutcome.released
                work.error = "interrupted: the consumer stopped before the handler finished"
            return
        exc = ended.error
        if exc is not None:
            if not isinstance(exc, Exception):
                raise exc
            if not isinstance(exc, RetryLater | PermanentFailure | TimeoutError):
                log.warning(
                    "a batch of %d %s jobs failed: %s", len(valid), spec.job_type, _describe(exc)
                )
            for work in valid:
                self._judge(work, spec, exc)
            return
        outcomes = ended.result or {}
        for work in valid:
            self._judge(work, spec, outcomes.get(work.envelope.job_id))

    def _context(self, work: Work, payload: Any) -> JobContext[Any]:
        return JobContext(
            job_id=work.envelope.job_id,
            tenant_id=work.envelope.tenant_id,
            type=work.envelope.type,
            payload=payload,
            attempt=work.attempt,
            report_progress=self._progress_reporter(work.envelope.job_id, work.attempt),
            resources=self._resources,
            created_at_ms=work.delivery.message.timestamp_ms,
        )

    def _failed(self, work: Work, error: str, *, delay: int | None = None) -> None:
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

    async def _commit(self, plan: Plan) -> None:
        """On the local engine, acks, copies and the job store in one transaction. Elsewhere
        copies first, then the job store, then one ack call: a crash at any point leaves the
        message leased (delivered again) and the job store ahead of the queue."""
        if self._joint is not None:
            async with self._sessionmaker() as session:
                # Queue rows first, as the heartbeat locks them: no lock-order deadlock.
                if plan.acks or plan.retries:
                    result = await self._joint.ack_in(
                        session, self.queue, acks=plan.acks, retries=plan.retries
                    )
                    if result.warnings:
                        log.info("queue %s: ack warnings %s", self.queue, result.warnings)
                for queue, messages in plan.sends.items():
                    for start in range(0, len(messages), 100):
                        await self._joint.stage(session, queue, messages[start : start + 100])
                await self._write_job_store(plan, session)
                await session.commit()
            self.leases.release(plan.leases)
            return
        for queue, messages in plan.sends.items():
            for start in range(0, len(messages), 100):
                await self._backend.send_batch(queue, messages[start : start + 100])
        if plan.writes_job_store:
            async with self._sessionmaker() as session:
                await self._write_job_store(plan, session)
                await session.commit()
        if plan.acks or plan.retries:
            result = await self._backend.ack(self.queue, acks=plan.acks, retries=plan.retries)
            if result.warnings:
                log.info("queue %s: ack warnings %s", self.queue, result.warnings)
        self.leases.release(plan.leases)

    async def _write_job_store(self, plan: Plan, session: AsyncSession) -> None:
        """The group's outcomes and breaker verdicts (a constant number of statements)."""
        if not plan.writes_job_store:
            return
        now = self._clock.now_ms()
        await lifecycle.settle(
            session, ends=plan.ends, dead=plan.dead, deferred=plan.deferred, now_ms=now
        )
        if plan.judgements:
            breakers = Breakers(session, self._breaker)
            await breakers.load(j.key for j in plan.judgements)
            for judgement in plan.judgements:
                if judgement.failure:
                    breakers.failure(judgement.key, now, judgement.error)
                else:
                    breakers.success(judgement.key, now)
            await breakers.flush()

    # -- the loop and stopping -----------------------------------------------------------------

    def abort(self) -> None:
        """Interrupt running handlers; their messages are released for another delivery."""
        self._abort.set()
        for task in self._in_handler - self._interrupted:
            self._interrupted.add(task)
            task.cancel()

    async def release(self) -> int:
        """Hand every buffered (unstarted) message back for immediate redelivery."""
        if not self._buffer:
            return 0
        plan = Plan()
        for delivery in self._buffer:
            plan.redeliver(delivery, self.rules, delay=0)
        count = len(self._buffer)
        self._buffer = []
        self._groups.add(plan)
        await self._groups.flush()
        return count

    async def run(self, stop: asyncio.Event, *, poll_min_ms: int, poll_max_ms: int) -> None:
        """Loop until `stop`: while a slot is free, lease more and start what is buffered
        (once a batch is buffered, or `max_batch_timeout` after the oldest arrived). On stop,
        let started runs finish (`abort()` interrupts them), settle, release the buffer."""
        idle_ms = poll_min_ms
        timeout_ms = int(self.config.max_batch_timeout * 1000)
        woken = False  # the last pause ended on the store's wake-up
        stopping = asyncio.create_task(self._wake_on(stop))
        async with self.leases.heartbeating(), self._groups.running():
            try:
                while not stop.is_set():
                    self._ended.clear()
                    wait_ms: int | None = None  # None: until a run ends
                    try:
                        free = self.concurrency - len(self._runs)
                        if free > 0 or len(self._runs) < self.concurrency + self._lookahead:
                            # Without a heartbeat a buffered lease runs out: lease only what
                            # the free slots take now.
                            most = None if self.leases.extends else free
                            if await self._step(free, most, timeout_ms):
                                idle_ms = poll_min_ms
                                self._empty_wakes = 0
                                continue
                            wait_ms = poll_min_ms if self._buffer else idle_ms
                            if not self._buffer:
                                idle_ms = min(idle_ms * 2, poll_max_ms)
                                # Another queue's work woke it; a quiet spell starts over.
                                self._empty_wakes = self._empty_wakes + 1 if woken else 0
                    except Exception:
                        log.exception("queue %s: consumer cycle failed", self.queue)
                        wait_ms = poll_max_ms
                    woken = await self._pause(stop, wait_ms)
                if self._tasks:
                    await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            finally:
                stopping.cancel()
                try:
                    await self.release()
                except Exception:
                    log.exception("queue %s: releasing buffered messages failed", self.queue)

    async def _step(self, free: int, most: int | None, timeout_ms: int) -> bool:
        """Lease more, and start what is buffered once a batch is buffered, or `timeout_ms`
        after the oldest arrived (on the local engine, in one transaction). True: started."""

        started: list[Delivery] = []

        def ready() -> list[Delivery]:
            arrived = self.oldest_buffered_ms()
            waited = 0 if arrived is None else self._clock.now_ms() - arrived
            # No slot free yet (a look-ahead pull): only a whole batch starts before its time.
            wanted = min(free, self.batch_size) if free > 0 else self.batch_size
            if self._buffer and (len(self._buffer) >= wanted or waited >= timeout_ms):
                started.extend(self._select(self._launchable(free)))
            return started

        if self._joint is not None:
            await self._pull_and_launch(most, ready)
            return bool(started)
        await self.fill(most=most)
        if ready():
            await self._launch(started)
        return bool(started)

    def _launchable(self, free: int) -> int:
        """How many to start now: what the free slots take; with a heartbeat, up to a batch
        more (they wait for a slot under extended leases, started in one transaction)."""
        return max(free, self.batch_size) if self.leases.extends else free

    async def _pause(self, stop: asyncio.Event, wait_ms: int | None) -> bool:
        """Until `stop`, the end of a run, `wait_ms`, or new work in the store (then True)."""
        if not (self._watch.active and wait_ms):
            # The busy path (a wait for every run's end): no task, `stop` sets `_ended` too.
            with suppress(TimeoutError):
                async with asyncio.timeout(None if wait_ms is None else wait_ms / 1000):
                    await self._ended.wait()
            return False
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._ended.wait()),
        ]
        first, most = WAKE_SETTLE_S
        empty = self._empty_wakes
        settle_s = min(first * 2 ** (empty - 1), most) if empty else 0.0
        watch = asyncio.ensure_future(self._watch.changed(settle_s))
        waiters.append(watch)
        try:
            await asyncio.wait(waiters, timeout=wait_ms / 1000, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return watch.done() and not watch.cancelled()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._ended.set()
