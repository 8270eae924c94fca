"""What the client raises: one hierarchy, the problem+json (RFC 9457) of the answer attached."""

from __future__ import annotations

from typing import Any

import httpx


class JobgateError(Exception):
    """Anything the client could not do."""


class GatewayUnreachable(JobgateError):
    """No answer at all: connection refused, DNS, timeout."""


class ProblemError(JobgateError):
    """The gateway answered with an error status; its problem+json is on the exception."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        type: str = "about:blank",
        instance: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}".rstrip(": "))
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.instance = instance
        self.errors = errors or []
        self.retry_after = retry_after


class BadRequest(ProblemError):
    """400."""


class Unauthorized(ProblemError):
    """401: no key, or not a valid one."""


class Forbidden(ProblemError):
    """403: the key lacks the scope, or the route is the operator's."""


class NotFound(ProblemError):
    """404: no such resource for this caller (another tenant's job is 404 too)."""


class Conflict(ProblemError):
    """409: an idempotency key reused with another body, or a job in the wrong state."""


class PayloadTooLarge(ProblemError):
    """413."""


class UnsupportedMediaType(ProblemError):
    """415."""


class ValidationFailed(ProblemError):
    """422: `errors` names each invalid field."""


class RateLimited(ProblemError):
    """429: over a rate limit or quota, still after the client's retries."""


class Unavailable(ProblemError):
    """503: the gateway cannot take it now, still after the client's retries."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds (the gateway sends delta-seconds; a date counts as absent)."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def problem_error(response: httpx.Response) -> ProblemError:
    """The exception for an error answer; a body that is not a problem keeps the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    errors = problem.get("errors")
    kind = _BY_STATUS.get(response.status_code, ProblemError)
    return kind(
        response.status_code,
        str(problem.get("title") or response.reason_phrase),
        str(problem.get("detail") or ""),
        type=str(problem.get("type") or "about:blank"),
        instance=problem.get("instance"),
        errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
        retry_after=retry_after_seconds(response),
    )
