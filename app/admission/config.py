"""Admission settings: `JOBGATE_ADMISSION_*`, plus the job rate limit and Redis URL under
their older names `JOBGATE_RATE_LIMIT_JOBS` and `JOBGATE_REDIS_URL`; and the failed-auth
throttle, `JOBGATE_AUTH_FAILURE_*`.

Watermarks: every queue jobs route to gets the defaults below; `JOBGATE_ADMISSION_WATERMARKS`
overrides them per queue with JSON, e.g.
`{"email-sending": {"high_messages": 5000, "low_messages": 2500}}`. They live here rather than
in `wrangler.jsonc` because they are a property of this gateway deployment (how much backlog we
tolerate), not of the queues Cloudflare deploys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from limits import parse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.config import SettingsGroup

# Retry-After is always within these bounds (seconds).
MIN_RETRY_AFTER_SECONDS = 1
MAX_RETRY_AFTER_SECONDS = 300


def check_limit(value: str) -> str:
    """A single `limits` expression such as `600/minute` or `10 per second`."""
    try:
        parse(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate limit such as '600/minute'") from exc
    return value


class Watermarks(BaseModel):
    """Close a queue at `high_*`, reopen it once every measure is at or below `low_*`."""

    model_config = ConfigDict(extra="forbid")

    high_messages: int = Field(default=100_000, ge=1)
    low_messages: int = Field(default=50_000, ge=0)
    high_bytes: int = Field(default=1 << 30, ge=1)
    low_bytes: int = Field(default=1 << 29, ge=0)

    @model_validator(mode="after")
    def _low_below_high(self) -> Watermarks:
        if self.low_messages >= self.high_messages:
            raise ValueError("low_messages must be below high_messages")
        if self.low_bytes >= self.high_bytes:
            raise ValueError("low_bytes must be below high_bytes")
        return self


class AdmissionSettings(SettingsGroup):
    env_prefix: ClassVar[str] = "ADMISSION_"
    env_names: ClassVar[Mapping[str, str]] = {
        "rate_limit_jobs": "RATE_LIMIT_JOBS",
        "redis_url": "REDIS_URL",
    }

    # Shared rate-limit store (unset: in memory, per process).
    redis_url: str | None = None
    rate_limit_jobs: str = "600/minute"
    # Per tenant and route class; a tenant's plan (tenant_plan table) overrides each.
    rate_limit_batch: str = "120/minute"  # batch requests (their jobs also count as jobs)
    rate_limit_reads: str = "6000/minute"
    rate_limit_webhooks: str = "1200/minute"
    # Keys in Redis start with this, so gateways sharing a budget must share it.
    redis_prefix: str = "jobgate"
    # Jobs not yet finished per tenant (accepted, queued, running, retrying).
    max_in_flight: int = Field(default=100_000, ge=1)
    # Default watermarks, and per-queue overrides.
    high_messages: int = Field(default=100_000, ge=1)
    low_messages: int = Field(default=50_000, ge=0)
    high_bytes: int = Field(default=1 << 30, ge=1)
    low_bytes: int = Field(default=1 << 29, ge=0)
    watermarks: dict[str, Watermarks] = Field(default_factory=dict)
    # Queue depth is sampled in the background this often (never on the request path).
    sample_interval_ms: int = Field(default=1000, ge=50, le=60_000)
    # Cloudflare: GET /metrics at most this often per queue; publishes refresh it for free.
    cf_metrics_poll_ms: int = Field(default=5000, ge=100, le=300_000)
    # A depth sample older than this is "unknown".
    stale_after_ms: int = Field(default=10_000, ge=100)
    # What to do when depth (or the shared rate-limit store) is unknown: `open` admits,
    # `closed` refuses with 503. Open by default: the job store is the system of record and
    # the outbox absorbs outages, so a metrics blip must not become a full outage.
    on_unknown: Literal["open", "closed"] = "open"
    # Drain rate: measured over this sliding window of samples.
    drain_window_ms: int = Field(default=30_000, ge=1000)
    # Retry-After when no drain rate can be measured yet (too few samples).
    retry_after_fallback_seconds: int = Field(
        default=30, ge=MIN_RETRY_AFTER_SECONDS, le=MAX_RETRY_AFTER_SECONDS
    )
    # In-flight counts and open breakers are re-read at most this often.
    quota_cache_ms: int = Field(default=1000, ge=0)
    breaker_cache_ms: int = Field(default=1000, ge=0)
    plan_cache_ms: int = Field(default=30_000, ge=0)
    # Job types refused at ingress while their breaker is open: `*` = all, `` = none,
    # else a comma-separated list. Webhooks are never refused for it (stored and delayed).
    breaker_types: str = "*"

    @field_validator(
        "rate_limit_jobs", "rate_limit_batch", "rate_limit_reads", "rate_limit_webhooks"
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        return check_limit(value)

    def watermarks_for(self, queue: str) -> Watermarks:
        override = self.watermarks.get(queue)
        if override is not None:
            return override
        return Watermarks(
            high_messages=self.high_messages,
            low_messages=self.low_messages,
            high_bytes=self.high_bytes,
            low_bytes=self.low_bytes,
        )

    def breaker_applies(self, job_type: str) -> bool:
        names = {name.strip() for name in self.breaker_types.split(",") if name.strip()}
        return "*" in names or job_type in names


class AuthFailureSettings(SettingsGroup):
    """Failed authentications (401s) per client address: after `burst` within the window,
    requests to /v1 from that address answer 429 with Retry-After until the window ends."""

    env_prefix: ClassVar[str] = "AUTH_FAILURE_"

    burst: int = Field(default=30, ge=1, le=1_000_000)
    window_seconds: int = Field(default=60, ge=1, le=86_400)
