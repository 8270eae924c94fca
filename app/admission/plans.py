"""Tenant plans: per-tenant rate limits and in-flight quota over the gateway defaults.

Plans are read from `tenant_plan` at most once per `plan_cache_ms` per tenant and gateway,
so a changed plan applies everywhere within that time. Reads use the request's session (on
SQLite a second session inside a request would wait for the request's own write lock);
nothing here commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from limits import RateLimitItem, parse
from sqlalchemy.ext.asyncio import AsyncSession

from app.admission.config import check_limit
from app.admission.limiter import RouteClass
from app.admission.models import TenantPlan
from app.core.clock import Clock
from app.core.errors import NotFound, ValidationFailed
from app.tenants.models import Tenant

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolvedPlan:
    """A tenant's effective budgets: its plan's values, else the defaults."""

    name: str
    limits: Mapping[RouteClass, RateLimitItem]
    max_in_flight: int


# The route classes a plan can override (emails are set by the tenant's email policy).
PLAN_CLASSES = (RouteClass.jobs, RouteClass.batch, RouteClass.reads, RouteClass.webhooks)


def _limit_column(route_class: RouteClass) -> str:
    return f"rate_limit_{route_class.value}"


class PlanBook:
    """Resolved plans, cached per tenant."""

    def __init__(self, clock: Clock, *, defaults: ResolvedPlan, cache_ms: int) -> None:
        self._clock = clock
        self.defaults = defaults
        self._cache_ms = cache_ms
        self._plans: dict[str, tuple[ResolvedPlan, int]] = {}

    async def get(self, session: AsyncSession, tenant_id: str) -> ResolvedPlan:
        cached = self.fresh(tenant_id)
        if cached is not None:
            return cached
        return await self.read(session, tenant_id)

    def fresh(self, tenant_id: str, max_age_ms: int | None = None) -> ResolvedPlan | None:
        """The tenant's plan if it was read less than `max_age_ms` (default `cache_ms`) ago."""
        cached = self._plans.get(tenant_id)
        max_age = self._cache_ms if max_age_ms is None else max_age_ms
        if cached is not None and self._clock.now_ms() - cached[1] < max_age:
            return cached[0]
        return None

    async def read(self, session: AsyncSession, tenant_id: str) -> ResolvedPlan:
        now = self._clock.now_ms()
        row = await session.get(TenantPlan, tenant_id)
        resolved = self.resolve(row)
        self._plans[tenant_id] = (resolved, now)
        return resolved

    def forget(self, tenant_id: str) -> None:
        self._plans.pop(tenant_id, None)

    def resolve(self, row: TenantPlan | None) -> ResolvedPlan:
        if row is None:
            return self.defaults
        limits = dict(self.defaults.limits)
        for route_class in PLAN_CLASSES:
            value = getattr(row, _limit_column(route_class))
            if value:
                try:
                    limits[route_class] = parse(value)
                except ValueError:
                    logger.error("tenant %s: bad %s limit %r", row.tenant_id, route_class, value)
        return ResolvedPlan(
            name=row.plan,
            limits=limits,
            max_in_flight=row.max_in_flight or self.defaults.max_in_flight,
        )


async def set_plan(
    session: AsyncSession,
    *,
    tenant_id: str,
    now: datetime,
    plan: str = "default",
    rate_limits: Mapping[RouteClass, str | None] | None = None,
    max_in_flight: int | None = None,
) -> TenantPlan:
    """Create or replace a tenant's plan; None values fall back to the gateway defaults."""
    if await session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id} does not exist")
    if max_in_flight is not None and max_in_flight < 1:
        raise ValidationFailed("max_in_flight must be at least 1")
    row = await session.get(TenantPlan, tenant_id)
    if row is None:
        row = TenantPlan(tenant_id=tenant_id, updated_at=now)
        session.add(row)
    row.plan = plan
    row.max_in_flight = max_in_flight
    for route_class in PLAN_CLASSES:
        value = (rate_limits or {}).get(route_class)
        if value is not None:
            try:
                check_limit(value)
            except ValueError as exc:
                raise ValidationFailed(f"{route_class} limit: {exc}") from None
        setattr(row, _limit_column(route_class), value)
    row.updated_at = now
    await session.flush()
    return row
