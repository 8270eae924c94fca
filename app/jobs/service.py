"""Accepting and reading jobs. Services never commit: the request boundary does.

A submission writes the job row, its first event and its queue message (local engine) or
outbox row (Cloudflare) in the caller's transaction, so a 202 is only sent for a job
that is durably stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.core import jsontext
from app.core.db import table_of
from app.core.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from app.core.ids import uuid7, uuid7_many
from app.jobs.dispatchers import Dispatcher
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.payloads import JobOptions
from app.jobs.schemas import MAX_BATCH_JOBS
from app.queues.base import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    MESSAGE_OVERHEAD_BYTES,
    OutgoingMessage,
)
from app.queues.topology import Topology
from app.tenants.schemas import Principal

MAX_ENVELOPE_BYTES = MAX_MESSAGE_BYTES - MESSAGE_OVERHEAD_BYTES  # 127,900
_job_table = table_of(Job)
_event_table = table_of(JobEvent)


class WriteCombiner(Protocol):
    """Writes the rows of key-less submissions in a shared transaction (group commit)."""

    async def write(self, writes: PendingWrites) -> None: ...


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """A submitted job: the row just written (`fields`), or the original job an idempotent
    repeat answers with. The ORM object is only built when a caller asks for `job`."""

    created: bool  # False: an idempotent repeat answered with the original job
    fields: Job | dict[str, Any]

    @property
    def job(self) -> Job:
        return self.fields if isinstance(self.fields, Job) else Job(**self.fields)

    @property
    def type(self) -> str:
        return self.fields.type if isinstance(self.fields, Job) else str(self.fields["type"])

    @property
    def queue(self) -> str:
        return self.fields.queue if isinstance(self.fields, Job) else str(self.fields["queue"])


@dataclass(slots=True)
class _Prepared:
    request: JobOptions
    key: str | None
    payload: dict[str, Any]
    queue: str
    request_hash: str
    job_id: str
    envelope: dict[str, Any]
    encoded: str  # the envelope as compact JSON: the message body
    size: int  # of `encoded`, in bytes


# One encoder for every call: `json.dumps` with options builds a new one each time.
_canonical_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> bytes:
    return _canonical_encoder.encode(value).encode()


def _prepare(
    principal: Principal,
    request: JobOptions,
    key: str | None,
    topology: Topology,
    trace: dict[str, str] | None,
    index: int | None,
    job_id: str | None = None,
) -> _Prepared:
    where = "" if index is None else f"jobs[{index}]: "
    if request.tenantId is not None and request.tenantId != principal.tenant_id:
        raise Forbidden(f"{where}tenantId does not match the authenticated tenant")
    job_type = request.type
    payload = request.payload()
    job_id = job_id or uuid7()  # a batch's come made together (`_prepare_all`)
    envelope = {  # the message body, its keys in canonical order
        "idempotency_key": key,
        "job_id": job_id,
        "payload": payload,
        "tenant_id": principal.tenant_id,
        "trace": trace,
        "type": job_type,
    }
    # Once: its size here, the message body later. JSON-ready (a JSON-mode dump), so the
    # faster encoder; `encode_body` also refuses non-JSON types in arbitrary bodies.
    encoded = jsontext.dumps(envelope, allow_nan=False)
    size = len(encoded.encode())
    if size > MAX_ENVELOPE_BYTES:
        raise PayloadTooLarge(
            f"{where}a job may be {MAX_ENVELOPE_BYTES} bytes serialized, not {size}"
        )
    request_hash = ""
    if key:  # only an idempotency key's repeats are compared with the original
        fingerprint = {"type": job_type, "payload": payload, "delay_seconds": request.delay_seconds}
        request_hash = hashlib.sha256(_canonical(fingerprint)).hexdigest()
    return _Prepared(
        request=request,
        key=key,
        payload=payload,
        queue=topology.queue_for(job_type),
        request_hash=request_hash,
        job_id=job_id,
        envelope=envelope,
        encoded=encoded,
        size=size,
    )


def _prepare_all(
    principal: Principal,
    requests: Sequence[tuple[JobOptions, str | None]],
    topology: Topology,
    trace: dict[str, str] | None,
    batch: bool,
) -> list[_Prepared]:
    if len(requests) > MAX_BATCH_JOBS:
        raise PayloadTooLarge(f"a batch holds at most {MAX_BATCH_JOBS} jobs, not {len(requests)}")
    job_ids = uuid7_many(len(requests))
    prepared = [
        _prepare(principal, request, key, topology, trace, index if batch else None, job_id)
        for index, ((request, key), job_id) in enumerate(zip(requests, job_ids, strict=True))
    ]
    total = sum(p.size for p in prepared)
    if batch and total > MAX_BATCH_BYTES:
        raise PayloadTooLarge(f"a batch may be {MAX_BATCH_BYTES} bytes serialized, not {total}")
    return prepared


async def submit_keyless(
    *,
    principal: Principal,
    requests: Sequence[JobOptions],
    dispatcher: Dispatcher,
    topology: Topology,
    now: datetime,
    combiner: WriteCombiner,
    trace: dict[str, str] | None = None,
    batch: bool = False,
) -> list[SubmittedJob]:
    """`submit_jobs` for jobs without idempotency keys: the same checks and rows, committed
    by the `combiner` before this returns (no caller session)."""
    keyless = [(request, None) for request in requests]
    prepared = _prepare_all(principal, keyless, topology, trace, batch)
    if any(p.request.idempotency_key for p in prepared):
        raise ValueError("submit_keyless takes jobs without idempotency keys")
    results, writes = _build(prepared, [], principal.tenant_id, dispatcher.initial_status, now)
    await combiner.write(writes)
    return results


async def submit_jobs(
    session: AsyncSession,
    *,
    principal: Principal,
    requests: Sequence[tuple[JobOptions, str | None]],
    dispatcher: Dispatcher,
    topology: Topology,
    now: datetime,
    idempotency_window: timedelta,
    trace: dict[str, str] | None = None,
    batch: bool = False,
    combiner: WriteCombiner | None = None,
) -> list[SubmittedJob]:
    """Store jobs (all or none) and hand them to the queue; repeats return the original.

    Without idempotency keys and with a `combiner`, the rows are committed by the combiner's
    shared transaction before this returns, not by the caller's session.
    """
    prepared = _prepare_all(principal, requests, topology, trace, batch)
    if not any(p.key for p in prepared):
        if combiner is not None:
            results, writes = _build(
                prepared, [], principal.tenant_id, dispatcher.initial_status, now
            )
            await combiner.write(writes)
            return results
        return await _insert(session, prepared, [], principal, dispatcher, now)
    # With keys, a concurrent twin may win the unique index: the savepoint lets us
    # fall back to its row instead of failing the request.
    for attempt in range(2):
        existing = await _resolve_keys(session, principal, prepared, now, idempotency_window)
        try:
            async with session.begin_nested():
                return await _insert(session, prepared, existing, principal, dispatcher, now)
        except IntegrityError:
            if attempt == 1:
                raise Conflict(
                    "the idempotency key is being used by a concurrent request"
                ) from None
    raise AssertionError("unreachable")


async def _resolve_keys(
    session: AsyncSession,
    principal: Principal,
    prepared: list[_Prepared],
    now: datetime,
    window: timedelta,
) -> list[Job | None]:
    """For each job, the original job its idempotency key points to, if any."""
    keys = sorted({p.key for p in prepared if p.key})
    rows = (
        (
            await session.execute(
                select(Job).where(
                    Job.tenant_id == principal.tenant_id, col(Job.idempotency_key).in_(keys)
                )
            )
        )
        .scalars()
        .all()
    )
    by_key: dict[str, Job] = {}
    for row in rows:
        assert row.idempotency_key is not None
        if row.created_at < now - window:
            # Outside the window the key is free again: detach it from the old job.
            await session.execute(
                update(_job_table).where(_job_table.c.id == row.id).values(idempotency_key=None)
            )
            continue
        by_key[row.idempotency_key] = row
    result: list[Job | None] = []
    seen: dict[str, _Prepared] = {}
    for p in prepared:
        if p.key is None:
            result.append(None)
            continue
        original = by_key.get(p.key)
        first = seen.get(p.key)
        if original is not None:
            if original.request_hash != p.request_hash:
                raise Conflict(f"idempotency key {p.key!r} was already used for a different job")
        elif first is not None:
            if first.request_hash != p.request_hash:
                raise Conflict(f"idempotency key {p.key!r} is used twice in one batch")
            p.job_id = first.job_id  # the twin inside this batch answers with the first job
        else:
            seen[p.key] = p
        result.append(original)
    return result


@dataclass(slots=True)
class PendingWrites:
    """Rows for new jobs, ready to insert; several submissions' writes can be merged."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # Per queue: (message, serialized size) in submission order.
    messages: dict[str, list[tuple[OutgoingMessage, int]]] = field(default_factory=dict)

    def extend(self, other: PendingWrites) -> None:
        self.jobs += other.jobs
        self.events += other.events
        for queue, items in other.messages.items():
            self.messages.setdefault(queue, []).extend(items)


