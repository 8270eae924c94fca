"""Cron schedules and their fires. Services never commit: the router or the runner does.

A fire is an ordinary job submission (`jobs_service.submit_jobs`) with the idempotency key
`schedule:{id}:{scheduled_for}`, written in the same transaction as its `schedule_fire`
row, whose unique (schedule_id, scheduled_for) key makes every occurrence fire once, however
many runners look at it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.admission import email_policy
from app.admission.errors import Refusal
from app.admission.limiter import RouteClass
from app.admission.service import AdmissionControl
from app.core.clock import to_datetime
from app.core.errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from app.core.ids import uuid7
from app.jobs.models import Job
from app.jobs.payloads import JobOptions, JobRequest
from app.jobs.submitter import JobSubmitter
from app.observability import metrics
from app.scheduler import cron
from app.scheduler.models import Schedule, ScheduleFire
from app.scheduler.schemas import ScheduleCreate, ScheduleUpdate, job_template
from app.tenants.schemas import Principal, Scope

logger = logging.getLogger(__name__)

MAX_SCHEDULES_PER_TENANT = 200
_job_adapter: TypeAdapter[JobOptions] = TypeAdapter(JobRequest)

fires_total = Counter(
    "jobgate_schedule_fires_total",
    "Schedule fires, by trigger (cron, manual) and outcome (fired, failed, refused).",
    ["trigger", "outcome"],
)
missed_total = Counter(
    "jobgate_schedule_missed_occurrences_total",
    "Overdue cron fires that were caught up by firing only the latest missed occurrence.",
)


def fire_key(schedule_id: str, scheduled_for: datetime) -> str:
    """The idempotency key of one occurrence's job."""
    stamp = scheduled_for.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"schedule:{schedule_id}:{stamp}"


def _check_tenant(job: JobOptions, tenant_id: str) -> None:
    if job.tenantId is not None and job.tenantId != tenant_id:
        raise Forbidden("job.tenantId does not match the authenticated tenant")


async def _check_email(session: AsyncSession, job: JobOptions, tenant_id: str) -> None:
    # Checked here too, not only at fire time: a schedule the policy refuses is a 422 now.
    found = [
        email_policy.Recipient(loc=("job", "to"), address=r.address)
        for r in email_policy.recipients([job])
    ]
    if found:
        policy = await email_policy.get_policy(session, tenant_id)
        email_policy.check_recipients(policy, found)


async def _name_taken(
    session: AsyncSession, tenant_id: str, name: str, *, other_than: str | None = None
) -> bool:
    stmt = select(Schedule.id).where(Schedule.tenant_id == tenant_id, Schedule.name == name)
    if other_than is not None:
        stmt = stmt.where(Schedule.id != other_than)
    return (await session.execute(stmt)).first() is not None


async def _flush_unique(session: AsyncSession, name: str) -> None:
    # A concurrent request may take the name between our check and the insert.
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a schedule named {name!r} already exists") from None


async def create_schedule(
    session: AsyncSession, *, tenant_id: str, body: ScheduleCreate, now: datetime
) -> Schedule:
    """Store a schedule; its first fire is the first occurrence after `now`."""
    _check_tenant(body.job, tenant_id)
    await _check_email(session, body.job, tenant_id)
    if await _name_taken(session, tenant_id, body.name):
        raise Conflict(f"a schedule named {body.name!r} already exists")
    count = (
        await session.execute(
            select(func.count()).select_from(Schedule).where(Schedule.tenant_id == tenant_id)
        )
    ).scalar_one()
    if count >= MAX_SCHEDULES_PER_TENANT:
        raise Conflict(f"a tenant may have at most {MAX_SCHEDULES_PER_TENANT} schedules")
    schedule = Schedule(
        id=uuid7(),
        tenant_id=tenant_id,
        name=body.name,
        cron=body.cron,
        timezone=body.timezone,
        job=job_template(body.job),
        enabled=body.enabled,
        next_run_at=(
            cron.next_after(body.cron, now, cron.zone(body.timezone)) if body.enabled else None
        ),
        created_at=now,
        updated_at=now,
    )
    session.add(schedule)
    await _flush_unique(session, body.name)
    return schedule


async def list_schedules(session: AsyncSession, *, tenant_id: str | None) -> list[Schedule]:
    """A tenant's schedules (every tenant's when `tenant_id` is None), by name."""
    stmt = select(Schedule)
    if tenant_id is not None:
        stmt = stmt.where(Schedule.tenant_id == tenant_id)
    ordered = stmt.order_by(col(Schedule.tenant_id), col(Schedule.name))
    return list((await session.execute(ordered)).scalars().all())


async def get_schedule(session: AsyncSession, *, tenant_id: str, schedule_id: str) -> Schedule:
    """The tenant's schedule; another tenant's is indistinguishable from a missing one."""
    schedule = await session.get(Schedule, schedule_id)
    if schedule is None or schedule.tenant_id != tenant_id:
        raise NotFound(f"schedule {schedule_id} does not exist")
    return schedule


