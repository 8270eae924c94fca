"""Scheduler tables: cron schedules and the record of each fire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
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


class Schedule(SQLModel, table=True):
    """A tenant's cron schedule: `job` is submitted at every occurrence of `cron`, read on
    the wall clock of `timezone` (an IANA name; times stored are UTC)."""

    __tablename__ = "schedule"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        # The runner's claim: enabled schedules whose next occurrence is due.
        Index("ix_schedule_enabled_next_run_at", "enabled", "next_run_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(
        sa_column=Column(String(36), ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(max_length=200)
    cron: str = Field(max_length=100)
    timezone: str = Field(default="UTC", max_length=64)
    # The job as submitted to POST /v1/jobs, validated against the job payload models.
    job: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    enabled: bool = Field(sa_column=Column(Boolean, nullable=False))
    # The next occurrence to fire; null while disabled.
    next_run_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # The occurrence fired last, its job, and why the last fire failed (if it did).
    last_run_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    last_job_id: str | None = Field(default=None, max_length=36)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    # A fire refused by admission: `next_run_at` stays on that occurrence, tried again then.
    retry_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ScheduleFire(SQLModel, table=True):
    """One fired occurrence; the unique key is what makes a fire happen once."""

    __tablename__ = "schedule_fire"
    __table_args__ = (UniqueConstraint("schedule_id", "scheduled_for"),)

    # SQLite only auto-increments a plain INTEGER primary key.
    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    schedule_id: str = Field(
        sa_column=Column(String(36), ForeignKey("schedule.id", ondelete="CASCADE"), nullable=False)
    )
    scheduled_for: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    job_id: str = Field(max_length=36)
    # cron | manual (POST /v1/schedules/{id}/run)
    trigger: str = Field(max_length=16)
    fired_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
