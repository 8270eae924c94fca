"""API shapes of the jobs domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.schemas import JsonAwareDatetime, JsonInt, RequestBody
from app.jobs.models import JobStatus
from app.jobs.payloads import JOB_TYPES, JobRequest

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
    next_attempt_at: datetime | None = Field(
        default=None, description="When a `retrying` job runs again; null in other statuses."
    )


class JobBatchRequest(RequestBody):
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


class AdminJobPublic(JobPublic):
    """A job as the operator sees it: with its tenant."""

    tenant_id: str


class AdminJobPage(BaseModel):
    data: list[AdminJobPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null on the last page."
    )


class AttemptPublic(BaseModel):
    """One run of the job's handler."""

    attempt: int = Field(description="1 for the first run; a retried job keeps counting.")
    started_at: datetime
    finished_at: datetime | None = Field(description="Null while the attempt runs.")
    outcome: str | None = Field(
        description="succeeded, retry, failed, dead, released or lost; null while it runs."
    )
    error: str | None = None
    duration_ms: int | None = Field(description="Null while the attempt runs.")


class AttemptList(BaseModel):
    data: list[AttemptPublic]


MAX_BULK_RETRY = 1000


class BulkRetryRequest(RequestBody):
    """Which finished jobs to queue again (all filters combine)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"status": "dead", "type": "sync-orders", "dry_run": True}]
        },
    )

    status: Literal["dead", "failed"]
    type: str | None = Field(default=None, max_length=64)
    queue: str | None = Field(default=None, max_length=63)
    created_after: JsonAwareDatetime | None = None
    created_before: JsonAwareDatetime | None = None
    error_contains: str | None = Field(default=None, min_length=1, max_length=200)
    limit: JsonInt[int] = Field(
        default=100, ge=1, le=MAX_BULK_RETRY, description="At most this many."
    )
    dry_run: bool = Field(description="true: only count the matching jobs.")

    @model_validator(mode="after")
    def _check(self) -> BulkRetryRequest:
        if self.type is not None and self.type not in JOB_TYPES:
            raise ValueError(f"type must be one of {', '.join(sorted(JOB_TYPES))}")
        if self.created_after and self.created_before and self.created_after >= self.created_before:
            raise ValueError("created_after must be before created_before")
        return self


class AdminBulkRetryRequest(BulkRetryRequest):
    tenant_id: str | None = Field(
        default=None, max_length=36, description="Every tenant if absent."
    )


class BulkRetryResult(BaseModel):
    matched: int = Field(description="Jobs matching the filters (all of them, not only `limit`).")
    retried: int = Field(description="Jobs queued again (0 on a dry run).")
