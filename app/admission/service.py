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
from app.admission.depth import DepthMonitor, PendingFn, SampleFn
from app.admission.errors import AdmissionUnknown, BreakerOpen, Refusal
from app.admission.limiter import (
    Charge,
    LimiterUnavailable,
    RouteClass,
    TenantLimiter,
    rate_limit_headers,
)
from app.admission.plans import PlanBook, ResolvedPlan
from app.admission.quota import CountFn, InFlightQuota
from app.core.clock import Clock
from app.observability import metrics
from app.queues.topology import Topology

logger = logging.getLogger(__name__)


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
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.plans = plans
        self.limiter = limiter
        self.quota = quota
        self.breakers = breakers
        self.depth = depth
        self._sampler: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        settings: AdmissionSettings,
        *,
        breaker_cooldown_seconds: int,
        clock: Clock,
        topology: Topology,
        sample: SampleFn,
        pending: PendingFn | None,
        count_unfinished: CountFn,
        open_breakers: OpenBreakersFn,
    ) -> AdmissionControl:
        """Admission from settings; the backend's depth `sample`, the outbox backlog
        (`pending`, Cloudflare only) and the readers of other domains are handed in."""
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
            queues = self._check_depth(job_types)
            for job_type in sorted(set(job_types)):
                if not self.settings.breaker_applies(job_type):
                    continue
                wait = await self.breakers.retry_after(session, tenant_id, job_type)
                if wait is not None:
                    raise BreakerOpen(
                        f"the circuit breaker for {job_type} jobs of this tenant is open: "
                        f"its recent jobs kept failing; it half-opens in {wait} s",
                        retry_after=wait,
                    )
            await self.quota.check(session, tenant_id, len(job_types), plan.max_in_flight)
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

    async def close(self) -> None:
        self.depth.stop()
        if self._sampler is not None:
            await self._sampler
            self._sampler = None
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
