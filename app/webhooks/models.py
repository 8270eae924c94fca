"""Tables of the webhook ingress: received events, R2 rules, unsigned-route tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.core.db import JSONType, UTCDateTime


class WebhookEvent(SQLModel, table=True):
    """One accepted delivery; the unique key makes a replay find the original jobs."""

    __tablename__ = "webhook_event"
    __table_args__ = (UniqueConstraint("source", "tenant_id", "external_id"),)

    id: str = Field(primary_key=True, max_length=36)
    # prestashop | prestashop-unsigned | r2
    source: str = Field(max_length=32)
    tenant_id: str = Field(
        sa_column=Column(String(36), ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False)
    )
    # webhook-id for signed deliveries; a digest of the body or object otherwise.
    external_id: str = Field(max_length=255)
    event_type: str = Field(max_length=64)
    job_ids: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class R2Rule(SQLModel, table=True):
    """Objects created in `bucket` under `prefix` become `process-image` jobs for a tenant."""

    __tablename__ = "r2_rule"
    __table_args__ = (UniqueConstraint("tenant_id", "bucket", "prefix"),)

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    bucket: str = Field(max_length=63)
    prefix: str = Field(default="", max_length=1024)
    # The `operations` of the process-image job, e.g. [{"type": "thumbnail", ...}].
    operations: list[dict[str, Any]] = Field(sa_column=Column(JSONType, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class UnsignedWebhookToken(SQLModel, table=True):
    """A tenant's opt-in to the weaker unsigned (ps_webhooks-style) route.

    Only the SHA-256 of the URL token is stored; deleting the row turns the route off.
    """

    __tablename__ = "unsigned_webhook_token"

    tenant_id: str = Field(
        sa_column=Column(String(36), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    )
    token_hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
