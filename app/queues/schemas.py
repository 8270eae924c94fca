"""API shapes of the operator's queue controls."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import RequestBody
from app.queues.service import PurgeResult, QueueStatus


class QueuePublic(BaseModel):
    name: str
    backlog: int = Field(description="Stored messages: visible, delayed and in flight.")
    in_flight: int = Field(description="Messages leased by a consumer and not acked yet.")
    oldest_age_seconds: float | None = Field(
        description="Age of the oldest stored message; null when the queue is empty."
    )
    dead_letter_queue: str | None
    dead_letter_backlog: int | None = Field(description="null without a dead letter queue.")
    paused: bool = Field(description="Delivery paused: the queue accepts jobs, runs none.")

    @classmethod
    def of(cls, status: QueueStatus) -> QueuePublic:
        return cls(
            name=status.name,
            backlog=status.backlog,
            in_flight=status.in_flight,
            oldest_age_seconds=status.oldest_age_seconds,
            dead_letter_queue=status.dead_letter_queue,
            dead_letter_backlog=status.dead_letter_backlog,
            paused=status.paused,
        )


class QueueList(BaseModel):
    data: list[QueuePublic]


class QueuePurge(RequestBody):
    model_config = ConfigDict(extra="forbid")

    confirm: str | None = Field(
        default=None, max_length=63, description="The queue's name again, to confirm."
    )


class QueuePurged(BaseModel):
    queue: str
    purged: int | None = Field(
        description="Messages deleted; null when the backend does not say (Cloudflare)."
    )
    cancelled_jobs: int = Field(
        description="Jobs that waited in the queue, now `cancelled` with the reason."
    )

    @classmethod
    def of(cls, result: PurgeResult) -> QueuePurged:
        return cls(queue=result.queue, purged=result.purged, cancelled_jobs=result.cancelled_jobs)