async def update_schedule(
    session: AsyncSession,
    *,
    tenant_id: str,
    schedule_id: str,
    changes: ScheduleUpdate,
    now: datetime,
) -> Schedule:
    """Apply the fields sent. A new cron or a re-enable schedules from `now`: no catch-up."""
    schedule = await get_schedule(session, tenant_id=tenant_id, schedule_id=schedule_id)
    sent = changes.model_fields_set
    if changes.name is not None and changes.name != schedule.name:
        if await _name_taken(session, tenant_id, changes.name, other_than=schedule.id):
            raise Conflict(f"a schedule named {changes.name!r} already exists")
        schedule.name = changes.name
    if changes.job is not None:
        _check_tenant(changes.job, tenant_id)
        await _check_email(session, changes.job, tenant_id)
        schedule.job = job_template(changes.job)
    reschedule = False
    if changes.cron is not None and changes.cron != schedule.cron:
        schedule.cron = changes.cron
        reschedule = True
    if changes.timezone is not None and changes.timezone != schedule.timezone:
        schedule.timezone = changes.timezone
        reschedule = True
    if changes.enabled is not None and changes.enabled != schedule.enabled:
        schedule.enabled = changes.enabled
        reschedule = True
    if reschedule:
        schedule.next_run_at = (
            cron.next_after(schedule.cron, now, cron.zone(schedule.timezone))
            if schedule.enabled
            else None
        )
        schedule.retry_at = None  # a refused occurrence of the old timetable is moot
    if sent:
        schedule.updated_at = now
    await _flush_unique(session, schedule.name)
    return schedule


async def delete_schedule(session: AsyncSession, *, tenant_id: str, schedule_id: str) -> None:
    """Delete a schedule and its fire records; the jobs it made stay."""
    schedule = await get_schedule(session, tenant_id=tenant_id, schedule_id=schedule_id)
    await session.delete(schedule)
    await session.flush()


async def _recorded_job(
    session: AsyncSession, schedule_id: str, scheduled_for: datetime
) -> Job | None:
    stmt = select(ScheduleFire.job_id).where(
        ScheduleFire.schedule_id == schedule_id, ScheduleFire.scheduled_for == scheduled_for
    )
    job_id = (await session.execute(stmt)).scalar_one_or_none()
    return None if job_id is None else await session.get(Job, job_id)


async def fire(
    session: AsyncSession,
    *,
    submitter: JobSubmitter,
    schedule: Schedule,
    scheduled_for: datetime,
    trigger: str,
    now: datetime,
) -> tuple[Job, bool]:
    """Submit the schedule's job for one occurrence: (job, whether this call created it).

    An occurrence that was fired already answers with its original job.
    """
    existing = await _recorded_job(session, schedule.id, scheduled_for)
    if existing is not None:
        return existing, False
    try:
        request = _job_adapter.validate_python(schedule.job)
    except ValidationError as exc:
        raise ValidationFailed(_validation_summary(exc)) from None
    principal = Principal(tenant_id=schedule.tenant_id, scopes=frozenset({Scope.jobs_write.value}))
    try:
        async with session.begin_nested():
            [submitted] = await submitter.submit(
                session, principal, [(request, fire_key(schedule.id, scheduled_for))], now=now
            )
            session.add(
                ScheduleFire(
                    schedule_id=schedule.id,
                    scheduled_for=scheduled_for,
                    job_id=submitted.job.id,
                    trigger=trigger,
                    fired_at=now,
                )
            )
            await session.flush()
    except IntegrityError:
        # A concurrent fire of the same occurrence won the unique key: answer with its job.
        winner = await _recorded_job(session, schedule.id, scheduled_for)
        if winner is None:
            raise
        return winner, False
    job = submitted.job
    if schedule.last_run_at is None or scheduled_for >= schedule.last_run_at:
        schedule.last_run_at = scheduled_for
        schedule.last_job_id = job.id
        schedule.last_error = None
    schedule.updated_at = now
    await session.flush()
    fires_total.labels(trigger=trigger, outcome="fired").inc()
    if submitted.created:
        metrics.jobs_accepted.labels(type=job.type, queue=job.queue).inc()
    return job, submitted.created


async def run_now(session: AsyncSession, *, submitter: JobSubmitter, schedule: Schedule) -> Job:
    """Fire the schedule now (also when disabled); its cron timetable is unchanged."""
    now = to_datetime(submitter.clock.now_ms())
    job, _ = await fire(
        session,
        submitter=submitter,
        schedule=schedule,
        scheduled_for=now,
        trigger="manual",
        now=now,
    )
    return job


@dataclass(frozen=True, slots=True)
class Fired:
    schedule_id: str
    scheduled_for: datetime
    job_id: str | None  # None: the fire failed or was refused (see the schedule's last_error)
    refused: str | None = None  # admission's reason when the fire waits for a retry


