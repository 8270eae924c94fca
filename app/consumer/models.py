"""Tables of the consumer: one row per handler attempt, one per circuit breaker."""

from __future__ import annotations

from datetime import datetime

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

from app.core.db import UTCDateTime


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


class CircuitBreaker(SQLModel, table=True):
    """Breaker state of one (tenant, job type); no row means closed with no failures."""

    __tablename__ = "circuit_breaker"

    tenant_id: str = Field(
        sa_column=Column(String(36), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    )
    job_type: str = Field(primary_key=True, max_length=64)
    state: str = Field(default="closed", max_length=16)  # closed | open | half_open
    failures: int = 0  # consecutive failures inside the current window
    window_started_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    opened_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    trial_started_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
