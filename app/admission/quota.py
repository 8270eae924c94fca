"""In-flight quota: how many of a tenant's jobs are not finished yet.

The count (a read of the tenant's trigger-kept counter rows, `app.jobs.counters`, whatever
its backlog) is read at most once per `cache_ms` per tenant and gateway, by one task while
the others use the estimate; between reads the gateway adds what it admitted itself. A
refusal never writes.
Retry-After comes from the tenant's measured completion rate (see `depth.DrainMeter`), else
the fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from app.admission.depth import DrainMeter, retry_after_seconds
from app.admission.errors import QuotaExceeded
from app.core.clock import Clock

# Counts a tenant's unfinished jobs in the session; the job store supplies it.
CountFn = Callable[[AsyncSession, str], Awaitable[int]]


@dataclass(slots=True)
class _Tenant:
    meter: DrainMeter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    count: int = 0
    read_ms: int | None = None
    admitted_total: int = 0
    admitted_at_read: int = 0

    def estimate(self) -> int:
        return self.count + self.admitted_total - self.admitted_at_read


class InFlightQuota:
    """Refuses work that would take a tenant past its jobs-not-yet-finished quota."""

    def __init__(
        self,
        clock: Clock,
        *,
        count: CountFn,
        cache_ms: int,
        window_ms: int,
        fallback_seconds: int,
    ) -> None:
        self._clock = clock
        self._count = count
        self._cache_ms = cache_ms
        self._window_ms = window_ms
        self._fallback = fallback_seconds
        self._tenants: dict[str, _Tenant] = {}

    def _tenant(self, tenant_id: str) -> _Tenant:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant(meter=DrainMeter(self._window_ms))
        return tenant

    async def in_flight(self, session: AsyncSession, tenant_id: str) -> int:
        """The tenant's unfinished jobs: counted at most every `cache_ms`, estimated between."""
        await self.refresh(session, tenant_id)
        return self._tenant(tenant_id).estimate()

    async def refresh(
        self, session: AsyncSession, tenant_id: str, *, max_age_ms: int | None = None
    ) -> None:
        """Count the tenant's jobs again when the last count is older than `max_age_ms`
        (default `cache_ms`), unless another task is counting them right now."""
        tenant = self._tenant(tenant_id)
        max_age = self._cache_ms if max_age_ms is None else max_age_ms
        if self._fresh(tenant, max_age) or (tenant.read_ms is not None and tenant.lock.locked()):
            # Fresh, or being re-read by another task: the estimate does, don't queue.
            return
        async with tenant.lock:
            if not self._fresh(tenant, max_age):  # another task may have read it meanwhile
                admitted_before = tenant.admitted_total
                count = await self._count(session, tenant_id)
                tenant.count, tenant.read_ms = count, self._clock.now_ms()
                tenant.admitted_at_read = admitted_before
                tenant.meter.add(tenant.read_ms, count, admitted_before)

    def _fresh(self, tenant: _Tenant, max_age_ms: int | None = None) -> bool:
        max_age = self._cache_ms if max_age_ms is None else max_age_ms
        return tenant.read_ms is not None and self._clock.now_ms() - tenant.read_ms < max_age

    def fresh(self, tenant_id: str, max_age_ms: int | None = None) -> bool:
        """The tenant's count is recent enough to decide from memory: read within
        `max_age_ms` (default `cache_ms`), or being re-read right now (as in `refresh`,
        the estimate does meanwhile)."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None or tenant.read_ms is None:
            return False
        return tenant.lock.locked() or self._fresh(tenant, max_age_ms)

    def estimate(self, tenant_id: str) -> int:
        """The tenant's unfinished jobs as this gateway knows them now (no query)."""
        return self._tenant(tenant_id).estimate()

    def tenants(self) -> list[str]:
        """Tenants whose count this gateway keeps (it admitted or counted their jobs)."""
        return list(self._tenants)

    async def check(self, session: AsyncSession, tenant_id: str, jobs: int, quota: int) -> None:
        await self.refresh(session, tenant_id)
        self.check_estimate(tenant_id, jobs, quota)

    def check_estimate(self, tenant_id: str, jobs: int, quota: int) -> None:
        """Refuse from the count in memory (`refresh` keeps it recent)."""
        tenant = self._tenant(tenant_id)
        current = tenant.estimate()
        if current + jobs <= quota:
            return
        wait = retry_after_seconds(current + jobs - quota, tenant.meter.rate(), self._fallback)
        raise QuotaExceeded(
            f"in-flight quota exceeded: the tenant has {current} jobs not yet finished and its "
            f"max_in_flight quota is {quota}; this request adds {jobs}",
            retry_after=wait,
        )

    def note_admitted(self, tenant_id: str, jobs: int) -> None:
        tenant = self._tenants.get(tenant_id)
        if tenant is not None:
            tenant.admitted_total += jobs
