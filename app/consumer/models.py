"""Tables of the consumer: one row per circuit breaker."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, String, Text
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime


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
