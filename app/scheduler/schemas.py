"""API shapes of the scheduler domain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from app.core.schemas import RequestBody
from app.jobs.payloads import JobOptions, JobRequest
from app.scheduler import cron

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^\S(.*\S)?$",
        description="Unique per tenant.",
        examples=["orders-every-3h"],
    ),
]
Cron = Annotated[
    str,
    Field(
        max_length=200,
        description=(
            "Five fields (minute hour day-of-month month day-of-week), evaluated on the wall "
            "clock of `timezone`."
        ),
        examples=["0 */3 * * *"],
    ),
]
Timezone = Annotated[
    str,
    Field(
        max_length=64,
        description=(
            "The IANA time zone `cron` is read in (default UTC). Across daylight saving "
            "changes a repeated local time fires once, a skipped one as late as the clock "
            "jumped (02:30 → 03:30)."
        ),
        examples=["Europe/Paris"],
    ),
]
JOB_DESCRIPTION = (
    "The job to submit at every occurrence, exactly as POST /v1/jobs takes it "
    "(without `idempotency_key`: each fire gets `schedule:{id}:{scheduled_for}`)."
)


def _check_cron(value: str) -> str:
    try:
        return cron.parse(value)
    except cron.InvalidCron as exc:
        raise ValueError(str(exc)) from None


def _check_timezone(value: str) -> str:
    try:
        cron.zone(value)
    except cron.InvalidTimezone as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_job(job: JobOptions) -> JobOptions:
    if job.idempotency_key is not None:
        raise ValueError("a scheduled job gets its idempotency key from each fire; omit it")
    return job


def _keyless_job(schema: dict[str, Any]) -> None:
    """Document `_check_job`: a scheduled job has no string `idempotency_key`."""
    schema["not"] = {
        "required": ["idempotency_key"],
        "properties": {"idempotency_key": {"type": "string"}},
    }


def job_template(job: JobOptions) -> dict[str, Any]:
    """What is stored and submitted at each fire: the job's fields with defaults filled in."""
    return job.model_dump(mode="json", exclude={"idempotency_key", "tenantId"}, exclude_none=True)


class ScheduleCreate(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "orders-every-3h",
                    "cron": "0 */3 * * *",
                    "job": {"type": "sync-orders", "siteId": "shop-1"},
                }
            ]
        },
    )

    name: Name
    cron: Cron
    timezone: Timezone = "UTC"
    job: JobRequest = Field(description=JOB_DESCRIPTION, json_schema_extra=_keyless_job)
    enabled: bool = True

    _cron = field_validator("cron")(_check_cron)
    _timezone = field_validator("timezone")(_check_timezone)
    _job = field_validator("job")(_check_job)


def _omittable_keyless_job(schema: dict[str, Any]) -> None:
    """Document an omittable job as never null, and keyless."""
    schema["anyOf"] = [branch for branch in schema["anyOf"] if branch != {"type": "null"}]
    _keyless_job(schema)


class ScheduleUpdate(RequestBody):
    """Only the fields sent change; none of them may be null."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False}]})

    # Omittable but never null: the document says so (`SkipJsonSchema`), the validator too.
    name: Name | SkipJsonSchema[None] = None
    cron: Cron | SkipJsonSchema[None] = None
    timezone: Timezone | SkipJsonSchema[None] = None
    # (`SkipJsonSchema` would make the job a plain union: its errors would lose the type.)
    job: JobRequest | None = Field(
        default=None, description=JOB_DESCRIPTION, json_schema_extra=_omittable_keyless_job
    )
    enabled: bool | SkipJsonSchema[None] = None

    @field_validator("name", "cron", "timezone", "job", "enabled", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        return None if value is None else _check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)

    @field_validator("job")
    @classmethod
    def _valid_job(cls, value: JobOptions | None) -> JobOptions | None:
        return None if value is None else _check_job(value)


class SchedulePublic(BaseModel):
    """A schedule as its tenant sees it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    cron: str
    timezone: str = Field(description="The IANA time zone `cron` is read in.")
    job: dict[str, Any]
    enabled: bool
    next_run_at: datetime | None = Field(description="The next occurrence; null while disabled.")
    last_run_at: datetime | None = Field(description="The occurrence fired last.")
    last_job_id: str | None = Field(description="The job the last fire submitted.")
    last_error: str | None = Field(description="Why the last fire failed; null when it did not.")
    retry_at: datetime | None = Field(
        default=None,
        description="Set while a fire refused by admission (rate, quota) waits to be retried.",
    )
    created_at: datetime
    updated_at: datetime


class ScheduleList(BaseModel):
    data: list[SchedulePublic]
    count: int
