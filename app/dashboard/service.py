"""What the dashboard's pages read. Services never commit: the router does.

`tenant_id=None` means the operator's view (every tenant); a tenant admin's pages always
pass its own tenant, so another tenant's job or schedule answers 404 like a missing one.
Jobs are read, and acted on, through the jobs and queues services themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.consumer.models import CircuitBreaker
from app.core.errors import NotFound
from app.jobs.models import JobAttempt, JobStatus
from app.scheduler.models import Schedule
from app.tenants.models import Tenant

THROUGHPUT_WINDOW = timedelta(minutes=5)
MAX_BREAKERS = 500


@dataclass(slots=True)
class QueueRow:
    """One line of the queues page; None where the backend gave no figure."""

    name: str
    dead_letter_queue: str | None
    throughput: float  # succeeded attempts per minute, recently
    backlog: int | None = None
    in_flight: int | None = None
    oldest_age_seconds: float | None = None
    dead_letter_backlog: int | None = None
    paused: bool | None = None
    controls: bool = False  # pause/resume/purge available


@dataclass(frozen=True, slots=True)
class JobFilters:
    status: JobStatus | None = None
    job_type: str | None = None
    queue: str | None = None
    tenant_id: str | None = None  # the operator's filter; a tenant admin's own is forced


async def throughput_per_minute(session: AsyncSession, *, now: datetime) -> dict[str, float]:
    """Succeeded attempts per minute and queue over the last few minutes (a range scan of
    the attempts' `ended_at` index, never of the job table)."""
    since = now - THROUGHPUT_WINDOW
    stmt = (
        select(JobAttempt.queue, func.count())
        .where(col(JobAttempt.ended_at) >= since, JobAttempt.outcome == "succeeded")
        .group_by(col(JobAttempt.queue))
    )
    minutes = THROUGHPUT_WINDOW.total_seconds() / 60
    return {str(queue): count / minutes for queue, count in (await session.execute(stmt)).all()}


async def tenant_names(session: AsyncSession, *, tenant_id: str | None) -> dict[str, str]:
    stmt = select(Tenant.id, Tenant.name)
    if tenant_id is not None:
        stmt = stmt.where(Tenant.id == tenant_id)
    return {str(tid): str(name) for tid, name in (await session.execute(stmt)).all()}


async def get_schedule(
    session: AsyncSession, *, tenant_id: str | None, schedule_id: str
) -> Schedule:
    schedule = await session.get(Schedule, schedule_id)
    if schedule is None or (tenant_id is not None and schedule.tenant_id != tenant_id):
        raise NotFound(f"schedule {schedule_id} does not exist")
    return schedule


async def list_breakers(session: AsyncSession, *, tenant_id: str | None) -> list[CircuitBreaker]:
    """Breakers that are open, half-open or counting failures (a closed, clean breaker has
    nothing to show)."""
    stmt = select(CircuitBreaker).where(
        or_(col(CircuitBreaker.state) != "closed", col(CircuitBreaker.failures) > 0)
    )
    if tenant_id is not None:
        stmt = stmt.where(CircuitBreaker.tenant_id == tenant_id)
    stmt = stmt.order_by(col(CircuitBreaker.tenant_id), col(CircuitBreaker.job_type))
    return list((await session.execute(stmt.limit(MAX_BREAKERS))).scalars())
