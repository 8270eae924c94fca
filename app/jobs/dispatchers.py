"""How a submission hands its messages to a queue backend, in the job's own transaction.

`LocalDispatcher` writes them straight into the local engine; `OutboxDispatcher` stores
outbox rows that the relay publishes to Cloudflare after commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock
from app.jobs.models import JobStatus
from app.outbox import service as outbox
from app.queues.base import OutgoingMessage
from app.queues.local import LocalQueueEngine


class Dispatcher(Protocol):
    """Hands accepted jobs to a queue backend inside the submitting transaction."""

    @property
    def initial_status(self) -> JobStatus: ...

    async def dispatch(
        self, session: AsyncSession, queue: str, messages: Sequence[OutgoingMessage]
    ) -> None: ...


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
        await outbox.stage(session, queue, messages, now_ms=self._clock.now_ms())
        if self._wake is not None:
            # Early is fine: a relay that wakes before our commit sees the rows on its next look.
            self._wake()
