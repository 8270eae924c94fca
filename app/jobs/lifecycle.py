"""Job status as the consumer moves it: attempts, outcomes, progress.

Transitions: `queued`/`retrying` → `running` when an attempt starts; `running` → `succeeded`,
`retrying`, `failed` or `dead` when it ends; `running` → `queued` when a stopping consumer
releases it. A finished job (`succeeded`, `failed`, `dead`, `cancelled`) never runs again.
Every change writes a `job_event`; every attempt a `job_attempt` row.

Functions take the caller's session and never commit: the consumer commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.consumer.models import JobAttempt
from app.core.clock import to_datetime
from app.jobs.models import FINISHED_STATUSES, Job, JobEvent, JobStatus

MAX_ERROR_CHARS = 4000
_attempt_table = JobAttempt.__table__  # type: ignore[attr-defined]


class AttemptOutcome(StrEnum):
    succeeded = "succeeded"
    retry = "retry"  # failed, will be delivered again
    failed = "failed"  # permanent failure, not retried
    dead = "dead"  # failed on its last delivery: in the dead letter queue
    released = "released"  # interrupted by a stopping consumer, delivered again
    lost = "lost"  # its consumer vanished (a later delivery or the sweep found out)


_STATUS_AFTER = {
    AttemptOutcome.succeeded: JobStatus.succeeded,
    AttemptOutcome.retry: JobStatus.retrying,
    AttemptOutcome.failed: JobStatus.failed,
    AttemptOutcome.dead: JobStatus.dead,
    AttemptOutcome.released: JobStatus.queued,
}


def _clip(text: str | None) -> str | None:
    return text[:MAX_ERROR_CHARS] if text else text


def is_finished(job: Job) -> bool:
    return JobStatus(job.status) in FINISHED_STATUSES


async def load_jobs(session: AsyncSession, job_ids: Iterable[str]) -> dict[str, Job]:
    """The jobs, locked for update (PostgreSQL) so two consumers start them one at a time."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    stmt = select(Job).where(col(Job.id).in_(ids)).order_by(col(Job.id)).with_for_update()
    return {job.id: job for job in (await session.execute(stmt)).scalars().all()}


@dataclass(frozen=True, slots=True)
class AttemptStart:
    queue: str
    message_id: str
    lease_expires_ms: int
    final_delivery: bool


async def start_attempt(
    session: AsyncSession, job: Job, start: AttemptStart, *, now_ms: int
) -> int:
    """Mark `job` running in a new attempt and return the attempt's number (1, 2, ...).

    An attempt left open by a consumer that vanished is closed as `lost` first.
    """
    now = to_datetime(now_ms)
    await session.execute(
        update(_attempt_table)
        .where(_attempt_table.c.job_id == job.id, _attempt_table.c.ended_at.is_(None))
        .values(ended_at=now, outcome=AttemptOutcome.lost.value, error="consumer lost")
    )
    attempt = job.attempts + 1
    job.status = JobStatus.running.value
    job.attempts = attempt
    job.started_at = job.started_at or now
    job.updated_at = now
    session.add(
        JobAttempt(
            job_id=job.id,
            attempt=attempt,
            queue=start.queue,
            message_id=start.message_id,
            final_delivery=start.final_delivery,
            lease_expires_ms=start.lease_expires_ms,
            started_at=now,
        )
    )
    session.add(JobEvent(job_id=job.id, status=job.status, attempt=attempt, created_at=now))
    return attempt


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    job_id: str
    attempt: int
    outcome: AttemptOutcome
    error: str | None = None
    retry_delay_seconds: int | None = None