def _build(
    prepared: list[_Prepared],
    existing: list[Job | None],
    tenant_id: str,
    status: JobStatus,
    now: datetime,
) -> tuple[list[SubmittedJob], PendingWrites]:
    new_jobs: dict[str, dict[str, Any]] = {}
    writes = PendingWrites()
    results: list[SubmittedJob] = []
    detail = "stored and queued" if status is JobStatus.queued else "stored"
    for index, p in enumerate(prepared):
        original = existing[index] if existing else None
        if original is not None:
            results.append(SubmittedJob(created=False, fields=original))
            continue
        if p.job_id in new_jobs:
            results.append(SubmittedJob(created=False, fields=new_jobs[p.job_id]))
            continue
        delay = p.request.delay_seconds or 0
        row: dict[str, Any] = {
            "id": p.job_id,
            "tenant_id": tenant_id,
            "type": p.request.type,
            "queue": p.queue,
            "payload": p.payload,
            "status": status.value,
            "attempts": 0,
            "progress": 0,
            "progress_message": None,
            "idempotency_key": p.key,
            "request_hash": p.request_hash if p.key else None,
            "delay_seconds": delay,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
        }
        new_jobs[p.job_id] = row
        results.append(SubmittedJob(created=True, fields=row))
        writes.jobs.append(row)
        writes.events.append(
            {
                "job_id": p.job_id,
                "status": status.value,
                "attempt": 0,
                "detail": detail,
                "created_at": now,
            }
        )
        message = OutgoingMessage(body=p.envelope, delay_seconds=delay, encoded=p.encoded)
        writes.messages.setdefault(p.queue, []).append((message, p.size))
    return results, writes


