"""The leases a worker holds, and the heartbeat that keeps them.

A lease is held from pull until its settlement is acknowledged: buffered (not started yet),
running, or waiting in a settlement group. On a backend that can extend leases
(`SupportsLeaseExtension`) a heartbeat pushes every held lease forward; in the same
transaction it moves the lease end of the job attempts running under them, so the job store
never claims a lease the queue does not hold. A lease the backend could not extend is lost
(another consumer may have it now): it is dropped and its holder stops work on it.

Cloudflare documents no way to extend a lease, so there the lease is sized to outlast the
longest handler instead (`lease_for`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress

from app.consumer.envelope import Delivery
from app.consumer.registry import HandlerRegistry
from app.core.clock import Clock
from app.core.db import SessionMaker
from app.jobs import lifecycle
from app.observability import metrics
from app.queues.base import QueueBackend, SupportsLeaseExtension
from app.queues.topology import MAX_VISIBILITY_TIMEOUT_MS

log = logging.getLogger("jobgate.consumer")

# A lease sized to a handler's timeout gets this much slack for acking after it.
LEASE_MARGIN_MS = 60_000


def lease_for(
    backend: QueueBackend, visibility_ms: int, registry: HandlerRegistry, job_types: Sequence[str]
) -> int:
    """The visibility timeout to pull with: the configured one when leases can be extended,
    else one that outlasts the longest handler timeout of the queue's job types (a 30-minute
    order sync must not be delivered again mid-run; the price is that a crashed consumer's
    messages come back only after that long)."""
    if isinstance(backend, SupportsLeaseExtension):
        return visibility_ms
    longest = max(
        (
            spec.timeout_seconds
            for job_type in job_types
            if (spec := registry.get(job_type)) is not None and spec.timeout_seconds
        ),
        default=0.0,
    )
    if not longest:
        return visibility_ms
    return min(MAX_VISIBILITY_TIMEOUT_MS, max(visibility_ms, int(longest * 1000) + LEASE_MARGIN_MS))


class LeaseKeeper:
    """Held leases of one queue, the attempts running under them, and their heartbeat."""

    def __init__(
        self,
        *,
        queue: str,
        backend: QueueBackend,
        sessionmaker: SessionMaker,
        clock: Clock,
        visibility_ms: int,
        heartbeat_ms: int,
        on_lost: Callable[[list[str]], None],
    ) -> None:
        self.queue = queue
        self._backend = backend
        self._sessionmaker = sessionmaker
        self._clock = clock
        self.visibility_ms = visibility_ms
        self.heartbeat_ms = heartbeat_ms
        self._on_lost = on_lost
        self.extends = isinstance(backend, SupportsLeaseExtension)
        self.held: dict[str, Delivery] = {}
        self._attempts: dict[str, tuple[str, int]] = {}  # lease id → (job id, attempt)
        self._beating = False
        self.beats = 0

    def hold(self, delivery: Delivery) -> None:
        self.held[delivery.lease_id] = delivery

    def attempt_started(self, lease_id: str, job_id: str, attempt: int) -> None:
        """The job store now has an open attempt under this lease: extend it along."""
        if lease_id in self.held:
            self._attempts[lease_id] = (job_id, attempt)

    def release(self, lease_ids: Iterable[str]) -> None:
        for lease_id in lease_ids:
            self.held.pop(lease_id, None)
            self._attempts.pop(lease_id, None)

    async def beat(self) -> int:
        """Extend every held lease, and the attempts under them, by the visibility timeout
        in one transaction; drop the leases that could not be. Returns how many were kept."""
        backend = self._backend
        if not self.held or not isinstance(backend, SupportsLeaseExtension):
            return 0
        leases = list(self.held)
        vis = self.visibility_ms
        async with self._sessionmaker() as session:
            expires = self._clock.now_ms() + vis
            extended = await backend.extend_leases(self.queue, leases, vis, session=session)
            attempts = [self._attempts[lease] for lease in extended if lease in self._attempts]
            await lifecycle.extend_attempts(session, attempts, lease_expires_ms=expires)
            await session.commit()
        for lease in extended:
            if (delivery := self.held.get(lease)) is not None:
                delivery.lease_expires_ms = max(delivery.lease_expires_ms, expires)
        # A lease settled while this beat ran is no longer held: only the others are lost.
        lost = [lease for lease in leases if lease not in extended and lease in self.held]
        if lost:
            log.warning(
                "queue %s: %d lease(s) could not be extended (expired, acknowledged or "
                "delivered again elsewhere); dropping them and stopping their work",
                self.queue,
                len(lost),
            )
            self.release(lost)
            self._on_lost(lost)
        metrics.leases_extended(self.queue, len(extended))
        self.beats += 1
        return len(extended)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_ms / 1000)
            try:
                await self.beat()
            except Exception:  # keep beating: one failed extension is not fatal
                log.exception("queue %s: lease heartbeat failed", self.queue)

    @asynccontextmanager
    async def heartbeating(self) -> AsyncIterator[None]:
        """Run the heartbeat for the duration, unless an outer block runs it already."""
        if not self.extends or self._beating:
            yield
            return
        self._beating = True
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            self._beating = False
