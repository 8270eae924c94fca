"""API shapes of the jobs domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.models import JobStatus
from app.jobs.payloads import JobRequest

MAX_BATCH_JOBS = 100


class JobPublic(BaseModel):
    """A job as its tenant sees it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    type: str
    queue: str
    status: JobStatus
    attempts: int
    progress: int = Field(ge=0, le=100, description="Percent done, as reported by the handler.")
    progress_message: str | None = None
    payload: dict[str, Any]
    delay_seconds: int
    idempotency_key: str | None = None
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobBatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "jobs": [
                        {"type": "sync-single-order", "orderId": 42, "idempotency_key": "o-42"},
                        {"type": "analytics-event", "name": "order.paid"},
                    ]
                }
            ]
        },
    )

    # The count limit is checked by the service, so too many jobs is a 413, not a 422.
    jobs: list[JobRequest] = Field(
        min_length=1,
        json_schema_extra={"maxItems": MAX_BATCH_JOBS},
        description=f"1..{MAX_BATCH_JOBS} jobs, at most 256,000 bytes in all.",
    )


class JobBatchResponse(BaseModel):
    jobs: list[JobPublic]


class JobPage(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null on the last page."
    )