async def write_pending(
    session: AsyncSession, writes: PendingWrites, dispatcher: Dispatcher
) -> None:
    """Insert the rows in the caller's transaction: one statement per table and queue batch."""
    if not writes.jobs:
        return
    await session.execute(insert(_job_table), writes.jobs)
    await session.execute(insert(_event_table), writes.events)
    for queue, items in writes.messages.items():
        chunk: list[OutgoingMessage] = []
        size = 0
        # Queue batches hold at most 100 messages and 256,000 bytes.
        for message, message_size in items:
            if chunk and (len(chunk) >= MAX_BATCH_JOBS or size + message_size > MAX_BATCH_BYTES):
                await dispatcher.dispatch(session, queue, chunk)
                chunk, size = [], 0
            chunk.append(message)
            size += message_size
        if chunk:
            await dispatcher.dispatch(session, queue, chunk)


async def _insert(
    session: AsyncSession,
    prepared: list[_Prepared],
    existing: list[Job | None],
    principal: Principal,
    dispatcher: Dispatcher,
    now: datetime,
) -> list[SubmittedJob]:
    results, writes = _build(
        prepared, existing, principal.tenant_id, dispatcher.initial_status, now
    )
    await write_pending(session, writes, dispatcher)
    return results


async def get_job(session: AsyncSession, *, tenant_id: str, job_id: str) -> Job:
    """The tenant's job; another tenant's job is indistinguishable from a missing one."""
    job = await session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"job {job_id} does not exist")
    return job


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("cursor is not one this API returned") from None
    if len(value) != 36:
        raise BadRequest("cursor is not one this API returned")
    return value


async def list_jobs(
    session: AsyncSession,
    *,
    tenant_id: str,
    status: JobStatus | None,
    job_type: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Job], str | None]:
    """The tenant's jobs, newest first (UUIDv7 ids sort by creation time)."""
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status.value)
    if job_type is not None:
        stmt = stmt.where(Job.type == job_type)
    if cursor is not None:
        stmt = stmt.where(col(Job.id) < decode_cursor(cursor))
    ordered = stmt.order_by(col(Job.id).desc()).limit(limit + 1)
    rows = list((await session.execute(ordered)).scalars().all())
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor

