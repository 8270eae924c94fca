"""Job status as the consumer moves it: attempts, outcomes, progress.

Transitions: `queued`/`retrying` → `running` when an attempt starts; `running` → `succeeded`,
`retrying`, `failed` or `dead` when it ends; `running` → `queued` when a stopping consumer
releases it. A finished job (`succeeded`, `failed`, `dead`, `cancelled`) never runs again.
Every change writes a `job_event`; every attempt a `job_attempt` row.

Work is done a batch at a time with a bounded number of statements, whatever the batch's
size: one SELECT of the batch's jobs (locked on PostgreSQL), then at most one statement per
table and kind of change (multi-row INSERTs, `UPDATE ... WHERE id IN (...)`, or one
executemany UPDATE by key).

Functions take the caller's session and never commit: the consumer commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Integer, Text, and_, bindparam, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.bulk import BulkUpdate, DriverQuery, insert_rows
from app.core.clock import to_datetime
from app.core.db import UTCDateTime, table_of
from app.jobs.models import FINISHED_STATUSES, Job, JobAttempt, JobEvent, JobStatus

MAX_ERROR_CHARS = 4000
_attempts = table_of(JobAttempt)
_jobs = table_of(Job)
_events = table_of(JobEvent)
_LOST = {"outcome": "lost", "error": "consumer lost"}
_now = bindparam("b_now", type_=UTCDateTime())


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


@dataclass(frozen=True, slots=True)
class JobState:
    """What the consumer decides on: a job row's status and attempt count (not its payload),
    and when the lease of its open attempt ends (None when no attempt is open)."""

    id: str
    status: str
    attempts: int
    lease_expires_ms: int | None = None
    # Attempts before the current budget (renewed by a manual retry).
    attempts_base: int = 0

    def running_until(self, now_ms: int) -> int | None:
        """The end of the lease its running attempt still holds at `now_ms`, else None."""
        if self.status != JobStatus.running or self.lease_expires_ms is None:
            return None
        return self.lease_expires_ms if self.lease_expires_ms > now_ms else None


def is_finished(job: JobState) -> bool:
    return JobStatus(job.status) in FINISHED_STATUSES


_LOAD_JOBS = DriverQuery(
    select(  # in the order of JobState's fields
        _jobs.c.id,
        _jobs.c.status,
        _jobs.c.attempts,
        _attempts.c.lease_expires_ms,
        _jobs.c.attempts_base,
    )
    .select_from(
        _jobs.outerjoin(
            _attempts,
            and_(
                _attempts.c.job_id == _jobs.c.id,
                _attempts.c.attempt == _jobs.c.attempts,
                _attempts.c.ended_at.is_(None),
            ),
        )
    )
    .where(_jobs.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_jobs.c.id)
    .with_for_update(of=_jobs)
)


async def load_jobs(session: AsyncSession, job_ids: Iterable[str]) -> dict[str, JobState]:
    """The jobs' states (with their open attempt's lease) in one SELECT, locked for update
    (PostgreSQL) so two consumers move them one at a time (SQLite has one writer: every
    transaction begins IMMEDIATE)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    return {row[0]: JobState(*row) for row in await _LOAD_JOBS.rows(session, ids=ids)}


async def _close_open_attempts(
    session: AsyncSession, job_ids: Sequence[str], now: datetime
) -> None:
    """End the jobs' attempts left open by a consumer that vanished, as `lost`."""
    if job_ids:
        await session.execute(
            update(_attempts)
            .where(_attempts.c.job_id.in_(sorted(job_ids)), _attempts.c.ended_at.is_(None))
            .values(ended_at=now, **_LOST)
        )


async def _insert_events(session: AsyncSession, events: list[dict[str, Any]]) -> None:
    await insert_rows(session, _events, events)


def _event(
    job_id: str, status: str, attempt: int, detail: str | None, now: datetime
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": status,
        "attempt": attempt,
        "detail": detail,
        "created_at": now,
    }


@dataclass(frozen=True, slots=True)
class AttemptStart:
    job: JobState
    queue: str
    message_id: str
    lease_expires_ms: int
    final_delivery: bool


# Start: the new attempt number and status, by primary key (one row per job).
_START_JOB = BulkUpdate(
    update(_jobs)
    .where(_jobs.c.id == bindparam("b_id"))
    .values(
        status=JobStatus.running.value,
        attempts=bindparam("b_attempt"),
        started_at=func.coalesce(_jobs.c.started_at, _now),
        updated_at=_now,
        next_attempt_at=None,
    ),
    key=["b_id"],
)


async def start_attempts(
    session: AsyncSession, starts: Sequence[AttemptStart], *, now_ms: int
) -> dict[str, int]:
    """Mark each job running in a new attempt; returns job id → attempt number (1, 2, ...).

    The jobs must have been loaded with `load_jobs` in this transaction (and not changed
    since). An attempt left open by a consumer that vanished is closed as `lost` first.
    At most four statements, whatever the number of jobs.
    """
    if not starts:
        return {}
    now = to_datetime(now_ms)
    # Only a job that ran before can have an open attempt.
    await _close_open_attempts(session, [s.job.id for s in starts if s.job.attempts > 0], now)
    numbers = {s.job.id: s.job.attempts + 1 for s in starts}
    await _START_JOB.execute(
        session, [{"b_id": job_id, "b_attempt": n, "b_now": now} for job_id, n in numbers.items()]
    )
    await insert_rows(
        session,
        _attempts,
        [
            {
                "job_id": s.job.id,
                "attempt": numbers[s.job.id],
                "queue": s.queue,
                "message_id": s.message_id,
                "final_delivery": s.final_delivery,
                "lease_expires_ms": s.lease_expires_ms,
                "started_at": now,
            }
            for s in starts
        ],
    )
    await _insert_events(
        session,
        [_event(job_id, JobStatus.running.value, n, None, now) for job_id, n in numbers.items()],
    )
    return numbers


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    job_id: str
    attempt: int
    outcome: AttemptOutcome
    error: str | None = None
    retry_delay_seconds: int | None = None


# End: how each attempt ended, by (job, attempt); a closed one stays closed.
_END_ATTEMPT = BulkUpdate(
    update(_attempts)
    .where(
        _attempts.c.job_id == bindparam("b_job_id"),
        _attempts.c.attempt == bindparam("b_attempt"),
        _attempts.c.ended_at.is_(None),
    )
    .values(
        ended_at=_now,
        outcome=bindparam("b_outcome"),
        error=bindparam("b_error", type_=Text()),
        retry_delay_seconds=bindparam("b_delay", type_=Integer()),
    ),
    key=["b_job_id", "b_attempt"],
)

# Move: a job's new status; NULL keeps the error, progress and finish time it has.
_MOVE_JOB = BulkUpdate(
    update(_jobs)
    .where(_jobs.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        updated_at=_now,
        last_error=func.coalesce(bindparam("b_error", type_=Text()), _jobs.c.last_error),
        progress=func.coalesce(bindparam("b_progress", type_=Integer()), _jobs.c.progress),
        finished_at=func.coalesce(
            bindparam("b_finished", type_=UTCDateTime()), _jobs.c.finished_at
        ),
        next_attempt_at=bindparam("b_next", type_=UTCDateTime()),
    ),
    key=["b_id"],
)


def _move(
    job_id: str,
    status: JobStatus,
    error: str | None,
    now: datetime,
    next_attempt_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "b_id": job_id,
        "b_status": status.value,
        "b_now": now,
        "b_error": error,
        "b_progress": 100 if status is JobStatus.succeeded else None,
        "b_finished": now if status in FINISHED_STATUSES else None,
        "b_next": next_attempt_at,
    }


