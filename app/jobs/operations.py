"""Acting on stored jobs: their attempts and events, cancel, retry (one or many), and the
operator's view across tenants. Services never commit: the caller does.

`tenant_id=None` means the operator (every tenant); a tenant's caller passes its own id and
another tenant's job answers 404 like a missing one.

- Cancel: an `accepted`, `queued` or `retrying` job becomes `cancelled` (finished). Its
  unpublished outbox row is dropped; a message already in a queue is acked unrun by the
  consumer, which never runs a finished job.
- Retry: a `failed`, `dead` or `cancelled` job is `queued` again under the same id, its
  attempts and events kept; its attempts budget starts afresh (`Job.attempts_base`), and a
  new message goes through the dispatcher (the outbox with Cloudflare: durable). A dead
  job's copy leaves its dead letter queue: inside the transaction on the local engine, after
  the commit on Cloudflare (`JobOperations.after_commit`).
- Bulk retry is paced: per queue, re-published jobs are spread `bulk_retry_rate` a second
  by their delivery delays, and the next bulk retry on this gateway queues behind the last
  one's, so redriving a dead letter queue (in one call or many) cannot flood its queue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, delete, func, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.core.clock import Clock, to_datetime
from app.core.db import table_of
from app.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from app.jobs.dispatchers import Dispatcher
from app.jobs.models import Job, JobAttempt, JobEvent, JobStatus
from app.jobs.payloads import JOB_TYPES
from app.jobs.schemas import MAX_BATCH_JOBS, AttemptPublic, BulkRetryRequest
from app.jobs.service import decode_cursor, encode_cursor
from app.outbox.models import OutboxMessage
from app.queues.base import OutgoingMessage
from app.queues.topology import MAX_DELAY_SECONDS, Topology

log = logging.getLogger("jobgate.jobs")

_jobs = table_of(Job)
_events = table_of(JobEvent)
_outbox = table_of(OutboxMessage)

CANCELLABLE = (JobStatus.accepted, JobStatus.queued, JobStatus.retrying)
RETRYABLE = (JobStatus.failed, JobStatus.dead, JobStatus.cancelled)


# -- reading -----------------------------------------------------------------------------------


async def get_job(session: AsyncSession, *, job_id: str, tenant_id: str | None) -> Job:
    """The job (the tenant's own, or any for the operator); 404 otherwise."""
    job = await session.get(Job, job_id)
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise NotFound(f"job {job_id} does not exist")
    return job


async def list_jobs(
    session: AsyncSession,
    *,
    tenant_id: str | None,
    status: JobStatus | None = None,
    job_type: str | None = None,
    queue: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> tuple[list[Job], str | None]:
    """Jobs newest first (one tenant's, or every tenant's), filtered, cursor-paged."""
    if job_type is not None and job_type not in JOB_TYPES:
        # The same 422 as a bad `?status=` (FastAPI's enum check): `errors[]` names the query.
        allowed = ", ".join(f"'{name}'" for name in sorted(JOB_TYPES))
        error = FieldError(loc=["query", "type"], msg=f"Input should be {allowed}", type="enum")
        raise ValidationFailed("invalid fields: query.type", errors=[error])
    stmt = select(Job)
    if tenant_id is not None:
        stmt = stmt.where(Job.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status.value)
    if job_type is not None:
        stmt = stmt.where(Job.type == job_type)
    if queue is not None:
        stmt = stmt.where(Job.queue == queue)
    if cursor is not None:
        stmt = stmt.where(col(Job.id) < decode_cursor(cursor))
    rows = list(
        (await session.execute(stmt.order_by(col(Job.id).desc()).limit(limit + 1))).scalars()
    )
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def list_attempts(
    session: AsyncSession, *, job_id: str, tenant_id: str | None
) -> list[JobAttempt]:
    """The job's attempts, oldest first."""
    await get_job(session, job_id=job_id, tenant_id=tenant_id)
    stmt = select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(col(JobAttempt.attempt))
    return list((await session.execute(stmt)).scalars().all())


async def list_events(
    session: AsyncSession, *, job_id: str, tenant_id: str | None
) -> list[JobEvent]:
    """The job's status changes, oldest first."""
    await get_job(session, job_id=job_id, tenant_id=tenant_id)
    stmt = select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id))
    return list((await session.execute(stmt)).scalars().all())


def attempt_public(attempt: JobAttempt) -> AttemptPublic:
    ended = attempt.ended_at
    return AttemptPublic(
        attempt=attempt.attempt,
        started_at=attempt.started_at,
        finished_at=ended,
        outcome=attempt.outcome,
        error=attempt.error,
        duration_ms=(
            None
            if ended is None
            else max(0, round((ended - attempt.started_at).total_seconds() * 1000))
        ),
    )


# -- acting ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetrySelection:
    """Which finished jobs a bulk retry takes (all filters combine)."""

    status: JobStatus  # failed or dead
    tenant_id: str | None = None  # None: every tenant (the operator)
    job_type: str | None = None
    queue: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    error_contains: str | None = None
    limit: int = 100


