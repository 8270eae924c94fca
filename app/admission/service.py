"""Admission control: one decision per request, before anything is stored.

Order (cheapest first; nothing is spent until everything else passed): queue depth (memory),
circuit breaker (memory, re-read at most every second), in-flight quota (memory, COUNT at
most every second per tenant), then the tenant's rate budget (memory or Redis), which is only
spent when the request is admitted. A refusal writes nothing to the database, is counted in
`jobgate_admission_refusals_total{reason, route_class}` and carries `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from limits import parse
from sqlalchemy.ext.asyncio import AsyncSession

from app.admission import email_policy
from app.admission.breaker import BreakerGate, OpenBreakersFn
from app.admission.config import AdmissionSettings
from app.admission.depth import DepthMonitor, PendingFn, SampleAllFn
from app.admission.errors import AdmissionUnknown, BreakerOpen, Refusal
from app.admission.limiter import (
    Charge,
    LimiterUnavailable,
    RouteClass,
    TenantLimiter,
    rate_limit_headers,
)
from app.admission.models import EmailPolicy
from app.admission.plans import PlanBook, ResolvedPlan
from app.admission.quota import CountFn, InFlightQuota
from app.core.clock import Clock
from app.core.db import SessionMaker
from app.core.periodic import run_every
from app.observability import metrics
from app.queues.topology import Topology

logger = logging.getLogger(__name__)

# A tenant admitted from memory within this long is kept warm by the background refresh.
ACTIVE_TENANT_MS = 60_000


@dataclass(frozen=True, slots=True)
class WebhookAdmission:
    """A webhook's jobs are admitted; `delay_seconds` > 0 when a breaker is open for one of
    their types: store them delayed by that much instead of refusing the sender."""

    delay_seconds: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class AdmissionControl:
    """The gateway's admission decisions (one instance per gateway process)."""

    def __init__(
        self,
        *,
        settings: AdmissionSettings,
        topology: Topology,
        plans: PlanBook,
        limiter: TenantLimiter,
        quota: InFlightQuota,
        breakers: BreakerGate,
        depth: DepthMonitor,
        clock: Clock,
        reader: SessionMaker | None = None,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.plans = plans
        self.limiter = limiter
        self.quota = quota
        self.breakers = breakers
        self.depth = depth
        self._clock = clock
        self._reader = reader
        self._sampler: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        # Tenants admitted from memory lately (-> when), whose state the keeper refreshes.
        self._active: dict[str, int] = {}

    @classmethod
    def build(
        cls,
        settings: AdmissionSettings,
        *,
        breaker_cooldown_seconds: int,
        clock: Clock,
        topology: Topology,
        sample: SampleAllFn,
        pending: PendingFn | None,
        count_unfinished: CountFn,
        open_breakers: OpenBreakersFn,
        reader: SessionMaker | None = None,
    ) -> AdmissionControl:
        """Admission from settings; the backend's depth `sample`, the outbox backlog
        (`pending`, Cloudflare only) and the readers of other domains are handed in. With a
        `reader` (read-only sessions), a background task keeps active tenants' state recent
        (`start`)."""
        defaults = ResolvedPlan(
            name="default",
            limits={
                RouteClass.jobs: parse(settings.rate_limit_jobs),
                RouteClass.batch: parse(settings.rate_limit_batch),
                RouteClass.reads: parse(settings.rate_limit_reads),
                RouteClass.webhooks: parse(settings.rate_limit_webhooks),
            },
            max_in_flight=settings.max_in_flight,
        )
        return cls(
            settings=settings,
            topology=topology,
            plans=PlanBook(clock, defaults=defaults, cache_ms=settings.plan_cache_ms),
            limiter=TenantLimiter(settings.redis_url, prefix=settings.redis_prefix),
            quota=InFlightQuota(
                clock,
                count=count_unfinished,
                cache_ms=settings.quota_cache_ms,
                window_ms=settings.drain_window_ms,
                fallback_seconds=settings.retry_after_fallback_seconds,
            ),
            breakers=BreakerGate(
                clock,
                read_open=open_breakers,
                cooldown_ms=breaker_cooldown_seconds * 1000,
                cache_ms=settings.breaker_cache_ms,
            ),
            depth=DepthMonitor(
                set(topology.routes.values()),
                settings=settings,
                clock=clock,
                sample=sample,
                pending=pending,
            ),
            clock=clock,
            reader=reader,
        )

    # -- decisions -------------------------------------------------------------------------

    async def admit_request(
        self, session: AsyncSession, tenant_id: str, route_class: RouteClass
    ) -> dict[str, str]:
        """One unit of `route_class` (reads); returns the rate-limit headers."""
        with _counted(route_class):
            plan = await self.plans.get(session, tenant_id)
            return await self._charge(tenant_id, [Charge(route_class, plan.limits[route_class])])

    async def admit_jobs(
        self,
        session: AsyncSession,
        tenant_id: str,
        job_types: Sequence[str],
        route_class: RouteClass,
        recipients: Sequence[email_policy.Recipient] = (),
    ) -> dict[str, str]:
        """Admit jobs of `job_types` (one entry per job) or raise a `Refusal`.

        `recipients` are the send-email jobs' recipients: each must be allowed by the
        tenant's email policy (422 otherwise) and costs one unit of its email rate.
        """
        policy = None
        if recipients:
            policy = await email_policy.get_policy(session, tenant_id)
            email_policy.check_recipients(policy, recipients)
        with _counted(route_class):
            plan = await self.plans.get(session, tenant_id)
            if any(self.settings.breaker_applies(job_type) for job_type in job_types):
                await self.breakers.refresh(session)
            await self.quota.refresh(session, tenant_id)
            return await self._decide(tenant_id, plan, job_types, route_class, policy, recipients)

    async def admit_jobs_from_memory(
        self, tenant_id: str, job_types: Sequence[str], route_class: RouteClass
    ) -> dict[str, str] | None:
        """`admit_jobs` for jobs without recipients, deciding from memory only; None when
        something must be read first (a tenant not seen lately): then call `admit_jobs`.

        The background refresh (`start`) keeps the plan, breakers and in-flight count of
        active tenants recent, so under load the request path runs no query.
        """
        # The keeper re-reads at 3/4 of each cache's age; a loop lagging under load may
        # be late by up to one more cache age before requests read for themselves.
        late = 2 if self._keeper is not None else 1
        settings = self.settings
        plan = self.plans.fresh(tenant_id)
        if plan is None or not self.quota.fresh(tenant_id, settings.quota_cache_ms * late):
            return None
        if not self.breakers.fresh(settings.breaker_cache_ms * late) and any(
            self.settings.breaker_applies(job_type) for job_type in job_types
        ):
            return None
        self._active[tenant_id] = self._clock.now_ms()
        with _counted(route_class):
            return await self._decide(tenant_id, plan, job_types, route_class, None, ())

    async def _decide(
        self,
        tenant_id: str,
        plan: ResolvedPlan,
        job_types: Sequence[str],
        route_class: RouteClass,
        policy: EmailPolicy | None,
        recipients: Sequence[email_policy.Recipient],
    ) -> dict[str, str]:
        """The decision over what is in memory: depth, breakers, quota, then the rate."""
        queues = self._check_depth(job_types)
        for job_type in sorted(set(job_types)):
            if not self.settings.breaker_applies(job_type):
                continue
            wait = self.breakers.retry_after_now(tenant_id, job_type)
            if wait is not None:
                raise BreakerOpen(
                    f"the circuit breaker for {job_type} jobs of this tenant is open: "
                    f"its recent jobs kept failing; it half-opens in {wait} s",
                    retry_after=wait,
                )
        self.quota.check_estimate(tenant_id, len(job_types), plan.max_in_flight)
        charges = [Charge(RouteClass.jobs, plan.limits[RouteClass.jobs], len(job_types))]
        if route_class is not RouteClass.jobs:
            charges.append(Charge(route_class, plan.limits[route_class]))
        if recipients:
            item = email_policy.rate_item(policy)
            charges.append(Charge(RouteClass.emails, item, len(recipients)))
        headers = await self._charge(tenant_id, charges)
        self._admitted(tenant_id, queues)
        return headers

    async def admit_webhook(
        self, session: AsyncSession, tenant_id: str, job_types: Sequence[str]
    ) -> WebhookAdmission:
        """Admit a webhook delivery making jobs of `job_types` (one entry per job): one
        webhooks unit per delivery plus one jobs unit per job, so a delivery carrying many
        notifications costs what submitting its jobs would; queue depth, quota and rate
        refuse as for jobs; an open breaker delays instead."""
        with _counted(RouteClass.webhooks):
            plan = await self.plans.get(session, tenant_id)
            queues = self._check_depth(job_types)
            delay = 0
            for job_type in sorted(set(job_types)):
                wait = await self.breakers.retry_after(session, tenant_id, job_type)
                delay = max(delay, wait or 0)
            if job_types:
                await self.quota.check(session, tenant_id, len(job_types), plan.max_in_flight)
            charges = [Charge(RouteClass.webhooks, plan.limits[RouteClass.webhooks])]
            if job_types:
                charges.append(
                    Charge(RouteClass.jobs, plan.limits[RouteClass.jobs], len(job_types))
                )
            headers = await self._charge(tenant_id, charges)
            self._admitted(tenant_id, queues)
            if delay:
                metrics.admission_webhooks_delayed.inc()
            return WebhookAdmission(delay_seconds=delay, headers=headers)

    def _check_depth(self, job_types: Sequence[str]) -> Counter[str]:
        queues = Counter(self.topology.queue_for(job_type) for job_type in job_types)
        for queue in sorted(queues):
            self.depth.check(queue)
        return queues

    def _admitted(self, tenant_id: str, queues: Counter[str]) -> None:
        self.quota.note_admitted(tenant_id, sum(queues.values()))
        for queue, count in queues.items():
            self.depth.note_admitted(queue, count)

    async def _charge(self, tenant_id: str, charges: list[Charge]) -> dict[str, str]:
        try:
            return rate_limit_headers(await self.limiter.charge(tenant_id, charges))
        except LimiterUnavailable as exc:
            logger.warning("admission: rate-limit store unavailable: %s", exc)
            if self.settings.on_unknown == "closed":
                raise AdmissionUnknown(
                    "the rate-limit store is unavailable",
                    retry_after=self.settings.retry_after_fallback_seconds,
                ) from None
            return {}

    # -- lifecycle -------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Sample every queue's depth once (the background loop does this periodically)."""
        await self.depth.refresh()

    def start(self) -> None:
        if self._sampler is None:
            self._sampler = asyncio.create_task(self.depth.run())
        if self._keeper is None and self._reader is not None and self._keep_interval_ms():
            self._stop.clear()
            self._keeper = asyncio.create_task(self._keep_warm(), name="admission-keeper")

    def _keep_interval_ms(self) -> int:
        """How often the keeper looks: a quarter of the shortest cache (0: never, as a
        cache of 0 means every request reads for itself)."""
        return min(self.settings.quota_cache_ms, self.settings.breaker_cache_ms) // 4

    async def _keep_warm(self) -> None:
        """Re-read active tenants' plans, breakers and in-flight counts before they go
        stale, so requests decide from memory (`admit_jobs_from_memory`) instead of
        reading in their own session."""
        await run_every(
            self._keep_interval_ms() / 1000,
            self._stop,
            self.refresh_active,
            what="admission: background refresh",
            logger=logger,
        )

    async def refresh_active(self) -> None:
        """One round of the keeper: tenants admitted from memory in the last minute."""
        assert self._reader is not None
        now = self._clock.now_ms()
        for tenant_id, seen in list(self._active.items()):
            if now - seen > ACTIVE_TENANT_MS:
                del self._active[tenant_id]
        if not self._active:
            return
        settings = self.settings
        async with self._reader() as session:
            await self.breakers.refresh(session, max_age_ms=settings.breaker_cache_ms * 3 // 4)
            for tenant_id in list(self._active):
                if self.plans.fresh(tenant_id, settings.plan_cache_ms * 3 // 4) is None:
                    await self.plans.read(session, tenant_id)
                await self.quota.refresh(
                    session, tenant_id, max_age_ms=settings.quota_cache_ms * 3 // 4
                )

    async def close(self) -> None:
        self.depth.stop()
        self._stop.set()
        if self._sampler is not None:
            await self._sampler
            self._sampler = None
        if self._keeper is not None:
            await self._keeper
            self._keeper = None
        await self.limiter.close()


@contextlib.contextmanager
def _counted(route_class: RouteClass) -> Iterator[None]:
    try:
        yield
    except Refusal as refusal:
        metrics.admission_refusals.labels(
            reason=refusal.reason, route_class=route_class.value
        ).inc()
        raise
