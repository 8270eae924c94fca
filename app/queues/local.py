"""The local queue engine: Cloudflare Queues' semantics on SQL tables.

It is the embedded default (SQLite) and also runs on PostgreSQL, where concurrent pullers
use `SELECT ... FOR UPDATE SKIP LOCKED`; on SQLite every transaction is `BEGIN IMMEDIATE`,
so a pull is an exclusive read-modify-write. All times come from an injectable clock.

Time is applied lazily: every call first sweeps the queue (and the queues that dead-letter
into it), deleting messages past retention and moving messages whose final lease ran out to
their dead letter queue. Every step is one bulk statement, whatever the batch size.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import BindParameter

from app.core.bulk import BulkUpdate, DriverQuery, insert_rows
from app.core.clock import Clock, SystemClock
from app.core.db import SessionMaker, table_of
from app.core.ids import random_hex, uuid7_hex_many
from app.queues import counters as queue_counters
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
    QueueStats,
    RetryRequest,
)
from app.queues.errors import (
    BatchCountInvalid,
    BatchDelayInvalid,
    BatchTooLarge,
    MessageInvalid,
    MessageTooLarge,
    QueueNotFound,
    QueueRequestInvalid,
)
from app.queues.models import QueueMessage, QueuePause
from app.queues.topology import (
    DEFAULT_RETENTION_SECONDS,
    MAX_DELAY_SECONDS,
    MAX_VISIBILITY_TIMEOUT_MS,
    QueueSettings,
)

_table = table_of(QueueMessage)
_pauses = table_of(QueuePause)

# Per message, by primary key: a new lease, and a retry's return to the queue.
_LEASE = BulkUpdate(
    update(_table)
    .where(_table.c.id == bindparam("b_id"))
    .values(
        attempts=bindparam("b_attempts"),
        lease_id=bindparam("b_lease_id"),
        visible_at_ms=bindparam("b_visible_at_ms"),
    ),
    key=["b_id"],
)
_REQUEUE = BulkUpdate(
    update(_table)
    .where(_table.c.id == bindparam("b_id"))
    .values(lease_id=None, visible_at_ms=bindparam("b_visible_at_ms")),
    key=["b_id"],
)

UNKNOWN_LEASE = "unknown lease"
ACK_GONE = "message already acknowledged, expired or dead-lettered"
RETRY_STALE = "lease not found or no longer valid"


# One encoder for every message (`json.dumps` with options builds one per call).
# allow_nan=False: NaN and Infinity are not JSON, a consumer could not parse them.
_json_body = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_body(body: Any, content_type: ContentType) -> str:
    if content_type == "text":
        if not isinstance(body, str):
            # A wrong type is a schema mismatch (10207); 10203 is for the content type itself.
            raise QueueRequestInvalid("a text message body must be a string")
        return body
    if content_type != "json":
        raise MessageInvalid(f"content_type must be 'json' or 'text', not {content_type!r}")
    try:
        return _json_body.encode(body)
    except (TypeError, ValueError) as exc:
        raise MessageInvalid(f"a json message body must be JSON-serialisable: {exc}") from None


def decode_body(raw: str, content_type: str) -> Any:
    return raw if content_type == "text" else json.loads(raw)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_delay(delay: int | None, *, batch: bool = False) -> None:
    if delay is None:
        return
    if not _is_int(delay) or not 0 <= delay <= MAX_DELAY_SECONDS:
        error = BatchDelayInvalid if batch else MessageInvalid
        raise error(f"delay_seconds must be an integer 0..{MAX_DELAY_SECONDS}, not {delay!r}")


def make_lease_id(message_id: str) -> str:
    """An opaque lease id that still names its message, so stale acks can be honoured."""
    raw = f"{message_id}.{random_hex(12)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def message_id_of(lease_id: str) -> str | None:
    """The message a lease id names, or None when it is not one of ours."""
    if not isinstance(lease_id, str):
        return None
    try:
        raw = base64.urlsafe_b64decode(lease_id + "=" * (-len(lease_id) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    message_id, sep, _ = raw.partition(".")
    return message_id if sep and len(message_id) == 32 else None


def _paused(queue: str | BindParameter[str]) -> Any:
    """True while `queue`'s delivery is paused (a primary-key probe, not a scan)."""
    return exists().where(_pauses.c.queue == queue)


