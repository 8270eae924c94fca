"""What the dashboard's pages read. Services never commit: the router does.

`tenant_id=None` means the operator's view (every tenant); a tenant admin's pages always
pass its own tenant, so another tenant's job or schedule answers 404 like a missing one.
The actions (retry, cancel, queue controls) are the jobs and queues services' own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.consumer.models import CircuitBreaker
from app.core.errors import NotFound
from app.jobs import service as jobs_service
from app.jobs.models import Job, JobAttempt, JobEvent, JobStatus
from app.scheduler.models import Schedule
from app.tenants.models import Tenant

THROUGHPUT_WINDOW = timedelta(minutes=5)
MAX_EVENTS = 200
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


async def list_jobs(
    session: AsyncSession,
    *,
    tenant_id: str | None,
    filters: JobFilters,
    cursor: str | None,
    limit: int,
) -> tuple[list[Job], str | None]:
    """Jobs newest first (UUIDv7 ids sort by creation), cursor-paged like the API."""
    stmt = select(Job)
    owner = tenant_id if tenant_id is not None else filters.tenant_id
    if owner is not None:
        stmt = stmt.where(Job.tenant_id == owner)
    if filters.status is not None:
        stmt = stmt.where(Job.status == filters.status.value)
    if filters.job_type is not None:
        stmt = stmt.where(Job.type == filters.job_type)
    if filters.queue is not None:
        stmt = stmt.where(Job.queue == filters.queue)
    if cursor is not None:
        stmt = stmt.where(col(Job.id) < jobs_service.decode_cursor(cursor))
    rows = list(
        (await session.execute(stmt.order_by(col(Job.id).desc()).limit(limit + 1))).scalars()
    )
    next_cursor = jobs_service.encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def get_job(session: AsyncSession, *, tenant_id: str | None, job_id: str) -> Job:
    if tenant_id is not None:
        return await jobs_service.get_job(session, tenant_id=tenant_id, job_id=job_id)
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: Job
    attempts: list[JobAttempt]
    events: list[JobEvent]


async def job_detail(session: AsyncSession, *, tenant_id: str | None, job_id: str) -> JobDetail:
    """A job with its attempts (oldest first) and its latest status changes."""
    job = await get_job(session, tenant_id=tenant_id, job_id=job_id)
    attempts = (
        await session.execute(
            select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(col(JobAttempt.attempt))
        )
    ).scalars()
    events = (
        await session.execute(
            select(JobEvent)
            .where(JobEvent.job_id == job.id)
            .order_by(col(JobEvent.id).desc())
            .limit(MAX_EVENTS)
        )
    ).scalars()
    return JobDetail(job=job, attempts=list(attempts), events=list(reversed(list(events))))


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
