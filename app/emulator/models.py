"""Tables of the emulator's registry: queues and their consumers.

Messages themselves live in the local engine's `queue_message` table, keyed by `queue_id`
(not by name), so a queue can be renamed without touching its messages and the emulator's
messages never mix with those of a gateway running the local backend on the same database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.core.db import JSONType, UTCDateTime


class EmulatorQueue(SQLModel, table=True):
    """One queue as `GET /queues/{id}` shows it."""

    __tablename__ = "emulator_queue"

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=63, unique=True)
    delivery_delay: int = 0
    message_retention_period: int
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    modified_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    purge_started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # eu, us or fedramp; set at creation only, and shared by the queue's dead letter queue.
    jurisdiction: str | None = Field(default=None, max_length=16)


class EmulatorConsumer(SQLModel, table=True):
    """One of a queue's consumers; `settings` holds exactly what the API shows for its type."""

    __tablename__ = "emulator_consumer"
    # One consumer of each type per queue (docs/emulator.md).
    __table_args__ = (UniqueConstraint("queue_id", "type"),)

    id: str = Field(primary_key=True, max_length=32)
    queue_id: str = Field(
        sa_column=Column(
            String(32), ForeignKey("emulator_queue.id", ondelete="CASCADE"), nullable=False
        )
    )
    type: str = Field(max_length=16)
    script_name: str | None = Field(default=None, max_length=255)
    dead_letter_queue: str | None = Field(default=None, max_length=63)
    settings: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
