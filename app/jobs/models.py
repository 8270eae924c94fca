"""Job store tables: the system of record for job status."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from app.core.db import JSONType, UTCDateTime


class JobStatus(StrEnum):
    accepted = "accepted"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    retrying = "retrying"
    failed = "failed"
    dead = "dead"
    cancelled = "cancelled"


FINISHED_STATUSES = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.dead, JobStatus.cancelled}
)


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_job_tenant_id_id", "tenant_id", "id"),
        Index("ix_job_tenant_id_status_id", "tenant_id", "status", "id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(
        sa_column=Column(String(36), ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False)
    )
    type: str = Field(max_length=64)
    queue: str = Field(max_length=63)
    payload: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    status: str = Field(max_length=16)
    attempts: int = 0
    # Attempts used before the current budget: a manual retry renews the budget, so the
    # consumer counts the queue's max_retries from here (the attempt numbers go on).
    attempts_base: int = 0
    progress: int = 0
    progress_message: str | None = Field(default=None, max_length=500)
    idempotency_key: str | None = Field(default=None, max_length=255)
    # SHA-256 of the canonical request, to tell a true repeat from a reused key.
    request_hash: str | None = Field(default=None, max_length=64)
    delay_seconds: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # When a `retrying` job is due again; NULL in every other status.
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class JobEvent(SQLModel, table=True):
    """One status change of a job, with when and why."""

    __tablename__ = "job_event"

    # SQLite only auto-increments a plain INTEGER primary key.
    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    job_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey("job.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    status: str = Field(max_length=16)
    attempt: int = 0
    detail: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class JobAttempt(SQLModel, table=True):
    """One run of a job's handler: when, how it ended, and why.

    `ended_at` is NULL while the attempt runs. `lease_expires_ms` follows the message lease
    (the heartbeat moves it), so an attempt whose consumer died can be told from a slow one.
    """

    __tablename__ = "job_attempt"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt"),
        Index("ix_job_attempt_ended_at_lease_expires_ms", "ended_at", "lease_expires_ms"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    job_id: str = Field(
        sa_column=Column(String(36), ForeignKey("job.id", ondelete="CASCADE"), nullable=False)
    )
    attempt: int
    queue: str = Field(max_length=63)
    message_id: str = Field(max_length=64)
    # The queue will not deliver this message again: if the attempt is lost, the job is dead.
    final_delivery: bool = False
    lease_expires_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # succeeded | retry | failed | dead | released | lost
    outcome: str | None = Field(default=None, max_length=16)
    error: str | None = Field(default=None, sa_column=Column(Text))
    retry_delay_seconds: int | None = None