def selection_of(request: BulkRetryRequest, *, tenant_id: str | None) -> RetrySelection:
    return RetrySelection(
        status=JobStatus(request.status),
        tenant_id=tenant_id,
        job_type=request.type,
        queue=request.queue,
        created_after=request.created_after,
        created_before=request.created_before,
        error_contains=request.error_contains,
        limit=request.limit,
    )


@dataclass(slots=True)
class RetryOutcome:
    """What a retry did; `dead_letters` (dead letter queue -> job ids) still has to leave
    Cloudflare's dead letter queues after the commit (`JobOperations.after_commit`)."""

    matched: int
    job_ids: list[str] = field(default_factory=list)
    dead_letters: dict[str, list[str]] = field(default_factory=dict)
    job: Job | None = None  # the job, for a single retry

    @property
    def retried(self) -> int:
        return len(self.job_ids)


class DeadLetters(Protocol):
    """Takes the copies of retried dead jobs out of their dead letter queues."""

    async def remove_in_transaction(
        self, session: AsyncSession, dead_letters: Mapping[str, Sequence[str]]
    ) -> None:
        """Where the queue shares the job store's database: in the retry's transaction."""

    async def remove_after_commit(self, dead_letters: Mapping[str, Sequence[str]]) -> int:
        """Where it does not: once the retry is committed; returns the copies removed."""
        ...


def _envelope(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "tenant_id": job.tenant_id,
        "type": job.type,
        "payload": job.payload,
        "idempotency_key": job.idempotency_key,
        "trace": None,
    }


def _event(
    job_id: str, status: JobStatus, attempt: int, detail: str, now: datetime
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": status.value,
        "attempt": attempt,
        "detail": detail,
        "created_at": now,
    }


def _who(tenant_id: str | None) -> str:
    return "the operator" if tenant_id is None else "the tenant"


