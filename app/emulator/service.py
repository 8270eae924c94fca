"""The emulator: Cloudflare Queues' REST semantics on the local queue engine.

Guarantees:
- the registry (queues, consumers) is persisted in `emulator_queue` / `emulator_consumer`
  and loaded at start-up, so a restart keeps queues, consumers and their messages;
- the engine always holds the `QueueSettings` of every registered queue, keyed by queue id:
  delivery delay and retention from the queue, max retries, retry delay and dead letter
  queue from its consumer;
- a queue has at most one consumer of each type: an `http_pull` one (the pull API names no
  consumer, so two could not be told apart) and a `worker` one, side by side as Cloudflare
  documents; another of a type already there is refused (10105, docs/emulator.md). Pulls
  and acks follow the `http_pull` consumer's settings; a worker consumer is only registered
  (no Workers run here). `PUT .../consumers/{id}` updates that consumer or creates it.
  A dead letter queue that does not exist is created (in the queue's jurisdiction) when a
  consumer is configured and again whenever a pull or ack needs it;
- a queue's jurisdiction is set at creation only, and its dead letter queue shares it;
- pulls need an `http_pull` consumer and an unpaused queue; pushes do not. The paused flag
  lives in the local engine's `queue_pause` table (keyed by queue id), so pausing through
  this API or through the engine is the same state.

The emulator is a single process. It keeps the registry in memory, writes it through to the
database first, and serialises registry changes with one lock. Like the engine it wraps, it
runs its own short transactions: on SQLite a transaction holds the write lock, so a registry
transaction must end before the engine begins its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from app.core.clock import to_datetime
from app.core.db import SessionMaker, table_of
from app.core.ids import hex_id
from app.emulator.config import EmulatorConfig, OffsetClock
from app.emulator.errors import (
    BodyInvalid,
    FeatureNotEnabled,
    NoRoute,
    QueueIdMalformed,
    QueueNotFound,
    QueuePaused,
    StorageLimitExceeded,
)
from app.emulator.models import EmulatorConsumer, EmulatorQueue
from app.emulator.schemas import (
    CONSUMER_DEFAULTS,
    HEX_ID,
    ConsumerInput,
    QueueInput,
)
from app.emulator.throttle import RateLimiter
from app.queues.base import (
    AckResult,
    OutgoingMessage,
    PullResult,
    QueueMetrics,
    RetryRequest,
)
from app.queues.local import LocalQueueEngine, message_id_of
from app.queues.models import QueueMessage, QueuePause
from app.queues.topology import DEFAULT_RETENTION_SECONDS, QueueSettings


def _name_taken(name: str) -> BodyInvalid:
    return BodyInvalid(f"a queue named {name!r} already exists", status=409)


@dataclass(frozen=True, slots=True)
class QueueRecord:
    """A registered queue, its consumers and whether its delivery is paused, as last committed.

    The paused flag is the local engine's (`queue_pause`), so the engine's pulls and the
    emulator's API see one state.
    """

    queue: EmulatorQueue
    consumers: tuple[EmulatorConsumer, ...] = ()
    paused: bool = False

    @property
    def id(self) -> str:
        return self.queue.id

    @property
    def pull_consumer(self) -> EmulatorConsumer | None:
        """The `http_pull` consumer, whose settings pulls and acks follow."""
        return next((c for c in self.consumers if c.type == "http_pull"), None)

    def consumer(self, consumer_id: str) -> EmulatorConsumer | None:
        return next((c for c in self.consumers if c.id == consumer_id), None)


class EmulatorService:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        *,
        config: EmulatorConfig,
        clock: OffsetClock,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.config = config
        self.clock = clock
        self.engine = LocalQueueEngine(sessionmaker, {}, clock=clock)
        self.limiter = RateLimiter(config, clock)
        self._records: dict[str, QueueRecord] = {}
        self._lock = asyncio.Lock()
        # Last known backlog bytes per queue: the storage limit check is best effort.
        self._backlog: dict[str, int] = {}

    # -- registry -------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the registry from the database and declare every queue on the engine."""
        async with self._sessionmaker() as session:
            queues = (await session.execute(select(EmulatorQueue))).scalars().all()
            consumers = (await session.execute(select(EmulatorConsumer))).scalars().all()
            await session.commit()
        by_queue: dict[str, list[EmulatorConsumer]] = {}
        for consumer in sorted(consumers, key=lambda c: (c.created_at, c.id)):
            by_queue.setdefault(consumer.queue_id, []).append(consumer)
        paused = await self.engine.paused_queues()
        self._records = {
            q.id: QueueRecord(q, tuple(by_queue.get(q.id, ())), q.id in paused) for q in queues
        }
        self._declare_all()

    def get(self, queue_id: str) -> QueueRecord:
        if not HEX_ID.match(queue_id):
            raise QueueIdMalformed(f"queue id {queue_id!r} is not 32 lowercase hex characters")
        record = self._records.get(queue_id)
        if record is None:
            raise QueueNotFound(f"queue {queue_id} does not exist")
        return record

    def by_name(self, name: str) -> QueueRecord | None:
        return next((r for r in self._records.values() if r.queue.name == name), None)

    def list_queues(self, names: Sequence[str] = ()) -> list[QueueRecord]:
        records = sorted(self._records.values(), key=lambda r: (r.queue.created_at, r.id))
        return [r for r in records if r.queue.name in names] if names else records

    async def create_queue(self, given: QueueInput) -> QueueRecord:
        async with self._lock:
            assert given.queue_name is not None
            return await self._create_queue(given)

    async def _create_queue(self, given: QueueInput) -> QueueRecord:
        if given.queue_name is None:
            raise BodyInvalid("queue_name is required")
        if self.by_name(given.queue_name) is not None:
            raise _name_taken(given.queue_name)
        if len(self._records) >= self.config.max_queues:
            raise BodyInvalid(f"an account holds at most {self.config.max_queues} queues")
        now = to_datetime(self.clock.now_ms())
        queue = EmulatorQueue(
            id=hex_id(),
            name=given.queue_name,
            delivery_delay=given.delivery_delay or 0,
            message_retention_period=given.message_retention_period or DEFAULT_RETENTION_SECONDS,
            created_at=now,
            modified_at=now,
            jurisdiction=given.jurisdiction,
        )
        paused = bool(given.delivery_paused)
        await self._save(queue, paused=paused)
        record = QueueRecord(queue, (), paused)
        self._records[queue.id] = record
        self._declare_all()
        return record

    async def update_queue(self, queue_id: str, given: QueueInput, *, partial: bool) -> QueueRecord:
        """PUT replaces the settings (unset ones return to defaults); PATCH merges."""
        async with self._lock:
            record = self.get(queue_id)
            old = record.queue
            name = given.queue_name or old.name
            if name != old.name and self.by_name(name) is not None:
                raise _name_taken(name)
            if given.jurisdiction is not None and given.jurisdiction != old.jurisdiction:
                raise BodyInvalid("a queue's jurisdiction is set when it is created, never changed")

            def pick(value: Any, current: Any, default: Any) -> Any:
                if value is not None:
                    return value
                return current if partial else default

            queue = EmulatorQueue(
                id=old.id,
                name=name,
                delivery_delay=pick(given.delivery_delay, old.delivery_delay, 0),
                message_retention_period=pick(
                    given.message_retention_period,
                    old.message_retention_period,
                    DEFAULT_RETENTION_SECONDS,
                ),
                created_at=old.created_at,
                modified_at=to_datetime(self.clock.now_ms()),
                purge_started_at=old.purge_started_at,
                jurisdiction=old.jurisdiction,
            )
            paused = bool(pick(given.delivery_paused, record.paused, False))
            await self._save(queue, paused=paused)
            record = replace(record, queue=queue, paused=paused)
            self._records[queue.id] = record
            self._declare_all()
            return record

    async def delete_queue(self, queue_id: str) -> None:
        async with self._lock:
            record = self.get(queue_id)
            async with self._sessionmaker() as session:
                await session.execute(
                    delete(EmulatorConsumer).where(col(EmulatorConsumer.queue_id) == record.id)
                )
                await session.execute(
                    delete(EmulatorQueue).where(col(EmulatorQueue.id) == record.id)
                )
                await self.engine.set_paused(record.id, False, session=session)
                await session.commit()
            del self._records[record.id]
            await self.engine.purge(record.id)
            self.engine.forget(record.id)
            self._backlog.pop(record.id, None)
            self._declare_all()

    async def set_consumer(
        self, queue_id: str, given: ConsumerInput, *, consumer_id: str | None = None
    ) -> EmulatorConsumer:
        """Create a consumer (`consumer_id` None), or update the given one, creating it
        under that id when the queue has no such consumer (Cloudflare's PUT)."""
        async with self._lock:
            record = self.get(queue_id)
            if consumer_id is not None and not HEX_ID.match(consumer_id):
                raise NoRoute(f"consumer id {consumer_id!r} is not 32 lowercase hex characters")
            current = record.consumer(consumer_id) if consumer_id else None
            if consumer_id and current is None and self._consumer_anywhere(consumer_id):
                raise BodyInvalid(f"consumer id {consumer_id} belongs to another queue", status=409)
            others = [c for c in record.consumers if current is None or c.id != current.id]
            if any(c.type == given.type for c in others):
                raise FeatureNotEnabled(
                    f"queue {record.queue.name!r} already has a {given.type} consumer: this "
                    "emulator keeps one of each type per queue; update or delete it"
                )
            self._check_dead_letter_queue(record, given.dead_letter_queue)
            consumer = EmulatorConsumer(
                id=current.id if current else consumer_id or hex_id(),
                queue_id=record.id,
                type=given.type,
                script_name=given.script_name,
                dead_letter_queue=given.dead_letter_queue,
                settings=dict(given.settings),
                created_at=current.created_at if current else to_datetime(self.clock.now_ms()),
            )
            await self._save(consumer)
            self._records[record.id] = replace(record, consumers=(*others, consumer))
            if given.dead_letter_queue and self.by_name(given.dead_letter_queue) is None:
                await self._create_dead_letter_queue(record, given.dead_letter_queue)
            self._declare_all()
            return consumer

    def _consumer_anywhere(self, consumer_id: str) -> bool:
        return any(r.consumer(consumer_id) for r in self._records.values())

    def _check_dead_letter_queue(self, record: QueueRecord, name: str | None) -> None:
        if name is None:
            return
        if name == record.queue.name:
            raise BodyInvalid("a queue cannot be its own dead letter queue")
        target = self.by_name(name)
        if target is not None and target.queue.jurisdiction != record.queue.jurisdiction:
            wanted, found = record.queue.jurisdiction, target.queue.jurisdiction
            raise BodyInvalid(
                f"dead letter queue {name!r} must share the queue's jurisdiction "
                f"({wanted or 'none'}), not {found or 'none'}"
            )

    async def _create_dead_letter_queue(self, record: QueueRecord, name: str) -> None:
        """Cloudflare creates a missing dead letter queue, in its queue's jurisdiction."""
        given = QueueInput(queue_name=name, jurisdiction=record.queue.jurisdiction)
        await self._create_queue(given)

    def get_consumer(self, queue_id: str, consumer_id: str) -> tuple[QueueRecord, EmulatorConsumer]:
        record = self.get(queue_id)
        consumer = record.consumer(consumer_id)
        if consumer is None:
            raise NoRoute(f"queue {record.queue.name!r} has no consumer {consumer_id}")
        return record, consumer

    async def delete_consumer(self, queue_id: str, consumer_id: str) -> None:
        async with self._lock:
            record, consumer = self.get_consumer(queue_id, consumer_id)
            async with self._sessionmaker() as session:
                await session.execute(
                    delete(EmulatorConsumer).where(col(EmulatorConsumer.id) == consumer.id)
                )
                await session.commit()
            left = tuple(c for c in record.consumers if c.id != consumer.id)
            self._records[record.id] = replace(record, consumers=left)
            self._declare_all()

    async def _save(
        self, row: EmulatorQueue | EmulatorConsumer, *, paused: bool | None = None
    ) -> None:
        """Write `row` through (and a queue's paused flag, in the same transaction)."""
        async with self._sessionmaker() as session:
            await session.merge(row)
            if paused is not None:
                await self.engine.set_paused(row.id, paused, session=session)
            try:
                await session.commit()
            except IntegrityError:
                if isinstance(row, EmulatorQueue):
                    raise _name_taken(row.name) from None
                raise FeatureNotEnabled("the queue already has a consumer of this type") from None

    def _declare_all(self) -> None:
        for record in self._records.values():
            self.engine.declare(self._queue_settings(record))

    def _queue_settings(self, record: QueueRecord) -> QueueSettings:
        consumer = record.pull_consumer
        settings = consumer.settings if consumer else CONSUMER_DEFAULTS["http_pull"]
        dlq = None
        if consumer and consumer.dead_letter_queue:
            target = self.by_name(consumer.dead_letter_queue)
            dlq = target.id if target else None
        return QueueSettings(
            name=record.id,
            delivery_delay=record.queue.delivery_delay,
            message_retention_period=record.queue.message_retention_period,
            max_retries=int(settings.get("max_retries") or 0) if consumer else 3,
            dead_letter_queue=dlq,
            retry_delay=int(settings.get("retry_delay") or 0),
        )

    async def _ensure_dead_letter_queue(self, record: QueueRecord) -> None:
        """Recreate a consumer's dead letter queue that was deleted (Cloudflare does)."""
        consumer = record.pull_consumer
        if consumer and consumer.dead_letter_queue and not self.by_name(consumer.dead_letter_queue):
            async with self._lock:
                if not self.by_name(consumer.dead_letter_queue):
                    await self._create_dead_letter_queue(record, consumer.dead_letter_queue)

    # -- messages -------------------------------------------------------------------------

    async def push(
        self,
        record: QueueRecord,
        messages: Sequence[OutgoingMessage],
        *,
        delay_seconds: int | None = None,
    ) -> QueueMetrics:
        # Validate first: a refused batch must not use up the queue's throughput budget.
        rows = self.engine.build_rows(record.id, messages, delay_seconds=delay_seconds)
        await self._check_storage(record, sum(row["size_bytes"] for row in rows))
        self.limiter.take_messages(record.id, len(messages))
        metrics = await self.engine.send_batch(record.id, messages, delay_seconds=delay_seconds)
        self._backlog[record.id] = metrics.backlog_bytes
        return metrics

    async def _check_storage(self, record: QueueRecord, incoming: int) -> None:
        limit = self.config.max_backlog_bytes
        if self._backlog.get(record.id, 0) + incoming <= limit:
            return
        current = (await self.metrics(record)).backlog_bytes  # the cache may be stale
        if current + incoming > limit:
            raise StorageLimitExceeded(
                f"the queue's backlog would exceed {limit} bytes; purge or drain it"
            )

    async def pull(
        self, record: QueueRecord, *, batch_size: int | None, visibility_timeout_ms: int | None
    ) -> PullResult:
        consumer = record.pull_consumer
        if consumer is None:
            # Pulling is enabled per queue by an http_pull consumer: without one, no route.
            raise NoRoute(f"queue {record.queue.name!r} has no http_pull consumer")
        if record.paused:
            raise QueuePaused("queue_delivery_paused")
        await self._ensure_dead_letter_queue(record)
        # Defaults come from the consumer's settings (themselves defaulting to 5 and 30 s).
        size = batch_size or int(consumer.settings.get("batch_size") or 5)
        visibility = visibility_timeout_ms or int(
            consumer.settings.get("visibility_timeout_ms") or 30_000
        )
        granted = self.limiter.take_messages(record.id, size, partial=True)
        result = await self.engine.pull(
            record.id, batch_size=granted, visibility_timeout_ms=visibility
        )
        self.limiter.give_back(record.id, granted - len(result.messages))
        self._backlog[record.id] = result.metrics.backlog_bytes
        return result

    async def ack(
        self, record: QueueRecord, *, acks: Sequence[str], retries: Sequence[RetryRequest]
    ) -> AckResult:
        await self._ensure_dead_letter_queue(record)
        return await self.engine.ack(record.id, acks=acks, retries=retries)

    async def metrics(self, record: QueueRecord) -> QueueMetrics:
        metrics = await self.engine.metrics(record.id)
        self._backlog[record.id] = metrics.backlog_bytes
        return metrics

    async def purge(self, record: QueueRecord) -> QueueRecord:
        """Delete every message and remember when (for `GET /purge`)."""
        async with self._lock:
            record = self.get(record.id)
            await self.engine.purge(record.id)
            self._backlog[record.id] = 0
            queue = EmulatorQueue.model_validate(
                {**record.queue.model_dump(), "purge_started_at": to_datetime(self.clock.now_ms())}
            )
            await self._save(queue)
            record = replace(record, queue=queue)
            self._records[record.id] = record
            return record

    async def peek(self, record: QueueRecord, *, batch_size: int) -> list[QueueMessage]:
        return await self.engine.peek(record.id, batch_size=batch_size)

    async def purge_refs(self, record: QueueRecord, refs: Sequence[str]) -> dict[str, str]:
        """Delete peeked messages by ref; unknown refs come back as warnings."""
        warnings: dict[str, str] = {}
        wanted: dict[str, str] = {}
        for ref in refs:
            message_id = message_id_of(ref)
            if message_id is None:
                warnings[ref] = "unknown ref"
            else:
                wanted[message_id] = ref
        deleted = await self.engine.delete_messages(record.id, list(wanted))
        for message_id, ref in wanted.items():
            if message_id not in deleted:
                warnings[ref] = "message not found (already acknowledged, purged or expired)"
        return warnings

    # -- test controls --------------------------------------------------------------------

    async def reset(self) -> None:
        """Forget every queue, consumer and message of the emulator."""
        async with self._lock:
            async with self._sessionmaker() as session:
                ids = list((await session.execute(select(col(EmulatorQueue.id)))).scalars().all())
                await session.execute(delete(EmulatorConsumer))
                await session.execute(delete(EmulatorQueue))
                if ids:
                    for table in (table_of(QueueMessage), table_of(QueuePause)):
                        await session.execute(delete(table).where(table.c.queue.in_(ids)))
                await session.commit()
            for queue_id in [*ids, *self._records]:
                self.engine.forget(queue_id)
            self._records.clear()
            self._backlog.clear()
            self.limiter.reset()