async def finish_attempts(session: AsyncSession, ends: Sequence[AttemptEnd], *, now_ms: int) -> int:
    """Record how attempts ended and move their jobs on; returns the jobs updated.

    A job is only moved when it is still `running` in that attempt: a late report from a
    consumer that was presumed lost cannot overwrite what happened since.
    """
    now = to_datetime(now_ms)
    jobs = await load_jobs(session, [end.job_id for end in ends])
    moved = 0
    for end in ends:
        error = _clip(end.error)
        await session.execute(
            update(_attempt_table)
            .where(
                _attempt_table.c.job_id == end.job_id,
                _attempt_table.c.attempt == end.attempt,
                _attempt_table.c.ended_at.is_(None),
            )
            .values(
                ended_at=now,
                outcome=end.outcome.value,
                error=error,
                retry_delay_seconds=end.retry_delay_seconds,
            )
        )
        job = jobs.get(end.job_id)
        if job is None or job.status != JobStatus.running or job.attempts != end.attempt:
            continue
        status = _STATUS_AFTER[end.outcome]
        job.status = status.value
        job.updated_at = now
        if error is not None:
            job.last_error = error
        if status is JobStatus.succeeded:
            job.progress = 100
        if status in FINISHED_STATUSES:
            job.finished_at = now
        detail = error
        if end.outcome is AttemptOutcome.retry:
            detail = f"retry in {end.retry_delay_seconds}s: {error}"
        session.add(
            JobEvent(
                job_id=job.id, status=job.status, attempt=end.attempt, detail=detail, created_at=now
            )
        )
        moved += 1
    return moved


async def mark_dead(session: AsyncSession, job: Job, *, reason: str, now_ms: int) -> None:
    """The job will not be delivered again (attempts exhausted or its last lease lost)."""
    if is_finished(job):
        return
    now = to_datetime(now_ms)
    await session.execute(
        update(_attempt_table)
        .where(_attempt_table.c.job_id == job.id, _attempt_table.c.ended_at.is_(None))
        .values(ended_at=now, outcome=AttemptOutcome.lost.value, error="consumer lost")
    )
    job.status = JobStatus.dead.value
    job.last_error = _clip(reason)
    job.updated_at = job.finished_at = now
    session.add(
        JobEvent(
            job_id=job.id, status=job.status, attempt=job.attempts, detail=reason, created_at=now
        )
    )


def record_deferral(session: AsyncSession, job: Job, *, reason: str, now_ms: int) -> None:
    """Note that the job was re-delayed without running (its status does not change)."""
    session.add(
        JobEvent(
            job_id=job.id,
            status=job.status,
            attempt=job.attempts,
            detail=reason,
            created_at=to_datetime(now_ms),
        )
    )


async def report_progress(
    session: AsyncSession,
    *,
    job_id: str,
    attempt: int,
    percent: int,
    message: str | None,
    now_ms: int,
) -> bool:
    """Store a running attempt's progress (0..100 and a message); False if it is not current."""
    job_table = Job.__table__  # type: ignore[attr-defined]
    result = await session.execute(
        update(job_table)
        .where(
            job_table.c.id == job_id,
            job_table.c.attempts == attempt,
            job_table.c.status == JobStatus.running.value,
        )
        .values(
            progress=max(0, min(100, percent)),
            progress_message=message[:500] if message else None,
            updated_at=to_datetime(now_ms),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def extend_attempts(
    session: AsyncSession, attempts: Iterable[tuple[str, int]], *, lease_expires_ms: int
) -> None:
    """Follow a heartbeat: the running attempts' leases now end at `lease_expires_ms`."""
    for job_id, attempt in attempts:
        await session.execute(
            update(_attempt_table)
            .where(
                _attempt_table.c.job_id == job_id,
                _attempt_table.c.attempt == attempt,
                _attempt_table.c.ended_at.is_(None),
            )
            .values(lease_expires_ms=lease_expires_ms)
        )


async def lost_final_attempts(
    session: AsyncSession, *, queues: Sequence[str], expired_before_ms: int, limit: int = 100
) -> list[Job]:
    """Running jobs whose final-delivery attempt's lease ran out before `expired_before_ms`.

    The queue will not deliver them again (the engine dead-letters such messages itself), so
    nothing else would ever end them.
    """
    stmt = (
        select(Job)
        .join(JobAttempt, (col(JobAttempt.job_id) == col(Job.id)))
        .where(
            col(JobAttempt.ended_at).is_(None),
            col(JobAttempt.lease_expires_ms) < expired_before_ms,
            col(JobAttempt.final_delivery).is_(True),
            col(JobAttempt.attempt) == col(Job.attempts),
            Job.status == JobStatus.running.value,
            col(Job.queue).in_(list(queues)),
        )
        .limit(limit)
        .with_for_update(of=Job)
    )
    return list((await session.execute(stmt)).scalars().all())
