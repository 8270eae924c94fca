"""The local queue engine: Cloudflare Queues' semantics on SQL tables.

It is the embedded default (SQLite) and also runs on PostgreSQL, where concurrent pullers
use `SELECT ... FOR UPDATE SKIP LOCKED`; on SQLite every transaction is `BEGIN IMMEDIATE`,
so a pull is an exclusive read-modify-write. All times come from an injectable clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock, SystemClock
from app.core.db import SessionMaker
from app.core.ids import hex_id
from app.jobs.models import JobStatus
from app.queues.base import (
    DEFAULT_PULL_BATCH,
    DEFAULT_VISIBILITY_TIMEOUT_MS,
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MAX_PULL_BATCH,
    MESSAGE_OVERHEAD_BYTES,
    AckResult,
    ContentType,
    LeasedMessage,
    OutgoingMessage,
    PullResult,
    QueueMetrics,
    RetryRequest,
)
from app.queues.errors import (
    BatchCountInvalid,
    BatchDelayInvalid,
    BatchTooLarge,
    MessageInvalid,
    MessageTooLarge,
    QueueNotFound,
)
from app.queues.models import QueueMessage
from app.queues.topology import (
    DEFAULT_RETENTION_SECONDS,
    MAX_DELAY_SECONDS,
    MAX_VISIBILITY_TIMEOUT_MS,
    QueueSettings,
)

_table = QueueMessage.__table__  # type: ignore[attr-defined]


def encode_body(body: Any, content_type: ContentType) -> str:
    if content_type == "text":
        if not isinstance(body, str):
            raise MessageInvalid("a text message body must be a string")
        return body
    if content_type != "json":
        raise MessageInvalid(f"content_type must be 'json' or 'text', not {content_type!r}")
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def decode_body(raw: str, content_type: str) -> Any:
    return raw if content_type == "text" else json.loads(raw)


def _check_delay(delay: int | None, *, batch: bool = False) -> None:
    if delay is None:
        return
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY_SECONDS:
        error = BatchDelayInvalid if batch else MessageInvalid
        raise error(f"delay_seconds must be an integer 0..{MAX_DELAY_SECONDS}")


def make_lease_id(message_id: str) -> str:
    """An opaque lease id that still names its message, so stale acks can be honoured."""
    raw = f"{message_id}.{secrets.token_hex(12)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def message_id_of(lease_id: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(lease_id + "=" * (-len(lease_id) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    message_id, sep, _ = raw.partition(".")
    return message_id if sep and len(message_id) == 32 else None


class LocalQueueEngine:
    """A `QueueBackend` on the job store's database."""

    def __init__(
        self,
        sessionmaker: SessionMaker,
        queues: Mapping[str, QueueSettings],
        *,
        clock: Clock | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._queues: dict[str, QueueSettings] = dict(queues)
        self.clock: Clock = clock or SystemClock()

    # -- configuration -------------------------------------------------------------------

    def declare(self, settings: QueueSettings) -> None:
        self._queues[settings.name] = settings

    def settings(self, queue: str) -> QueueSettings:
        try:
            return self._queues[queue]
        except KeyError:
            raise QueueNotFound(f"queue {queue!r} does not exist") from None

    @property
    def queue_names(self) -> list[str]:
        return list(self._queues)

    # -- producing -----------------------------------------------------------------------

    def build_rows(
        self,
        queue: str,
        messages: Sequence[OutgoingMessage],
        *,
        delay_seconds: int | None = None,
    ) -> list[dict[str, Any]]:
        """Validate messages against Cloudflare's limits and return rows to insert."""
        settings = self.settings(queue)
        if not 1 <= len(messages) <= MAX_BATCH_MESSAGES:
            raise BatchCountInvalid(f"a batch holds 1..{MAX_BATCH_MESSAGES} messages")
        _check_delay(delay_seconds, batch=True)
        now = self.clock.now_ms()
        rows: list[dict[str, Any]] = []
        total = 0
        for message in messages:
            _check_delay(message.delay_seconds)
            body = encode_body(message.body, message.content_type)
            size = len(body.encode())
            if size + MESSAGE_OVERHEAD_BYTES > MAX_MESSAGE_BYTES:
                raise MessageTooLarge(
                    f"a message may be {MAX_MESSAGE_BYTES - MESSAGE_OVERHEAD_BYTES} bytes, "
                    f"not {size}"
                )
            total += size
            delay = message.delay_seconds
            if delay is None:
                delay = delay_seconds if delay_seconds is not None else settings.delivery_delay
            rows.append(
                {
                    "id": hex_id(),
                    "queue": queue,
                    "body": body,
                    "content_type": message.content_type,
                    "size_bytes": size,
                    "enqueued_ms": now,
                    "visible_at_ms": now + delay * 1000,
                    "delay_seconds": delay,
                    "attempts": 0,
                    "lease_id": None,
                }
            )
        if total > MAX_BATCH_BYTES:
            raise BatchTooLarge(f"a batch may be {MAX_BATCH_BYTES} bytes, not {total}")
        return rows

    async def stage(
        self,
        session: AsyncSession,
        queue: str,
        messages: Sequence[OutgoingMessage],
        *,
        delay_seconds: int | None = None,
    ) -> None:
        """Write messages inside the caller's transaction (the caller commits)."""
        rows = self.build_rows(queue, messages, delay_seconds=delay_seconds)
        await session.execute(insert(_table), rows)

    async def send(self, queue: str, message: OutgoingMessage) -> QueueMetrics:
        return await self.send_batch(queue, [message])

    async def send_batch(
        self,
        queue: str,
        messages: Sequence[OutgoingMessage],
        *,
        delay_seconds: int | None = None,
    ) -> QueueMetrics:
        async with self._sessionmaker() as session:
            await self.stage(session, queue, messages, delay_seconds=delay_seconds)
            metrics = await self._metrics(session, queue)
            await session.commit()
        return metrics

    # -- consuming -----------------------------------------------------------------------

    async def pull(
        self,
        queue: str,
        *,
        batch_size: int = DEFAULT_PULL_BATCH,
        visibility_timeout_ms: int = DEFAULT_VISIBILITY_TIMEOUT_MS,
    ) -> PullResult:
        settings = self.settings(queue)
        if not 1 <= batch_size <= MAX_PULL_BATCH:
            raise MessageInvalid(f"batch_size must be 1..{MAX_PULL_BATCH}")
        if not 1 <= visibility_timeout_ms <= MAX_VISIBILITY_TIMEOUT_MS:
            raise MessageInvalid(f"visibility_timeout_ms must be 1..{MAX_VISIBILITY_TIMEOUT_MS}")
        max_deliveries = settings.max_retries + 1
        async with self._sessionmaker() as session:
            now = self.clock.now_ms()
            await self._expire(session, settings, now)
            leased: list[LeasedMessage] = []
            updates: list[dict[str, Any]] = []
            while len(leased) < batch_size:
                wanted = batch_size - len(leased)
                stmt = (
                    select(QueueMessage)
                    .where(QueueMessage.queue == queue, QueueMessage.visible_at_ms <= now)  # type: ignore[arg-type]
                    .order_by(QueueMessage.visible_at_ms, QueueMessage.id)  # type: ignore[arg-type]
                    .limit(wanted)
                    .with_for_update(skip_locked=True)
                )
                rows = list((await session.execute(stmt)).scalars().all())
                for row in rows:
                    if row.lease_id is not None and row.attempts >= max_deliveries:
                        # The last delivery's lease ran out: this was its final attempt.
                        await self._dead_letter(session, row.id, settings, now)
                        continue
                    lease_id = make_lease_id(row.id)
                    attempts = row.attempts + 1
                    updates.append(
                        {
                            "b_id": row.id,
                            "attempts": attempts,
                            "lease_id": lease_id,
                            "visible_at_ms": now + visibility_timeout_ms,
                        }
                    )
                    leased.append(self._leased(row, attempts=attempts, lease_id=lease_id))
                if len(rows) < wanted:
                    break
                if updates:
                    await self._apply_leases(session, updates)
                    updates = []
            if updates:
                await self._apply_leases(session, updates)
            metrics = await self._metrics(session, queue)
            await session.commit()
        return PullResult(messages=leased, metrics=metrics)

    @staticmethod
    def _leased(row: QueueMessage, *, attempts: int, lease_id: str) -> LeasedMessage:
        metadata = {"CF-sourceMessageSource": "api", "CF-Content-Type": row.content_type}
        if row.delay_seconds:
            metadata["CF-msg-delay-secs"] = str(row.delay_seconds)
        content_type: ContentType = "text" if row.content_type == "text" else "json"
        return LeasedMessage(
            id=row.id,
            body=decode_body(row.body, row.content_type),
            content_type=content_type,
            attempts=attempts,
            lease_id=lease_id,
            timestamp_ms=row.enqueued_ms,
            metadata=metadata,
        )

    @staticmethod
    async def _apply_leases(session: AsyncSession, updates: list[dict[str, Any]]) -> None:
        stmt = (
            update(_table)
            .where(_table.c.id == bindparam("b_id"))
            .values(
                attempts=bindparam("attempts"),
                lease_id=bindparam("lease_id"),
                visible_at_ms=bindparam("visible_at_ms"),
            )
        )
        await session.execute(stmt, updates)

    async def ack(
        self,
        queue: str,
        *,
        acks: Sequence[str] = (),
        retries: Sequence[RetryRequest] = (),
    ) -> AckResult:
        settings = self.settings(queue)
        for retry in retries:
            _check_delay(retry.delay_seconds)
        warnings: dict[str, str] = {}
        ack_count = retry_count = 0
        max_deliveries = settings.max_retries + 1
        async with self._sessionmaker() as session:
            now = self.clock.now_ms()
            ack_ids: dict[str, str] = {}
            for lease_id in acks:
                message_id = message_id_of(lease_id)
                if message_id is None:
                    warnings[lease_id] = "unknown lease"
                else:
                    ack_ids[message_id] = lease_id
            if ack_ids:
                result = await session.execute(
                    delete(_table)
                    .where(_table.c.queue == queue, _table.c.id.in_(list(ack_ids)))
                    .returning(_table.c.id)
                )
                deleted = set(result.scalars().all())
                ack_count = len(deleted)
                for message_id, lease_id in ack_ids.items():
                    if message_id not in deleted:
                        warnings[lease_id] = "message already acknowledged or expired"
            for retry in retries:
                message_id = message_id_of(retry.lease_id)
                row = (
                    await session.get(QueueMessage, message_id, with_for_update=True)
                    if message_id
                    else None
                )
                if row is None or row.queue != queue or row.lease_id != retry.lease_id:
                    warnings[retry.lease_id] = "lease not found or no longer valid"
                    continue
                retry_count += 1
                if row.attempts >= max_deliveries:
                    await self._dead_letter(session, row.id, settings, now)
                    continue
                delay = (
                    retry.delay_seconds if retry.delay_seconds is not None else settings.retry_delay
                )
                await session.execute(
                    update(_table)
                    .where(_table.c.id == row.id)
                    .values(lease_id=None, visible_at_ms=now + delay * 1000)
                )
            await session.commit()
        return AckResult(ack_count=ack_count, retry_count=retry_count, warnings=warnings)

    async def _dead_letter(
        self, session: AsyncSession, message_id: str, settings: QueueSettings, now: int
    ) -> None:
        dlq = settings.dead_letter_queue
        if dlq is None:
            await session.execute(delete(_table).where(_table.c.id == message_id))
            return
        if dlq not in self._queues:
            # Cloudflare creates a missing DLQ on first use; so do we.
            self.declare(
                QueueSettings(
                    name=dlq,
                    delivery_delay=0,
                    message_retention_period=DEFAULT_RETENTION_SECONDS,
                    max_retries=3,
                    dead_letter_queue=None,
                    retry_delay=0,
                )
            )
        await session.execute(
            update(_table)
            .where(_table.c.id == message_id)
            .values(queue=dlq, attempts=0, lease_id=None, enqueued_ms=now, visible_at_ms=now)
        )

    # -- observing -----------------------------------------------------------------------

    async def _expire(self, session: AsyncSession, settings: QueueSettings, now: int) -> None:
        cutoff = now - settings.message_retention_period * 1000
        await session.execute(
            delete(_table).where(_table.c.queue == settings.name, _table.c.enqueued_ms < cutoff)
        )

    async def _metrics(self, session: AsyncSession, queue: str) -> QueueMetrics:
        row = (
            await session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(_table.c.size_bytes), 0),
                    func.min(_table.c.enqueued_ms),
                ).where(_table.c.queue == queue)
            )
        ).one()
        return QueueMetrics(
            backlog_count=int(row[0]),
            backlog_bytes=int(row[1]),
            oldest_message_timestamp_ms=int(row[2] or 0),
        )

    async def metrics(self, queue: str) -> QueueMetrics:
        settings = self.settings(queue)
        async with self._sessionmaker() as session:
            await self._expire(session, settings, self.clock.now_ms())
            metrics = await self._metrics(session, queue)
            await session.commit()
        return metrics

    async def purge(self, queue: str) -> int:
        """Delete every message of the queue, delayed and leased ones included."""
        self.settings(queue)
        async with self._sessionmaker() as session:
            result = await session.execute(delete(_table).where(_table.c.queue == queue))
            await session.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def close(self) -> None:
        """Nothing to release: the engine borrows the application's sessions."""


class LocalDispatcher:
    """Writes job messages straight into the local engine, in the job's own transaction."""

    def __init__(self, engine: LocalQueueEngine) -> None:
        self._engine = engine

    @property
    def initial_status(self) -> JobStatus:
        return JobStatus.queued

    async def dispatch(
        self, session: AsyncSession, queue: str, messages: Sequence[OutgoingMessage]
    ) -> None:
        await self._engine.stage(session, queue, messages)