async def _admit(
    session: AsyncSession,
    admission: AdmissionControl,
    schedule: Schedule,
    scheduled_for: datetime,
    now: datetime,
) -> str | None:
    """Admit one cron fire; on a refusal, hold the occurrence for a retry and say why.

    Other errors (an email policy that no longer allows the recipient) fail the fire."""
    job_type = str(schedule.job.get("type", ""))
    found = email_policy.recipients([schedule.job])
    try:
        await admission.admit_jobs(session, schedule.tenant_id, [job_type], RouteClass.jobs, found)
    except Refusal as refusal:
        retry_at = now + timedelta(seconds=refusal.retry_after)
        stamp = scheduled_for.isoformat().replace("+00:00", "Z")
        schedule.next_run_at = scheduled_for
        schedule.retry_at = retry_at
        schedule.last_error = (
            f"admission refused the fire for {stamp} ({refusal.reason}): {refusal.detail}; "
            f"retrying at {retry_at.isoformat().replace('+00:00', 'Z')}"
        )[:1000]
        schedule.updated_at = now
        fires_total.labels(trigger="cron", outcome="refused").inc()
        logger.warning("schedule %s: %s", schedule.id, schedule.last_error)
        return refusal.reason
    return None


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        col(Schedule.enabled).is_(True),
        col(Schedule.next_run_at) <= now,
        col(Schedule.retry_at).is_(None) | (col(Schedule.retry_at) <= now),
    )


async def any_due(session: AsyncSession, *, now: datetime) -> bool:
    """Whether a schedule is due: a read, so a poll that finds nothing takes no lock."""
    stmt = select(col(Schedule.id)).where(*_due(now)).limit(1)
    return (await session.execute(stmt)).first() is not None


async def fire_due(
    session: AsyncSession,
    *,
    submitter: JobSubmitter,
    now: datetime,
    limit: int = 100,
    admission: AdmissionControl | None = None,
) -> list[Fired]:
    """Claim up to `limit` due schedules, fire each once and advance its `next_run_at`.

    After downtime only the latest missed occurrence fires (one sync after an outage, not
    one per missed slot). Claimed rows are locked `FOR UPDATE SKIP LOCKED` on PostgreSQL,
    so concurrent runners take disjoint schedules; on SQLite the transaction's write lock
    serialises them. A fire that fails (say, the stored job no longer validates) is
    recorded in `last_error` and the schedule moves on to its next occurrence.

    With `admission`, each fire is admitted like a submitted job (rate, quota, depth,
    breaker). A refused fire is not dropped: the occurrence stays due, `retry_at` holds it
    back for the refusal's Retry-After and `last_error` says why; if a newer occurrence
    comes due meanwhile, that one fires in its place (the same catch-up as after downtime).
    """
    stmt = (
        select(Schedule)
        .where(*_due(now))
        .order_by(col(Schedule.next_run_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    schedules = list((await session.execute(stmt)).scalars().all())
    results: list[Fired] = []
    for schedule in schedules:
        assert schedule.next_run_at is not None
        due = cron.latest_due(schedule.cron, now, cron.zone(schedule.timezone))
        scheduled_for = max(due, schedule.next_run_at)
        if scheduled_for > schedule.next_run_at:
            missed_total.inc()
            logger.info(
                "schedule %s missed occurrences since %s: firing only the latest, %s",
                schedule.id,
                schedule.next_run_at.isoformat(),
                scheduled_for.isoformat(),
            )
        job_id: str | None = None
        try:
            if admission is not None:
                refusal = await _admit(session, admission, schedule, scheduled_for, now)
                if refusal is not None:
                    results.append(Fired(schedule.id, scheduled_for, None, refused=refusal))
                    continue
            schedule.retry_at = None
            async with session.begin_nested():
                job, _ = await fire(
                    session,
                    submitter=submitter,
                    schedule=schedule,
                    scheduled_for=scheduled_for,
                    trigger="cron",
                    now=now,
                )
                job_id = job.id
        except AppError as exc:
            reason = exc.detail
            fires_total.labels(trigger="cron", outcome="failed").inc()
            logger.warning("schedule %s failed to fire at %s: %s", schedule.id, now, reason)
            schedule.last_error = reason[:1000]
        try:
            schedule.next_run_at = cron.next_after(
                schedule.cron, scheduled_for, cron.zone(schedule.timezone)
            )
        except cron.InvalidCron as exc:
            schedule.next_run_at, schedule.enabled = None, False
            schedule.last_error = str(exc)
        schedule.updated_at = now
        results.append(Fired(schedule.id, scheduled_for, job_id))
    await session.flush()
    return results


def _validation_summary(exc: ValidationError) -> str:
    parts = [f"job.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return "the stored job no longer validates: " + "; ".join(parts)