async def settle(
    session: AsyncSession,
    *,
    ends: Sequence[AttemptEnd] = (),
    dead: Mapping[str, str] | None = None,
    deferred: Mapping[str, str] | None = None,
    now_ms: int,
) -> int:
    """Write a batch's outcomes; returns how many jobs changed status.

    - `ends`: how attempts ended. A job is only moved when it is still `running` in that
      attempt: a late report from a consumer that was presumed lost cannot overwrite what
      happened since.
    - `dead`: job id → reason, for jobs that will not be delivered again without running
      (attempts exhausted, or the final delivery's lease lost); their open attempt is lost.
      A finished job is left alone.
    - `deferred`: job id → reason, for jobs re-delayed without running (status unchanged;
      an event notes it).

    One SELECT of the jobs, then at most four statements, whatever the batch's size.
    """
    dead = dead or {}
    deferred = deferred or {}
    if not (ends or dead or deferred):
        return 0
    now = to_datetime(now_ms)
    jobs = await load_jobs(session, [*(end.job_id for end in ends), *dead, *deferred])
    moves: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    if ends:
        await _END_ATTEMPT.execute(
            session,
            [
                {
                    "b_job_id": end.job_id,
                    "b_attempt": end.attempt,
                    "b_now": now,
                    "b_outcome": end.outcome.value,
                    "b_error": _clip(end.error),
                    "b_delay": end.retry_delay_seconds,
                }
                # In key order, as every other writer of attempts locks them (no deadlock).
                for end in sorted(ends, key=lambda e: (e.job_id, e.attempt))
            ],
        )
    for end in ends:
        job = jobs.get(end.job_id)
        if job is None or job.status != JobStatus.running or job.attempts != end.attempt:
            continue
        status = _STATUS_AFTER[end.outcome]
        error = _clip(end.error)
        detail, next_attempt_at = error, None
        if end.outcome is AttemptOutcome.retry:
            detail = f"retry in {end.retry_delay_seconds}s: {error}"
            next_attempt_at = now + timedelta(seconds=end.retry_delay_seconds or 0)
        moves.append(_move(job.id, status, error, now, next_attempt_at))
        events.append(_event(job.id, status.value, end.attempt, detail, now))
    dying = [job_id for job_id in dead if job_id in jobs and not is_finished(jobs[job_id])]
    await _close_open_attempts(session, dying, now)
    for job_id in dying:
        reason = dead[job_id]
        moves.append(_move(job_id, JobStatus.dead, _clip(reason), now))
        events.append(_event(job_id, JobStatus.dead.value, jobs[job_id].attempts, reason, now))
    for job_id, reason in deferred.items():
        job = jobs.get(job_id)
        if job is not None:
            events.append(_event(job_id, job.status, job.attempts, reason, now))
    if moves:
        await _MOVE_JOB.execute(session, moves)
    await _insert_events(session, events)
    return len(moves)


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
    result = await session.execute(
        update(_jobs)
        .where(
            _jobs.c.id == job_id,
            _jobs.c.attempts == attempt,
            _jobs.c.status == JobStatus.running.value,
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
    """Follow a heartbeat: the open attempts' leases now end at `lease_expires_ms`.

    The rows are locked in key order first (PostgreSQL), as settling locks them, so a
    heartbeat and a settlement of the same attempts cannot deadlock. Two statements.
    """
    keys = sorted(set(attempts))
    if not keys:
        return
    open_attempts = (
        tuple_(_attempts.c.job_id, _attempts.c.attempt).in_(keys),
        _attempts.c.ended_at.is_(None),
    )
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            select(_attempts.c.id)
            .where(*open_attempts)
            .order_by(_attempts.c.job_id, _attempts.c.attempt)
            .with_for_update()
        )
    await session.execute(
        update(_attempts).where(*open_attempts).values(lease_expires_ms=lease_expires_ms)
    )


async def lost_final_attempts(
    session: AsyncSession, *, queues: Sequence[str], expired_before_ms: int, limit: int = 100
) -> list[str]:
    """Ids of running jobs whose final-delivery attempt's lease ran out before
    `expired_before_ms` (locked for update on PostgreSQL).

    The queue will not deliver them again (the engine dead-letters such messages itself), so
    nothing else would ever end them.
    """
    stmt = (
        select(_jobs.c.id)
        .join(_attempts, _attempts.c.job_id == _jobs.c.id)
        .where(
            _attempts.c.ended_at.is_(None),
            _attempts.c.lease_expires_ms < expired_before_ms,
            _attempts.c.final_delivery.is_(True),
            _attempts.c.attempt == _jobs.c.attempts,
            _jobs.c.status == JobStatus.running.value,
            _jobs.c.queue.in_(list(queues)),
        )
        .order_by(_jobs.c.id)
        .limit(limit)
        .with_for_update(of=_jobs)
    )
    return list((await session.execute(stmt)).scalars().all())


# -- the outbox relay's side: published or given up, in the relay's transaction ----------------


async def _move_accepted(
    session: AsyncSession,
    job_ids: list[str],
    *,
    to: JobStatus,
    detail: str,
    at: datetime,
    values: dict[str, Any] | None = None,
    waiting: tuple[JobStatus, ...] = (JobStatus.accepted,),
) -> list[str]:
    """Move jobs still `waiting` (`accepted`) to `to`, with one event each; returns the
    moved ids.

    Jobs that moved on meanwhile (cancelled, or already run from an earlier copy) keep
    their status.
    """
    moved = list(
        (
            await session.execute(
                update(_jobs)
                .where(
                    _jobs.c.id.in_(job_ids), _jobs.c.status.in_([s.value for s in waiting])
                )
                .values(status=to.value, updated_at=at, **(values or {}))
                .returning(_jobs.c.id)
            )
        )
        .scalars()
        .all()
    )
    await _insert_events(session, [_event(job_id, to.value, 0, detail, at) for job_id in moved])
    return moved


async def outbox_published(
    session: AsyncSession, job_ids: list[str], detail: str, at: datetime
) -> list[str]:
    """The jobs' messages are stored by the queue: `accepted` -> `queued`."""
    return await _move_accepted(session, job_ids, to=JobStatus.queued, detail=detail, at=at)


async def outbox_failed(
    session: AsyncSession, job_ids: list[str], reason: str, at: datetime
) -> list[str]:
    """The relay gave up on the jobs' messages: `accepted` -> `failed` with the reason
    (also a retried job, `queued` again before its message was published)."""
    return await _move_accepted(
        session,
        job_ids,
        to=JobStatus.failed,
        detail=reason,
        at=at,
        values={"last_error": reason, "finished_at": at},
        waiting=(JobStatus.accepted, JobStatus.queued),
    )


# -- an operator's purge: the jobs whose messages it deleted ----------------------------------


async def cancel_purged(
    session: AsyncSession, *, queue: str, before: datetime, reason: str, at: datetime
) -> int:
    """Cancel the jobs that waited in `queue` (`queued` or `retrying`) since before `before`,
    whose messages a purge deleted; returns how many.

    Jobs that moved on meanwhile (running, finished, queued again after `before`) keep their
    status: a running attempt ends as it would have. A cancelled job never runs, even if a
    copy of its message survived the purge (the consumer acks finished jobs unrun).
    """
    waiting = (JobStatus.queued.value, JobStatus.retrying.value)
    moved = list(
        (
            await session.execute(
                update(_jobs)
                .where(
                    _jobs.c.queue == queue,
                    _jobs.c.status.in_(waiting),
                    _jobs.c.updated_at <= before,
                )
                .values(
                    status=JobStatus.cancelled.value,
                    updated_at=at,
                    finished_at=at,
                    last_error=reason,
                    next_attempt_at=None,
                )
                .returning(_jobs.c.id, _jobs.c.attempts)
            )
        ).all()
    )
    await _insert_events(
        session,
        [_event(row.id, JobStatus.cancelled.value, row.attempts, reason, at) for row in moved],
    )
    return len(moved)


async def running_by_queue(session: AsyncSession) -> dict[str, int]:
    """How many jobs are `running`, per queue (in flight, where the queue cannot say)."""
    stmt = (
        select(_jobs.c.queue, func.count())
        .where(_jobs.c.status == JobStatus.running.value)
        .group_by(_jobs.c.queue)
    )
    return {queue: int(count) for queue, count in (await session.execute(stmt)).all()}
