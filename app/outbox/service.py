"""Writing to the outbox inside the job's transaction. Services never commit."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock
from app.core.db import table_of
from app.jobs.models import JobStatus
from app.outbox.models import OutboxMessage
from app.queues.base import OutgoingMessage

_table = table_of(OutboxMessage)


class OutboxDispatcher:
    """Stores job messages as outbox rows; the relay publishes them after commit.

    Jobs start `accepted` and become `queued` once Cloudflare has stored their message.
    """

    def __init__(self, clock: Clock, *, wake: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._wake = wake

    @property
    def initial_status(self) -> JobStatus:
        return JobStatus.accepted

    async def dispatch(
        self, session: AsyncSession, queue: str, messages: Sequence[OutgoingMessage]
    ) -> None:
        now = self._clock.now_ms()
        rows = []
        for message in messages:
            body = json.dumps(message.body, separators=(",", ":"), ensure_ascii=False)
            rows.append(
                {
                    "job_id": message.body["job_id"],
                    "queue": queue,
                    "body": body,
                    "size_bytes": len(body.encode()),
                    "delay_seconds": message.delay_seconds or 0,
                    "created_ms": now,
                    "available_at_ms": now,
                    "attempts": 0,
                }
            )
        await session.execute(insert(_table), rows)
        if self._wake is not None:
            # Early is fine: a relay that wakes before our commit sees the rows on its next look.
            self._wake()
