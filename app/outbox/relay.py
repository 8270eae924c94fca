"""The outbox relay: publishes committed outbox rows to the queue backend.

Guarantees:
- every committed row is published at least once; a row is published once unless the
  process dies between Cloudflare's answer and our commit (consumers dedupe by job id);
- several relays (gateway instances on one PostgreSQL) never publish the same row at the
  same time: a row is claimed by pushing `available_at_ms` past the publish window under
  `FOR UPDATE SKIP LOCKED`, and a crashed claimer's rows come back when the claim lapses;
- rows are coalesced into `messages/batch` calls of at most 100 messages and 256,000 bytes,
  waiting up to `linger_ms` for a batch to fill, so a stream of single jobs costs about one
  request per 100 jobs (Cloudflare allows 1,200 requests per 5 minutes per token);
- a publish the backend refuses for good (a Cloudflare validation code, 400, 413; see
  `app.queues.errors.classify`) is split in halves until the refused rows stand alone: the
  good rows are published, each refused row's job becomes `failed` with the reason;
- other failures (network, 429, 5xx) are retried with capped exponential backoff, at most
  `max_attempts` times per row; then the row's job becomes `failed` too. A failed row is
  deleted: its job holds the reason (`last_error` and a job event).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock, to_datetime
from app.core.db import SessionMaker, table_of
from app.observability import metrics, tracing
from app.outbox import counters as outbox_counters
from app.outbox.models import OutboxMessage
from app.queues.base import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, OutgoingMessage, QueueBackend
from app.queues.errors import QueueError, QueueUnavailable, Retry

logger = logging.getLogger(__name__)

_outbox = table_of(OutboxMessage)

# (session, job ids, detail, at): called inside the transaction that publishes or drops the
# jobs' outbox rows, so job status and outbox never disagree.
JobsMoved = Callable[[AsyncSession, list[str], str, datetime], Awaitable[object]]

MAX_BACKOFF_MS = 60_000
DEFAULT_MAX_ATTEMPTS = 100
# How often the oldest-unpublished-row gauge is measured.
AGE_EVERY_MS = 5000


@dataclass(slots=True)
class RelayStats:
    published_messages: int = 0
    publish_requests: int = 0
    failed_requests: int = 0
    # Rows whose jobs were failed: refused by the backend, or out of attempts.
    failed_messages: int = 0
    last_error: str | None = None
    by_queue: dict[str, int] = field(default_factory=dict)

    @property
    def messages_per_request(self) -> float:
        return self.published_messages / self.publish_requests if self.publish_requests else 0.0


@dataclass(slots=True)
class Batch:
    rows: list[OutboxMessage]
    # Closed: filled to a cap. Open: the queue's last, partial batch, which may still grow.
    closed: bool


def plan_batches(
    rows: Sequence[OutboxMessage],
    *,
    max_messages: int = MAX_BATCH_MESSAGES,
    max_bytes: int = MAX_BATCH_BYTES,
) -> list[Batch]:
    """Group rows per queue into batches, greedily filling each up to the count and size caps."""
    by_queue: dict[str, list[OutboxMessage]] = {}
    for row in rows:
        by_queue.setdefault(row.queue, []).append(row)
    batches: list[Batch] = []
    for queue_rows in by_queue.values():
        current: list[OutboxMessage] = []
        size = 0
        for row in queue_rows:
            if current and (len(current) >= max_messages or size + row.size_bytes > max_bytes):
                batches.append(Batch(current, closed=True))
                current, size = [], 0
            current.append(row)
            size += row.size_bytes
        if current:
            batches.append(Batch(current, closed=len(current) >= max_messages))
    return batches


class OutboxRelay:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        backend: QueueBackend,
        clock: Clock,
        *,
        on_published: JobsMoved,
        on_failed: JobsMoved,
        linger_ms: int = 1000,
        poll_ms: int = 250,
        claim_limit: int = 1000,
        claim_ttl_ms: int = 180_000,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_backoff_ms: int = MAX_BACKOFF_MS,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._backend = backend
        self._clock = clock
        # The job store's side of a publish or a give-up, in the relay's own transaction.
        self._on_published = on_published
        self._on_failed = on_failed
        self.linger_ms = linger_ms
        self.poll_ms = poll_ms
        self.claim_limit = claim_limit
        self.claim_ttl_ms = claim_ttl_ms
        self.max_attempts = max_attempts
        self.max_backoff_ms = max_backoff_ms
        self.stats = RelayStats()
        # Provisioning (resolving queue ids) that must succeed before the first publish.
        self._prepare = prepare
        self.ready = prepare is None
        self._wake = asyncio.Event()
        self._hinted = 0
        self._stopping = False
        # Milliseconds the relay should sleep before looking again (set by relay_once).
        self._next_look_ms = poll_ms
        self._age_measured_ms = -AGE_EVERY_MS

    def wake(self) -> None:
        """Called once per dispatched message: wake the relay when a full batch may be ready."""
        self._hinted += 1
        if self._hinted >= MAX_BATCH_MESSAGES:
            self._wake.set()

    async def pending(self) -> tuple[int, int | None]:
        """(rows ready to publish, capped at a full batch; created_ms of the oldest of them).

        Reads at most a batch of rows from the pending index, however long the backlog:
        at a full batch the relay publishes anyway, below it every ready row was read.
        """
        now = self._clock.now_ms()
        async with self._sessionmaker() as session:
            created = (
                (
                    await session.execute(
                        select(_outbox.c.created_ms)
                        .where(_outbox.c.published_at.is_(None), _outbox.c.available_at_ms <= now)
                        .order_by(_outbox.c.available_at_ms)
                        .limit(MAX_BATCH_MESSAGES)
                    )
                )
                .scalars()
                .all()
            )
            await session.commit()
        return len(created), (int(min(created)) if created else None)

    async def measure_age(self) -> float:
        """Set and return the age (s) of the oldest unpublished row: ready, claimed or backing
        off; 0 when there is none (and the pending-rows gauge). The count comes from the
        counter rows, the oldest row from its own partial index: no scan of the backlog."""
        now = self._clock.now_ms()
        self._age_measured_ms = now
        async with self._sessionmaker() as session:
            count = sum(rows for rows, _ in (await outbox_counters.unpublished(session)).values())
            oldest = (
                await session.execute(
                    select(func.min(_outbox.c.created_ms)).where(_outbox.c.published_at.is_(None))
                )
            ).scalar_one()
            await session.commit()
        age = max(0, now - int(oldest)) / 1000 if oldest is not None else 0.0
        metrics.outbox_oldest_unpublished_age.set(age)
        metrics.outbox_pending.set(count)
        return age

    async def backlog(self) -> int:
        """Every unpublished row, whether ready, claimed or backing off (counter rows)."""
        async with self._sessionmaker() as session:
            pending = await outbox_counters.unpublished(session)
            await session.commit()
        return sum(rows for rows, _ in pending.values())

    async def relay_once(self, *, force: bool = False) -> int:
        """Publish what is due; returns how many messages were published.

        Without `force`, waits (returns 0) until a full batch is ready or the oldest row has
        lingered `linger_ms`.
        """
        self._hinted = 0
        if self._clock.now_ms() - self._age_measured_ms >= AGE_EVERY_MS:
            await self.measure_age()
        count, oldest = await self.pending()
        self._next_look_ms = self.poll_ms
        if count == 0:
            return 0
        now = self._clock.now_ms()
        if not force and count < MAX_BATCH_MESSAGES and oldest is not None:
            waited = now - oldest
            if waited < self.linger_ms:
                self._next_look_ms = min(self.poll_ms, self.linger_ms - waited)
                return 0
        rows = await self._claim(now)
        published = 0
        unripe: list[OutboxMessage] = []
        for batch in plan_batches(rows):
            oldest_ms = min(row.created_ms for row in batch.rows)
            if force or batch.closed or now - oldest_ms >= self.linger_ms:
                published += await self._publish(batch.rows)
            else:
                unripe += batch.rows  # a partial batch that may still fill up: wait
        if unripe:
            await self._release(unripe, now)
        return published

    async def _release(self, rows: list[OutboxMessage], now: int) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                update(_outbox)
                .where(_outbox.c.id.in_([row.id for row in rows]))
                .values(available_at_ms=now)
            )
            await session.commit()

    async def _claim(self, now: int) -> list[OutboxMessage]:
        async with self._sessionmaker() as session:
            stmt = (
                select(OutboxMessage)
                .where(
                    OutboxMessage.published_at.is_(None),  # type: ignore[union-attr]
                    OutboxMessage.available_at_ms <= now,  # type: ignore[arg-type]
                )
                .order_by(OutboxMessage.id)  # type: ignore[arg-type]
                .limit(self.claim_limit)
                .with_for_update(skip_locked=True)
            )
            rows = list((await session.execute(stmt)).scalars().all())
            if rows:
                await session.execute(
                    update(_outbox)
                    .where(_outbox.c.id.in_([row.id for row in rows]))
                    .values(available_at_ms=now + self.claim_ttl_ms)
                )
            await session.commit()
        return rows

    async def _publish(self, batch: list[OutboxMessage]) -> int:
        """Publish one planned batch; returns how many rows were published.

        A refused batch is bisected: each half is sent on its own until the refused rows
        stand alone, so one bad row costs about 2*log2(batch) extra requests and never holds
        back the good ones. A retryable failure backs off the part that failed together with
        every part not yet tried (the backend is likely down for them too).
        """
        queue = batch[0].queue
        published = 0
        parts = [batch]
        while parts:
            part = parts.pop()
            self.stats.publish_requests += 1
            started_ns = time.time_ns()
            try:
                await self._backend.send_batch(queue, self._messages(part))
            except Exception as raised:
                # Anything unforeseen counts as retryable, so the attempt cap still holds.
                if isinstance(raised, QueueError):
                    exc = raised
                else:
                    logger.exception("outbox: unexpected publish failure")
                    exc = QueueUnavailable(f"publish failed: {type(raised).__name__}: {raised}")
                self.stats.failed_requests += 1
                self.stats.last_error = exc.detail
                metrics.outbox_publish_requests.labels(outcome="failed").inc()
                if exc.retry is Retry.never:
                    if len(part) > 1:
                        middle = len(part) // 2
                        parts += [part[middle:], part[:middle]]  # first half goes next
                    else:
                        reason = f"refused by the queue (code {exc.backend_code}): {exc.detail}"
                        await self._fail(part, reason, "rejected")
                    continue
                rest = [row for other in parts for row in other]
                await self._back_off(part + rest, exc)
                return published
            await self._mark_published(queue, part)
            if tracing.enabled():
                tracing.published(queue, [row.body for row in part], started_ns=started_ns)
            published += len(part)
        return published

    def _messages(self, rows: list[OutboxMessage]) -> list[OutgoingMessage]:
        now = self._clock.now_ms()
        return [
            OutgoingMessage(
                body=json.loads(row.body),
                delay_seconds=max(0, math.ceil(row.delay_seconds - (now - row.created_ms) / 1000)),
            )
            for row in rows
        ]

    async def _mark_published(self, queue: str, batch: list[OutboxMessage]) -> None:
        ids = [row.id for row in batch]
        published_at = to_datetime(self._clock.now_ms())
        async with self._sessionmaker() as session:
            await session.execute(
                update(_outbox).where(_outbox.c.id.in_(ids)).values(published_at=published_at)
            )
            await self._on_published(
                session, [row.job_id for row in batch], f"published to {queue}", published_at
            )
            await session.commit()
        metrics.outbox_publish_requests.labels(outcome="published").inc()
        metrics.outbox_published_messages.inc(len(batch))
        self.stats.published_messages += len(batch)
        self.stats.by_queue[queue] = self.stats.by_queue.get(queue, 0) + len(batch)

    async def _fail(self, rows: list[OutboxMessage], reason: str, outcome: str) -> None:
        """Give up on rows: delete them and fail their still-`accepted` jobs with the reason."""
        now = to_datetime(self._clock.now_ms())
        reason = reason[:1000]
        async with self._sessionmaker() as session:
            await session.execute(delete(_outbox).where(_outbox.c.id.in_([r.id for r in rows])))
            await self._on_failed(session, [row.job_id for row in rows], reason, now)
            await session.commit()
        metrics.outbox_failed_messages.labels(reason=outcome).inc(len(rows))
        self.stats.failed_messages += len(rows)
        logger.error(
            "outbox: gave up on %d message(s) for job(s) %s: %s",
            len(rows),
            ", ".join(row.job_id for row in rows[:10]),
            reason,
        )

    async def _back_off(self, batch: list[OutboxMessage], exc: QueueError) -> None:
        now = self._clock.now_ms()
        error = exc.detail
        exhausted = [row for row in batch if row.attempts + 1 >= self.max_attempts]
        retried = [row for row in batch if row.attempts + 1 < self.max_attempts]
        async with self._sessionmaker() as session:
            for row in retried:
                attempts = row.attempts + 1
                delay = min(self.max_backoff_ms, 500 * 2 ** min(attempts - 1, 20))
                await session.execute(
                    update(_outbox)
                    .where(_outbox.c.id == row.id)
                    .values(
                        attempts=attempts,
                        last_error=error[:1000],
                        available_at_ms=now + int(delay * random.uniform(0.5, 1.0)),
                    )
                )
            await session.commit()
        if retried:
            logger.warning("publishing %d messages failed, backing off: %s", len(retried), error)
        if exhausted:
            await self._fail(
                exhausted,
                f"not published after {self.max_attempts} attempts; "
                f"last error (code {exc.backend_code}): {error}",
                "attempts",
            )

    async def _prepare_backend(self) -> None:
        failures = 0
        while not self.ready and not self._stopping and self._prepare is not None:
            try:
                await self._prepare()
                self.ready = True
            except Exception as exc:  # unreachable backend: keep accepting, keep trying
                failures += 1
                delay = min(self.max_backoff_ms, 500 * 2 ** min(failures - 1, 20)) / 1000
                logger.warning("queue backend not ready (%s); retry in %.1fs", exc, delay)
                try:
                    await self.measure_age()  # the gauge keeps moving meanwhile
                except Exception:  # the database may be down too: the gauge can wait
                    logger.debug("outbox age not measured", exc_info=True)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except TimeoutError:
                    pass

    async def run(self) -> None:
        """Publish until `stop()`; survives backend and database outages."""
        await self._prepare_backend()
        while not self._stopping:
            try:
                published = await self.relay_once()
            except Exception:  # the relay must outlive any single failure
                logger.exception("outbox relay iteration failed")
                published = 0
            if published:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._next_look_ms / 1000)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
