"""Refusals at the door. Each carries `Retry-After` and the reason counted in metrics.

Refusal (AppError)
 ├── 429: the tenant is over its own budget
 │    ├── RateLimited        per-tenant rate of one route class
 │    ├── AuthFailuresThrottled  too many failed authentications from one address
 │    └── QuotaExceeded      jobs not yet finished (in-flight quota)
 └── 503: the system cannot take this work now
      ├── QueueFull          a queue is above its high watermark
      ├── BreakerOpen        the consumer's breaker for (tenant, job type) is open
      └── AdmissionUnknown   backpressure signals unavailable, policy fail-closed
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from app.core.errors import AppError


class Refusal(AppError):
    """A request refused before anything was stored; `reason` labels the metric."""

    reason: ClassVar[str] = "refused"

    def __init__(
        self, detail: str, *, retry_after: int, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail, headers={**(headers or {}), "Retry-After": str(retry_after)})
        self.retry_after = retry_after


class RateLimited(Refusal):
    status, title, slug, reason = 429, "Too Many Requests", "rate-limited", "rate_limit"


class AuthFailuresThrottled(Refusal):
    status, title, slug, reason = 429, "Too Many Requests", "auth-failures", "auth_failures"


class QuotaExceeded(Refusal):
    status, title, slug, reason = 429, "Too Many Requests", "quota-exceeded", "quota"


class QueueFull(Refusal):
    status, title, slug, reason = 503, "Service Unavailable", "queue-full", "queue_depth"


class BreakerOpen(Refusal):
    status, title, slug, reason = 503, "Service Unavailable", "breaker-open", "breaker"


class AdmissionUnknown(Refusal):
    status, title, slug, reason = 503, "Service Unavailable", "backpressure-unknown", "unknown"
