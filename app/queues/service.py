"""The operator's queue controls: every topology queue's numbers, pause, resume, purge.

Both backends implement `SupportsQueueControl` with Cloudflare's semantics (a paused queue
takes messages, its pulls get none; a purge deletes every stored message). What a purge means
for the job store, and the in-flight count where the backend cannot tell, come from hooks the
composition root passes in (this package knows no jobs). Methods take the caller's session and
never commit: the router (or page) commits. On the local engine every call joins that
session (on SQLite a second transaction would wait for the caller's lock), which also makes
a purge and the cancellation of its jobs one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock, to_datetime
from app.core.errors import NotFound, ServiceUnavailable, ValidationFailed
from app.queues.base import QueueBackend, QueueStats, SupportsQueueControl
from app.queues.errors import QueueError, QueueNotFound
from app.queues.topology import Topology

logger = logging.getLogger(__name__)


class CancelPurged(Protocol):
    """Cancel the jobs that waited in `queue` since before `before` (their messages were
    purged); returns how many."""

    async def __call__(
        self, session: AsyncSession, *, queue: str, before: datetime, reason: str, at: datetime
    ) -> int: ...


# session -> running jobs per queue: the in-flight count where the backend cannot tell.
RunningByQueue = Callable[[AsyncSession], Awaitable[Mapping[str, int]]]


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One topology queue as `GET /v1/admin/queues` shows it."""

    name: str
    backlog: int
    in_flight: int
    oldest_age_seconds: float | None  # None when the queue is empty
    dead_letter_queue: str | None
    dead_letter_backlog: int | None  # None without a dead letter queue
    paused: bool


@dataclass(frozen=True, slots=True)
class PurgeResult:
    queue: str
    purged: int | None  # messages deleted; None when the backend does not say (Cloudflare)
    cancelled_jobs: int  # jobs that waited in the queue, now `cancelled`


class QueueControls:
    def __init__(
        self,
        backend: QueueBackend,
        topology: Topology,
        clock: Clock,
        *,
        cancel_purged: CancelPurged,
        running_by_queue: RunningByQueue,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`prepare`: provisions the topology's queues on the backend (Cloudflare), run once
        before the first control, since an operator may come before any publish or pull."""
        if not isinstance(backend, SupportsQueueControl):
            raise TypeError(f"{type(backend).__name__} has no queue controls")
        self._backend: SupportsQueueControl = backend
        self._topology = topology
        self._clock = clock
        self._cancel_purged = cancel_purged
        self._running_by_queue = running_by_queue
        self._prepare = prepare
        self._prepared = asyncio.Lock()

    @property
    def queue_names(self) -> list[str]:
        return list(self._topology.queues)

    def _check(self, name: str) -> str:
        if name not in self._topology.queues:
            raise NotFound(f"queue {name!r} is not in the topology")
        return name

    async def _ready(self) -> None:
        async with self._prepared:
            if self._prepare is not None:
                try:
                    await self._prepare()
                except Exception as exc:  # the SDK's own errors as well as ours
                    logger.warning("queue controls: provisioning failed: %s", type(exc).__name__)
                    raise ServiceUnavailable(
                        "the queue backend cannot be reached to provision the queues",
                        headers={"Retry-After": "5"},
                    ) from None
                self._prepare = None

    @asynccontextmanager
    async def _on_backend(self, name: str) -> AsyncIterator[None]:
        await self._ready()
        try:
            yield
        except QueueNotFound:
            # A topology queue the backend lost (deleted behind our back since provisioning).
            raise ServiceUnavailable(
                f"queue {name!r} is not provisioned on the queue backend",
                headers={"Retry-After": "5"},
            ) from None
        except QueueError as exc:
            if exc.status < 500:
                raise  # a specific 4xx (429 overloaded...) as the backend meant it
            raise ServiceUnavailable(
                f"the queue backend failed: {exc.detail}", headers={"Retry-After": "5"}
            ) from None

    async def _stats(self, session: AsyncSession, name: str) -> QueueStats:
        async with self._on_backend(name):
            return await self._backend.stats(name, session=session)

    async def list_queues(self, session: AsyncSession) -> list[QueueStatus]:
        """Every queue of the topology (dead letter queues included), in topology order."""
        # One after another: on SQLite each read is a write transaction (the engine applies
        # expiry), and a dozen at once would only queue for the lock.
        stats = {name: await self._stats(session, name) for name in self.queue_names}
        running: Mapping[str, int] | None = None
        if any(s.in_flight is None for s in stats.values()):
            running = await self._running_by_queue(session)
        return [self._status(name, stats, running) for name in stats]

    async def get_queue(self, session: AsyncSession, name: str) -> QueueStatus:
        self._check(name)
        names = [name]
        dlq = self._topology.queues[name].dead_letter_queue
        if dlq is not None:
            names.append(dlq)
        stats = {n: await self._stats(session, n) for n in names}
        running = None
        if stats[name].in_flight is None:
            running = await self._running_by_queue(session)
        return self._status(name, stats, running)

    def _status(
        self,
        name: str,
        stats: Mapping[str, QueueStats],
        running: Mapping[str, int] | None,
    ) -> QueueStatus:
        own = stats[name]
        in_flight = own.in_flight
        if in_flight is None:
            in_flight = (running or {}).get(name, 0)
        oldest = None
        if own.oldest_message_timestamp_ms:
            oldest = max(0.0, (self._clock.now_ms() - own.oldest_message_timestamp_ms) / 1000)
        dlq = self._topology.queues[name].dead_letter_queue
        dlq_stats = stats.get(dlq) if dlq is not None else None
        return QueueStatus(
            name=name,
            backlog=own.backlog,
            in_flight=in_flight,
            oldest_age_seconds=oldest,
            dead_letter_queue=dlq,
            dead_letter_backlog=dlq_stats.backlog if dlq_stats is not None else None,
            paused=own.paused,
        )

    async def pause(self, session: AsyncSession, name: str) -> QueueStatus:
        """Stop deliveries of `name` (idempotent); it still accepts jobs."""
        self._check(name)
        async with self._on_backend(name):
            await self._backend.pause(name, session=session)
        return await self.get_queue(session, name)

    async def resume(self, session: AsyncSession, name: str) -> QueueStatus:
        """Deliver `name` again (idempotent)."""
        self._check(name)
        async with self._on_backend(name):
            await self._backend.resume(name, session=session)
        return await self.get_queue(session, name)

    async def purge(self, session: AsyncSession, name: str, *, confirm: str | None) -> PurgeResult:
        """Delete every message of `name` (`confirm` must repeat the name) and cancel the
        jobs that waited in it, in the caller's transaction.

        A dead letter queue can be purged too; its jobs stay `dead` (their runs are over).
        """
        self._check(name)
        if confirm != name:
            raise ValidationFailed(
                f'purging deletes every message of {name!r}: send {{"confirm": "{name}"}}'
            )
        before = to_datetime(self._clock.now_ms())
        async with self._on_backend(name):
            purged = await self._backend.purge(name, session=session)
        reason = f"cancelled: its message was purged from queue {name!r} by the operator"
        cancelled = await self._cancel_purged(
            session, queue=name, before=before, reason=reason, at=to_datetime(self._clock.now_ms())
        )
        return PurgeResult(queue=name, purged=purged, cancelled_jobs=cancelled)