def _lockable(*where: Any) -> Select[Any]:
    """The ids of matching messages. SKIP LOCKED (PostgreSQL): a row locked by another call
    is being handled by it (no deadlocks)."""
    return select(_table.c.id).where(*where).with_for_update(skip_locked=True)


# The consumer's statements per pull and per settled group (see `DriverQuery`).
_COLUMNS = [c.key for c in _table.c]
_HEAD = DriverQuery(  # the queue's next visible messages
    select(_table)
    .where(
        _table.c.queue == bindparam("queue"),
        _table.c.visible_at_ms <= bindparam("now"),
        ~_paused(bindparam("queue")),
    )
    .order_by(_table.c.visible_at_ms)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
# PostgreSQL plans a pull by the table's statistics. Where they are missing (a new table
# before autovacuum's first ANALYZE) or stale (a queue that was empty, now with a burst), it
# expects a few dozen rows: it read every visible message of the queue with a bitmap scan
# and sorted them all to take the first 100 (21 ms at 20,000 visible messages, a third of
# the database's time in the end-to-end benchmark), and leased them with a hash join over a
# sequential scan of the table. A pull reads the head of its queue and rows by key, so for
# its transaction sorting and sequential scans are off: the (queue, visible_at_ms) index is
# walked in order, stopping at the batch's size, and the leased rows are found by key.
_BY_INDEX = text(
    "SELECT set_config('enable_sort', 'off', true), set_config('enable_seqscan', 'off', true)"
)
_HELD = DriverQuery(  # by primary key only, locked in id order (no deadlock between acks)
    select(_table.c.id, _table.c.queue, _table.c.lease_id, _table.c.attempts)
    .where(_table.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_table.c.id)
    .with_for_update()
)
_DELETE = DriverQuery(delete(_table).where(_table.c.id.in_(bindparam("ids", expanding=True))))
# Past the retention period. Ordered by enqueued_ms so that PostgreSQL reads the (queue,
# enqueued_ms) index, which holds only the expired messages: with stale statistics both of
# the queue's indexes looked alike to it, and it walked the (queue, visible_at_ms) one,
# every message of the queue, on every pull (70-80 ms at 10,000 messages).
_EXPIRE = DriverQuery(
    delete(_table).where(
        _table.c.id.in_(
            _lockable(
                _table.c.queue == bindparam("queue"), _table.c.enqueued_ms < bindparam("cutoff")
            ).order_by(_table.c.enqueued_ms)
        )
    )
)


class LocalQueueEngine:
    """A `QueueBackend` on the job store's database.

    Guarantees (the conformance suite checks them, see `app.queues.base`): at-least-once
    delivery; a pulled message stays invisible to every other puller until its lease expires,
    is acked or retried; `attempts` counts deliveries; after `max_retries + 1` deliveries a
    failed message moves to the queue's dead letter queue (declared on first use) or is
    deleted; messages older than the retention period are deleted, leased or not.
    """

    def __init__(
        self,
        sessionmaker: SessionMaker,
        queues: Mapping[str, QueueSettings],
        *,
        clock: Clock | None = None,
        reader: SessionMaker | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._reader = reader or sessionmaker  # for `stored`, which never writes
        self._queues: dict[str, QueueSettings] = dict(queues)
        self.clock: Clock = clock or SystemClock()

    # -- configuration -------------------------------------------------------------------

    def declare(self, settings: QueueSettings) -> None:
        """Create or replace a queue's settings (effective from the next call)."""
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
        """Validate messages against Cloudflare's limits and return rows to insert.

        All or nothing: one invalid message refuses the whole batch.
        """
        settings = self.settings(queue)
        if not 1 <= len(messages) <= MAX_BATCH_MESSAGES:
            raise BatchCountInvalid(
                f"a batch holds 1..{MAX_BATCH_MESSAGES} messages, not {len(messages)}"
            )
        _check_delay(delay_seconds, batch=True)
        now = self.clock.now_ms()
        rows: list[dict[str, Any]] = []
        total = 0
        for message, message_id in zip(messages, uuid7_hex_many(len(messages)), strict=True):
            _check_delay(message.delay_seconds)
            body = message.encoded
            if body is None or message.content_type != "json":
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
                    "id": message_id,
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
        # A plain INSERT: the gateway's group writers record it (`RecordedInserts`).
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
        rows = self.build_rows(queue, messages, delay_seconds=delay_seconds)
        async with self._sessionmaker() as session:
            settings, now = self.settings(queue), self.clock.now_ms()
            await self._expire(session, settings, now)
            await insert_rows(session, _table, rows)
            metrics = await self._metrics(session, settings, now)
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
        """Lease up to `batch_size` visible messages, oldest visible first."""
        settings = self.settings(queue)
        if not _is_int(batch_size) or not 1 <= batch_size <= MAX_PULL_BATCH:
            raise QueueRequestInvalid(f"batch_size must be 1..{MAX_PULL_BATCH}")
        if not _is_int(visibility_timeout_ms) or not (
            1 <= visibility_timeout_ms <= MAX_VISIBILITY_TIMEOUT_MS
        ):
            raise QueueRequestInvalid(
                f"visibility_timeout_ms must be 1..{MAX_VISIBILITY_TIMEOUT_MS}"
            )
        async with self._sessionmaker() as session:
            leased = await self.lease(
                session, queue, batch_size=batch_size, visibility_timeout_ms=visibility_timeout_ms
            )
            metrics = await self._metrics(session, settings, self.clock.now_ms())
            await session.commit()
        return PullResult(messages=leased, metrics=metrics)

    async def lease(
        self,
        session: AsyncSession,
        queue: str,
        *,
        batch_size: int,
        visibility_timeout_ms: int,
    ) -> list[LeasedMessage]:
        """`pull` inside the caller's transaction (the caller commits), without metrics.

        The consumer's pull: its cost does not grow with the backlog. Only the head of the
        queue is read, and exhausted messages met there are dead-lettered (each reaches the
        head once its final lease has run out; `_metrics` finds them sooner).
        """
        settings = self.settings(queue)
        now = self.clock.now_ms()
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(_BY_INDEX)
        await self._expire(session, settings, now)
        found = await _HEAD.rows(session, queue=queue, now=now, limit=batch_size)
        rows = [dict(zip(_COLUMNS, row, strict=True)) for row in found]
        max_deliveries = settings.max_retries + 1
        exhausted = [row["id"] for row in rows if row["attempts"] >= max_deliveries]
        if exhausted:
            await self._dead_letter(session, settings, _table.c.id.in_(exhausted), now)
            rows = [row for row in rows if row["attempts"] < max_deliveries]
        return await self._take(session, rows, now, visibility_timeout_ms)

    async def _take(
        self, session: AsyncSession, rows: Sequence[Mapping[str, Any]], now: int, visibility_ms: int
    ) -> list[LeasedMessage]:
        """Lease the selected rows (one bulk statement)."""
        leased = [
            self._leased(row, attempts=row["attempts"] + 1, lease_id=make_lease_id(row["id"]))
            for row in rows
        ]
        visible_at_ms = now + visibility_ms
        await _LEASE.execute(
            session,
            [
                {
                    "b_id": m.id,
                    "b_attempts": m.attempts,
                    "b_lease_id": m.lease_id,
                    "b_visible_at_ms": visible_at_ms,
                }
                for m in leased
            ],
        )
        return leased

    @staticmethod
    def _leased(row: Mapping[str, Any], *, attempts: int, lease_id: str) -> LeasedMessage:
        metadata = {"CF-sourceMessageSource": "api", "CF-Content-Type": row["content_type"]}
        if row["delay_seconds"]:
            metadata["CF-msg-delay-secs"] = str(row["delay_seconds"])
        content_type: ContentType = "text" if row["content_type"] == "text" else "json"
        return LeasedMessage(
            id=row["id"],
            body=decode_body(row["body"], row["content_type"]),
            content_type=content_type,
            attempts=attempts,
            lease_id=lease_id,
            timestamp_ms=row["enqueued_ms"],
            metadata=metadata,
        )

    async def ack(
        self,
        queue: str,
        *,
        acks: Sequence[str] = (),
        retries: Sequence[RetryRequest] = (),
    ) -> AckResult:
        """Acknowledge and retry leased messages in one transaction.

        An ack deletes its message even when the lease is stale (Cloudflare is permissive);
        a retry needs the current lease. Unknown leases only add a warning; the counts are
        of effective operations.
        """
        settings = self.settings(queue)
        ack_ids, retry_ids, warnings = self._ack_targets(acks, retries)
        if not ack_ids and not retry_ids:
            return AckResult(ack_count=0, retry_count=0, warnings=warnings)
        async with self._sessionmaker() as session:
            result = await self._ack(session, settings, ack_ids, retry_ids, warnings)
            await session.commit()
        return result

    async def ack_in(
        self,
        session: AsyncSession,
        queue: str,
        *,
        acks: Sequence[str] = (),
        retries: Sequence[RetryRequest] = (),
    ) -> AckResult:
        """`ack` inside the caller's transaction (the caller commits): a consumer on this
        engine settles its job store and its messages in one transaction."""
        settings = self.settings(queue)
        ack_ids, retry_ids, warnings = self._ack_targets(acks, retries)
        if not ack_ids and not retry_ids:
            return AckResult(ack_count=0, retry_count=0, warnings=warnings)
        return await self._ack(session, settings, ack_ids, retry_ids, warnings)

    @staticmethod
    def _ack_targets(
        acks: Sequence[str], retries: Sequence[RetryRequest]
    ) -> tuple[dict[str, str], dict[str, RetryRequest], dict[str, str]]:
        """Message ids to ack (-> lease id) and to retry, and warnings for unknown leases."""
        for retry in retries:
            _check_delay(retry.delay_seconds)
        warnings: dict[str, str] = {}
        ack_ids: dict[str, str] = {}  # message id -> lease id
        retry_ids: dict[str, RetryRequest] = {}
        for lease_id in acks:
            message_id = message_id_of(lease_id)
            if message_id is None:
                warnings[lease_id] = UNKNOWN_LEASE
            else:
                ack_ids[message_id] = lease_id
        for retry in retries:
            message_id = message_id_of(retry.lease_id)
            if message_id is None:
                warnings[retry.lease_id] = UNKNOWN_LEASE
            elif message_id in ack_ids:
                warnings[retry.lease_id] = "acknowledged in the same call"
            else:
                retry_ids[message_id] = retry
        return ack_ids, retry_ids, warnings

    async def _ack(
        self,
        session: AsyncSession,
        settings: QueueSettings,
        ack_ids: dict[str, str],
        retry_ids: dict[str, RetryRequest],
        warnings: dict[str, str],
    ) -> AckResult:
        queue = settings.name
        requeue: list[dict[str, Any]] = []
        exhausted: list[str] = []
        now = self.clock.now_ms()
        # By primary key only (a queue condition steers planners to the queue index), and
        # locked in id order so two acks of overlapping leases cannot deadlock.
        locked = await _HELD.rows(session, ids=[*ack_ids, *retry_ids])
        found = {  # message id -> (lease id, attempts)
            message_id: (lease_id, attempts)
            for message_id, row_queue, lease_id, attempts in locked
            if row_queue == queue
        }
        acked = [message_id for message_id in ack_ids if message_id in found]
        for message_id, lease_id in ack_ids.items():
            if message_id not in found:
                warnings[lease_id] = ACK_GONE
        for message_id, retry in retry_ids.items():
            held = found.get(message_id)
            if held is None or held[0] != retry.lease_id:
                warnings[retry.lease_id] = RETRY_STALE
            elif held[1] >= settings.max_retries + 1:
                exhausted.append(message_id)
            else:
                delay = (
                    retry.delay_seconds if retry.delay_seconds is not None else settings.retry_delay
                )
                requeue.append({"b_id": message_id, "b_visible_at_ms": now + delay * 1000})
        if acked:
            await _DELETE.rows(session, ids=acked)
        await _REQUEUE.execute(session, requeue)
        if exhausted:
            await self._dead_letter(session, settings, _table.c.id.in_(exhausted), now)
        return AckResult(
            ack_count=len(acked), retry_count=len(requeue) + len(exhausted), warnings=warnings
        )

    # -- time ----------------------------------------------------------------------------

    async def _sweep(self, session: AsyncSession, settings: QueueSettings, now: int) -> None:
        """Apply retention and lease expiry to `settings`' queue and the queues feeding it."""
        await self._expire(session, settings, now)
        await self._dead_letter_exhausted(session, settings, now)

    async def _expire(self, session: AsyncSession, settings: QueueSettings, now: int) -> None:
        """`_sweep`, except the queue's own exhausted messages, which `_metrics` looks for
        right after (each step is an index range over expired or leased messages only)."""
        feeding = self._feeding(settings.name)
        for source in [settings, *feeding]:
            cutoff = now - source.message_retention_period * 1000
            await _EXPIRE.rows(session, queue=source.name, cutoff=cutoff)
        for source in feeding:
            await self._dead_letter_exhausted(session, source, now)

    async def _dead_letter_exhausted(
        self, session: AsyncSession, settings: QueueSettings, now: int
    ) -> None:
        # The final delivery's lease ran out. Only leased rows (a partial index) are read:
        # a message requeued before max_retries was lowered is dead-lettered at the head.
        final = _lockable(
            _table.c.queue == settings.name,
            _table.c.lease_id.is_not(None),
            _table.c.visible_at_ms <= now,
            _table.c.attempts >= settings.max_retries + 1,
        )
        await self._dead_letter(session, settings, _table.c.id.in_(final), now)

    def _feeding(self, queue: str) -> list[QueueSettings]:
        return [
            s for s in self._queues.values() if s.dead_letter_queue == queue and s.name != queue
        ]

    async def _dead_letter(
        self, session: AsyncSession, settings: QueueSettings, where: Any, now: int
    ) -> None:
        """Move the selected messages to the dead letter queue, or drop them without one."""
        dlq = settings.dead_letter_queue
        if dlq is None:
            await session.execute(delete(_table).where(where))
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
        # A new message in the DLQ: fresh attempts, timestamp and retention.
        await session.execute(
            update(_table)
            .where(where)
            .values(
                queue=dlq,
                attempts=0,
                lease_id=None,
                delay_seconds=0,
                enqueued_ms=now,
                visible_at_ms=now,
            )
        )

    # -- observing -----------------------------------------------------------------------

    async def _metrics(
        self, session: AsyncSession, settings: QueueSettings, now: int
    ) -> QueueMetrics:
        """The queue's metrics, after dead-lettering its messages whose final lease ran out.

        No statement reads the backlog: counts and bytes come from the counter rows the
        triggers keep, the oldest message from the end of the `(queue, enqueued_ms)` index.
        """
        await self._dead_letter_exhausted(session, settings, now)
        return (await self._stored_all(session, [settings.name]))[settings.name]

    @staticmethod
    async def _stored_all(session: AsyncSession, queues: Sequence[str]) -> dict[str, QueueMetrics]:
        counted = await queue_counters.stored(session, queues)
        metrics: dict[str, QueueMetrics] = {}
        for queue in queues:
            messages, size = counted[queue]
            oldest = None
            if messages:  # the end of the (queue, enqueued_ms) index
                # Not MIN(): with stale statistics PostgreSQL computed it over the (queue,
                # visible_at_ms) index, every message of the queue; an ORDER BY only that
                # index serves without a sort makes it read one entry.
                oldest = (
                    await session.execute(
                        select(_table.c.enqueued_ms)
                        .where(_table.c.queue == queue)
                        .order_by(_table.c.enqueued_ms)
                        .limit(1)
                    )
                ).scalar()
            metrics[queue] = QueueMetrics(
                backlog_count=messages,
                backlog_bytes=size,
                oldest_message_timestamp_ms=int(oldest or 0),
            )
        return metrics

    async def stored_all(self, queues: Sequence[str]) -> dict[str, QueueMetrics]:
        """`metrics` of `queues` for a frequent sampler (admission depth): counter rows and
        one index probe per non-empty queue, in one read transaction, without applying time
        first, so without writing. Until the next call that applies it, expired messages
        still count and exhausted ones count in their queue. One transaction for all: the
        sampler runs every second on the gateway's event loop, beside its requests."""
        for queue in queues:
            self.settings(queue)
        async with self._reader() as session:
            return await self._stored_all(session, queues)

    async def metrics(self, queue: str) -> QueueMetrics:
        """Every stored message counts: visible, delayed and in flight."""
        settings = self.settings(queue)
        async with self._sessionmaker() as session:
            now = self.clock.now_ms()
            await self._expire(session, settings, now)
            metrics = await self._metrics(session, settings, now)
            await session.commit()
        return metrics

    async def purge(self, queue: str, *, session: AsyncSession | None = None) -> int:
        """Delete every message of the queue, delayed and leased ones included.

        With `session` (a transaction on this engine's database) the deletion joins it and
        the caller commits, so it can record what the purge means for its own rows with it.
        """
        self.settings(queue)
        stmt = delete(_table).where(_table.c.queue == queue)
        if session is not None:
            result = await session.execute(stmt)
        else:
            async with self._sessionmaker() as own:
                result = await own.execute(stmt)
                await own.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- operator controls -----------------------------------------------------------------

    async def set_paused(
        self, queue: str, paused: bool, *, session: AsyncSession | None = None
    ) -> None:
        """Pause or resume delivery (idempotent). A paused queue still takes messages and
        still applies retention; its pulls lease nothing. With `session` the change joins
        the caller's transaction (the emulator saves its registry with it)."""
        if session is None:
            async with self._sessionmaker() as own:
                await self.set_paused(queue, paused, session=own)
                await own.commit()
            return
        await session.execute(delete(_pauses).where(_pauses.c.queue == queue))
        if paused:
            await session.execute(
                insert(_pauses).values(queue=queue, paused_ms=self.clock.now_ms())
            )

    async def pause(self, queue: str, *, session: AsyncSession | None = None) -> None:
        self.settings(queue)
        await self.set_paused(queue, True, session=session)

    async def resume(self, queue: str, *, session: AsyncSession | None = None) -> None:
        self.settings(queue)
        await self.set_paused(queue, False, session=session)

    async def paused_queues(self) -> set[str]:
        """Every paused queue, declared here or not (the emulator loads its flags from it)."""
        async with self._sessionmaker() as session:
            names = set((await session.execute(select(_pauses.c.queue))).scalars().all())
            await session.commit()
        return names

    async def stats(self, queue: str, *, session: AsyncSession | None = None) -> QueueStats:
        """Backlog (as `metrics` counts it), messages under an unexpired lease, the oldest
        message and the paused flag, after applying time like every other call. With
        `session` it joins the caller's transaction (the caller commits)."""
        settings = self.settings(queue)
        if session is None:
            async with self._sessionmaker() as own:
                stats = await self.stats(queue, session=own)
                await own.commit()
            return stats
        now = self.clock.now_ms()
        await self._expire(session, settings, now)
        metrics = await self._metrics(session, settings, now)
        # The partial index of leased messages: a range over those in flight only.
        leased = and_(_table.c.lease_id.is_not(None), _table.c.visible_at_ms > now)
        in_flight = (
            await session.execute(select(func.count()).where(_table.c.queue == queue, leased))
        ).scalar_one()
        paused = (await session.execute(select(_paused(queue)))).scalar_one()
        return QueueStats(
            backlog=metrics.backlog_count,
            in_flight=int(in_flight),
            oldest_message_timestamp_ms=metrics.oldest_message_timestamp_ms,
            paused=bool(paused),
        )

    async def close(self) -> None:
        """Nothing to release: the engine borrows the application's sessions."""

    async def extend_leases(
        self,
        queue: str,
        lease_ids: Sequence[str],
        visibility_timeout_ms: int,
        *,
        session: AsyncSession | None = None,
    ) -> set[str]:
        """Keep still-held leases invisible for `visibility_timeout_ms` more (a heartbeat).

        Only a message whose current lease is one of `lease_ids` is extended; returns the
        lease ids that were. With `session` (a transaction on this engine's database) the
        extension joins it and the caller commits, so it can record the new lease end of its
        own rows atomically with it.
        """
        if not lease_ids:
            return set()
        self.settings(queue)
        if session is not None:
            return await self._extend(session, queue, lease_ids, visibility_timeout_ms)
        async with self._sessionmaker() as own:
            extended = await self._extend(own, queue, lease_ids, visibility_timeout_ms)
            await own.commit()
        return extended

    async def _extend(
        self, session: AsyncSession, queue: str, lease_ids: Sequence[str], visibility_ms: int
    ) -> set[str]:
        now = self.clock.now_ms()
        held = set(lease_ids)
        message_ids = sorted({m for m in map(message_id_of, held) if m is not None})
        if not message_ids:
            return set()
        # By primary key, as `ack` looks up: `lease_id` has no index, and a queue condition
        # would read every message of the queue. Locked in id order first, as `ack` locks:
        # an UPDATE by lease would lock rows in scan order and deadlock against a concurrent
        # ack of the same messages.
        stmt = (
            select(_table.c.id, _table.c.queue, _table.c.lease_id)
            .where(_table.c.id.in_(message_ids))
            .order_by(_table.c.id)
            .with_for_update()
        )
        rows = [
            row
            for row in (await session.execute(stmt)).all()
            if row.queue == queue and row.lease_id in held
        ]
        if rows:
            await session.execute(
                update(_table)
                .where(_table.c.id.in_([row.id for row in rows]))
                .values(visible_at_ms=now + visibility_ms)
            )
        return {row.lease_id for row in rows}

    # -- inspection (the emulator's peek and purge-by-ref) ---------------------------------

    async def peek(self, queue: str, *, batch_size: int = DEFAULT_PULL_BATCH) -> list[QueueMessage]:
        """Up to `batch_size` deliverable messages, oldest visible first, without leasing them."""
        settings = self.settings(queue)
        async with self._sessionmaker() as session:
            now = self.clock.now_ms()
            await self._sweep(session, settings, now)
            stmt = (
                select(QueueMessage)
                .where(QueueMessage.queue == queue, QueueMessage.visible_at_ms <= now)  # type: ignore[arg-type]
                .order_by(QueueMessage.visible_at_ms, QueueMessage.id)  # type: ignore[arg-type]
                .limit(batch_size)
            )
            rows = list((await session.execute(stmt)).scalars().all())
            await session.commit()
        return rows

    async def delete_messages(self, queue: str, message_ids: Sequence[str]) -> set[str]:
        """Delete the given messages of `queue` whatever their state; return the ids deleted."""
        self.settings(queue)
        if not message_ids:
            return set()
        async with self._sessionmaker() as session:
            result = await session.execute(
                delete(_table)
                .where(_table.c.queue == queue, _table.c.id.in_(list(message_ids)))
                .returning(_table.c.id)
            )
            deleted = set(result.scalars().all())
            await session.commit()
        return deleted

    def forget(self, queue: str) -> None:
        """Drop a queue's declaration (its messages are the caller's to purge first)."""
        self._queues.pop(queue, None)