class JobOperations:
    """Cancel and retry, with the process's dispatcher, topology, clock and dead letters."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        topology: Topology,
        clock: Clock,
        dead_letters: DeadLetters,
        bulk_retry_rate: int,
    ) -> None:
        self._dispatcher = dispatcher
        self._topology = topology
        self._clock = clock
        self._dead_letters = dead_letters
        self.bulk_retry_rate = bulk_retry_rate
        # Per queue: when (ms) the jobs of the bulk retries so far will all have been delivered.
        self._paced_until_ms: dict[str, float] = {}

    async def cancel(self, session: AsyncSession, *, job_id: str, tenant_id: str | None) -> Job:
        """`cancelled` for an accepted, queued or retrying job; 409 once it runs or ended."""
        job = await get_job(session, job_id=job_id, tenant_id=tenant_id)
        now = to_datetime(self._clock.now_ms())
        result = await session.execute(
            update(_jobs)
            .where(_jobs.c.id == job_id, _jobs.c.status.in_([s.value for s in CANCELLABLE]))
            .values(
                status=JobStatus.cancelled.value,
                updated_at=now,
                finished_at=now,
                next_attempt_at=None,
            )
        )
        await session.refresh(job)
        if not result.rowcount:  # type: ignore[attr-defined]
            raise Conflict(
                f"job {job_id} is {job.status}: only accepted, queued or retrying jobs "
                "can be cancelled"
            )
        # Not published yet: it never will be.
        await session.execute(
            delete(_outbox).where(_outbox.c.job_id == job_id, _outbox.c.published_at.is_(None))
        )
        await session.execute(
            insert(_events),
            [
                _event(
                    job_id,
                    JobStatus.cancelled,
                    job.attempts,
                    f"cancelled by {_who(tenant_id)}",
                    now,
                )
            ],
        )
        return job

    async def retry(
        self, session: AsyncSession, *, job_id: str, tenant_id: str | None
    ) -> RetryOutcome:
        """Queue a failed, dead or cancelled job again (same id, fresh attempts budget)."""
        job = await get_job(session, job_id=job_id, tenant_id=tenant_id)
        if JobStatus(job.status) not in RETRYABLE:
            raise Conflict(
                f"job {job_id} is {job.status}: only failed, dead or cancelled jobs can be retried"
            )
        outcome = await self._requeue(session, [job], detail=f"retried by {_who(tenant_id)}")
        if not outcome.job_ids:
            await session.refresh(job)
            raise Conflict(
                f"job {job_id} is {job.status}: only failed, dead or cancelled jobs can be retried"
            )
        await session.refresh(job)
        outcome.matched, outcome.job = 1, job
        return outcome

    async def retry_many(
        self, session: AsyncSession, selection: RetrySelection, *, dry_run: bool
    ) -> RetryOutcome:
        """Queue again up to `selection.limit` matching jobs, oldest first, paced per queue."""
        if selection.status not in (JobStatus.failed, JobStatus.dead):
            raise _invalid("status", "status must be dead or failed")
        if selection.queue is not None and selection.queue not in self._topology.consumers:
            queues = ", ".join(sorted(self._topology.consumers))
            raise _invalid("queue", f"queue must be one of {queues}")
        where = _selection(selection)
        matched = int(
            (
                await session.execute(select(func.count()).select_from(Job).where(*where))
            ).scalar_one()
        )
        if dry_run or not matched:
            return RetryOutcome(matched=matched)
        stmt = select(Job).where(*where).order_by(col(Job.id)).limit(selection.limit)
        jobs = list((await session.execute(stmt)).scalars().all())
        outcome = await self._requeue(
            session, jobs, detail=f"retried in bulk by {_who(selection.tenant_id)}", paced=True
        )
        outcome.matched = matched
        return outcome

    async def after_commit(self, outcome: RetryOutcome) -> None:
        """Take the retried dead jobs' copies out of Cloudflare's dead letter queues. Best
        effort: the retry is committed whatever happens here."""
        if not outcome.dead_letters:
            return
        try:
            await self._dead_letters.remove_after_commit(outcome.dead_letters)
        except Exception:  # the jobs are queued again; a stale copy only shows in the DLQ
            log.warning(
                "retried jobs: their dead letter copies could not be removed", exc_info=True
            )

    def _paced_delay(self, queue: str, now_ms: int) -> int:
        """The next free delivery slot of `queue` at `bulk_retry_rate` jobs a second."""
        start = max(float(now_ms), self._paced_until_ms.get(queue, 0.0))
        self._paced_until_ms[queue] = start + 1000 / self.bulk_retry_rate
        return min(int((start - now_ms) // 1000), MAX_DELAY_SECONDS)

    async def _requeue(
        self, session: AsyncSession, jobs: list[Job], *, detail: str, paced: bool = False
    ) -> RetryOutcome:
        if not jobs:
            return RetryOutcome(matched=0)
        now = to_datetime(self._clock.now_ms())
        was = {job.id: JobStatus(job.status) for job in jobs}
        # Only jobs still finished move (a concurrent retry or cancel wins otherwise).
        moved = set(
            (
                await session.execute(
                    update(_jobs)
                    .where(
                        _jobs.c.id.in_([job.id for job in jobs]),
                        _jobs.c.status.in_([s.value for s in RETRYABLE]),
                    )
                    .values(
                        status=JobStatus.queued.value,
                        attempts_base=_jobs.c.attempts,
                        progress=0,
                        progress_message=None,
                        finished_at=None,
                        next_attempt_at=None,
                        updated_at=now,
                    )
                    .returning(_jobs.c.id)
                )
            )
            .scalars()
            .all()
        )
        outcome = RetryOutcome(matched=len(jobs))
        events: list[dict[str, Any]] = []
        messages: dict[str, list[OutgoingMessage]] = {}
        now_ms = self._clock.now_ms()
        for job in jobs:
            if job.id not in moved:
                continue
            queued = messages.setdefault(job.queue, [])
            delay = self._paced_delay(job.queue, now_ms) if paced else 0
            queued.append(OutgoingMessage(body=_envelope(job), delay_seconds=delay))
            note = f"{detail}: attempts budget renewed"
            events.append(
                _event(
                    job.id,
                    JobStatus.queued,
                    job.attempts,
                    note + (f", runs in {delay}s" if delay else ""),
                    now,
                )
            )
            outcome.job_ids.append(job.id)
            dlq = self._topology.queues[job.queue].dead_letter_queue
            if was[job.id] is JobStatus.dead and dlq is not None:
                outcome.dead_letters.setdefault(dlq, []).append(job.id)
        if events:
            await session.execute(insert(_events), events)
        for queue, items in messages.items():
            for start in range(0, len(items), MAX_BATCH_JOBS):
                await self._dispatcher.dispatch(
                    session, queue, items[start : start + MAX_BATCH_JOBS]
                )
        if outcome.dead_letters:
            await self._dead_letters.remove_in_transaction(session, outcome.dead_letters)
        return outcome


def _invalid(name: str, message: str) -> ValidationFailed:
    """A 422 naming the field, like the request validation's own."""
    error = FieldError(loc=["body", name], msg=message, type="value_error")
    return ValidationFailed(f"invalid fields: {name}", errors=[error])


def _selection(selection: RetrySelection) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [col(Job.status) == selection.status.value]
    if selection.tenant_id is not None:
        where.append(col(Job.tenant_id) == selection.tenant_id)
    if selection.job_type is not None:
        where.append(col(Job.type) == selection.job_type)
    if selection.queue is not None:
        where.append(col(Job.queue) == selection.queue)
    if selection.created_after is not None:
        where.append(col(Job.created_at) >= selection.created_after)
    if selection.created_before is not None:
        where.append(col(Job.created_at) < selection.created_before)
    if selection.error_contains is not None:
        where.append(col(Job.last_error).contains(selection.error_contains, autoescape=True))
    return where
