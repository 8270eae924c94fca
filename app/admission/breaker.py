"""The consumer's circuit breakers, seen from the door.

While the breaker of (tenant, job type) is open, the consumer defers that work anyway
(`app.consumer.breaker`), so the gateway refuses new jobs of the pair with 503 until the
breaker half-opens (`opened_at + cooldown`): that is the honest Retry-After. Open breakers of
every tenant are read with one query (in the request's session) at most every `cache_ms`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.admission.depth import clamp_retry_after
from app.core.clock import Clock

# Reads every open breaker in the session: (tenant, job type) -> opened_at_ms. The consumer,
# which owns the breakers, supplies it (see app/bootstrap.py).
OpenBreakersFn = Callable[[AsyncSession], Awaitable[Mapping[tuple[str, str], int]]]


class BreakerGate:
    """Which (tenant, job type) pairs are refused now, and for how long."""

    def __init__(
        self, clock: Clock, *, read_open: OpenBreakersFn, cooldown_ms: int, cache_ms: int
    ) -> None:
        self._clock = clock
        self._read_open = read_open
        self._cooldown_ms = cooldown_ms
        self._cache_ms = cache_ms
        self._open: dict[tuple[str, str], int] = {}  # -> opened_at_ms
        self._read_ms: int | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, session: AsyncSession, *, max_age_ms: int | None = None) -> None:
        """Read the open breakers again when the last read is older than `max_age_ms`
        (default `cache_ms`), unless another task is reading them right now."""
        if self._fresh(max_age_ms) or (self._read_ms is not None and self._lock.locked()):
            return  # fresh, or being re-read by another task: the last read does
        async with self._lock:
            if self._fresh(max_age_ms):
                return
            self._open = dict(await self._read_open(session))
            self._read_ms = self._clock.now_ms()

    def _fresh(self, max_age_ms: int | None = None) -> bool:
        max_age = self._cache_ms if max_age_ms is None else max_age_ms
        return self._read_ms is not None and self._clock.now_ms() - self._read_ms < max_age

    def fresh(self, max_age_ms: int | None = None) -> bool:
        """The open breakers were read recently enough to decide from memory: within
        `max_age_ms` (default `cache_ms`), or they are being re-read right now (as in
        `refresh`, the last read does meanwhile)."""
        return self._read_ms is not None and (self._lock.locked() or self._fresh(max_age_ms))

    async def retry_after(self, session: AsyncSession, tenant_id: str, job_type: str) -> int | None:
        """Seconds until the pair's breaker half-opens; None when it admits work now."""
        await self.refresh(session)
        return self.retry_after_now(tenant_id, job_type)

    def retry_after_now(self, tenant_id: str, job_type: str) -> int | None:
        """`retry_after` from the breakers in memory (`refresh` keeps them recent)."""
        opened = self._open.get((tenant_id, job_type))
        if opened is None:
            return None
        remaining_ms = opened + self._cooldown_ms - self._clock.now_ms()
        if remaining_ms <= 0:
            return None  # half-open (or about to be): the consumer lets a trial through
        return clamp_retry_after(remaining_ms / 1000)
