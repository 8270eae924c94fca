"""The transactional outbox: jobs accepted but not yet published to Cloudflare."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer, Text, text
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime


class OutboxMessage(SQLModel, table=True):
    """One queue message to publish; written in the same transaction as its job."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        # The relay only ever scans unpublished rows.
        Index(
            "ix_outbox_message_pending",
            "available_at_ms",
            sqlite_where=text("published_at IS NULL"),
            postgresql_where=text("published_at IS NULL"),
        ),
        # The oldest unpublished row (the age gauge) without a scan.
        Index(
            "ix_outbox_message_pending_created",
            "created_ms",
            sqlite_where=text("published_at IS NULL"),
            postgresql_where=text("published_at IS NULL"),
        ),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    job_id: str = Field(max_length=36, index=True)
    queue: str = Field(max_length=63)
    body: str = Field(sa_column=Column(Text, nullable=False))
    size_bytes: int
    # Delivery delay the job asked for, counted from `created_ms`.
    delay_seconds: int = 0
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Not before: pushed forward after a failed publish (backoff).
    available_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    published_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
