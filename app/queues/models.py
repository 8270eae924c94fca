"""Tables of the local queue engine."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Text, text
from sqlmodel import Field, SQLModel


class QueueMessage(SQLModel, table=True):
    """One stored message. A lease sets `lease_id` and pushes `visible_at_ms` forward."""

    __tablename__ = "queue_message"
    __table_args__ = (
        Index("ix_queue_message_queue_visible_at_ms", "queue", "visible_at_ms"),
        Index("ix_queue_message_queue_enqueued_ms", "queue", "enqueued_ms"),
        # Leased messages only: in-flight counts and expired final leases without a scan.
        Index(
            "ix_queue_message_leased",
            "queue",
            "visible_at_ms",
            sqlite_where=text("lease_id IS NOT NULL"),
            postgresql_where=text("lease_id IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=32)
    queue: str = Field(max_length=63)
    body: str = Field(sa_column=Column(Text, nullable=False))
    content_type: str = Field(max_length=8)
    size_bytes: int
    enqueued_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    visible_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    delay_seconds: int = 0
    attempts: int = 0
    lease_id: str | None = Field(default=None, max_length=128)


class QueuePause(SQLModel, table=True):
    """A queue whose delivery is paused: it still takes messages, pulls get none.

    One row per paused queue (resuming deletes it), shared by every process on the database:
    the gateway that pauses, the consumers that pull, the emulator that shows it.
    """

    __tablename__ = "queue_pause"

    queue: str = Field(primary_key=True, max_length=63)
    paused_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
