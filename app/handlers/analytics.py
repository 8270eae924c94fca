"""`analytics-event`: events coalesced into one multi-row INSERT per batch.

Why this is safe for at-least-once delivery: a handler call adds its row to the process's
`EventBatcher` and then *waits* until the batch holding that row is committed; only then
does it return, so the runtime acks the job only after its row is durable. If the INSERT
fails, every caller in that batch raises and its job is retried. `job_id` is unique and the
INSERT skips conflicts, so a redelivered job (or a retry of a batch that did commit before
a crash) adds nothing. Batches close at `analytics_batch_size` rows or after
`analytics_flush_interval_ms`, whichever comes first; concurrent jobs (the runtime's
per-queue concurrency) share one statement instead of one transaction each.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from app.consumer.registry import JobContext, handler
from app.core.clock import to_datetime
from app.core.db import SessionMaker
from app.handlers import service
from app.handlers.models import AnalyticsEvent
from app.jobs.payloads import AnalyticsEventPayload


class EventBatcher:
    """Buffers rows and flushes them together; `add` returns once its row is committed."""

    def __init__(self, sessionmaker: SessionMaker, *, max_batch: int, interval_s: float) -> None:
        self._sessionmaker = sessionmaker
        self._max_batch = max_batch
        self._interval_s = interval_s
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.flushes = 0

    async def add(self, row: dict[str, Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if len(self._pending) >= self._max_batch:
            self._spawn(self._flush(self._take()))
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())
        # Shielded: a cancelled caller must not cancel the batch other callers wait on.
        await asyncio.shield(future)

    def _take(self) -> list[tuple[dict[str, Any], asyncio.Future[None]]]:
        batch, self._pending = self._pending, []
        return batch

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._interval_s)
        self._timer = None
        await self._flush(self._take())

    async def _flush(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        if not batch:
            return
        rows = list({row["job_id"]: row for row, _ in batch}.values())
        try:
            async with self._sessionmaker() as session:
                await service.upsert(
                    session, AnalyticsEvent, rows, keys=["job_id"], update_columns=[]
                )
                await session.commit()
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.flushes += 1
        for _, future in batch:
            if not future.done():
                future.set_result(None)


def batcher(ctx: JobContext[AnalyticsEventPayload]) -> EventBatcher:
    """The process's batcher (one per consumer process, created on first use)."""
    current = ctx.resources.state.get(__name__)
    if not isinstance(current, EventBatcher):
        settings = ctx.resources.settings
        current = ctx.resources.state[__name__] = EventBatcher(
            ctx.resources.sessionmaker,
            max_batch=settings.analytics.batch_size,
            interval_s=settings.analytics.flush_interval_ms / 1000,
        )
    return current


def occurred_at(ctx: JobContext[AnalyticsEventPayload]) -> datetime:
    value = ctx.payload.occurredAt
    if value is None:
        # "The submission time when omitted": the job's creation time.
        return to_datetime(ctx.created_at_ms or ctx.resources.clock.now_ms())
    # The payload model refuses times that do not convert to UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@handler("analytics-event", AnalyticsEventPayload, timeout_seconds=60)
async def record_event(ctx: JobContext[AnalyticsEventPayload]) -> None:
    """Insert the event; returns only once the row is committed (see module docstring)."""
    row = {
        "tenant_id": ctx.tenant_id,
        "job_id": ctx.job_id,
        "name": ctx.payload.name,
        "properties": ctx.payload.properties,
        "occurred_at": occurred_at(ctx),
        "recorded_at": to_datetime(ctx.resources.clock.now_ms()),
    }
    await batcher(ctx).add(row)
