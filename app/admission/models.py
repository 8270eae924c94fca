"""Per-tenant admission plan: overrides of the gateway-wide defaults."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, ForeignKey, String
from sqlmodel import Field, SQLModel

from app.core.db import JSONType, UTCDateTime


class TenantPlan(SQLModel, table=True):
    """A tenant's plan; a NULL column (or no row) means the gateway default."""

    __tablename__ = "tenant_plan"

    tenant_id: str = Field(
        sa_column=Column(String(36), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    )
    plan: str = Field(default="default", max_length=64)
    # `limits` notation, e.g. "600/minute"; jobs count one unit per job, batch per request.
    rate_limit_jobs: str | None = Field(default=None, max_length=64)
    rate_limit_batch: str | None = Field(default=None, max_length=64)
    rate_limit_reads: str | None = Field(default=None, max_length=64)
    rate_limit_webhooks: str | None = Field(default=None, max_length=64)
    # Jobs not yet finished this tenant may have.
    max_in_flight: int | None = None
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class EmailPolicy(SQLModel, table=True):
    """Where a tenant's `send-email` jobs may write to and how fast (no row: nowhere)."""

    __tablename__ = "email_policy"

    tenant_id: str = Field(
        sa_column=Column(String(36), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    )
    # Any recipient at all; otherwise only addresses in `domains` (lower-case, exact match).
    allow_any: bool = Field(sa_column=Column(Boolean, nullable=False))
    domains: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    # `limits` notation, e.g. "100/hour": emails accepted per tenant, one unit per job.
    rate: str = Field(max_length=64)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
