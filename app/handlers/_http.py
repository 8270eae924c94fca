"""Mapping downstream HTTP answers onto the consumer's retry vocabulary."""

from __future__ import annotations

import math

import httpx

from app.consumer.registry import PermanentFailure, RetryLater
from app.core.http import parse_retry_after

DEFAULT_RETRY_AFTER_SECONDS = 60
# Never park a job for half a day or more on one downstream answer.
MAX_RETRY_AFTER_SECONDS = 43_200


def retry_after_seconds(
    response: httpx.Response, *, now_ms: int, default: int = DEFAULT_RETRY_AFTER_SECONDS
) -> int:
    """`Retry-After` as whole seconds (delta or HTTP-date), clamped; `default` if absent."""
    parsed = parse_retry_after(response.headers.get("retry-after"), now_ms=now_ms)
    if parsed is None:
        return default
    return max(1, min(math.ceil(parsed), MAX_RETRY_AFTER_SECONDS))


class DownstreamError(Exception):
    """A transient downstream failure (5xx, timeout, connection): retried with backoff."""


def raise_for_downstream(response: httpx.Response, *, service: str, now_ms: int) -> None:
    """Raise the consumer's exception for a non-2xx answer from a JSON service.

    429 and 503 with `Retry-After` → `RetryLater`; other 5xx, 408 → `DownstreamError`
    (transient, counted by the breaker); any other 4xx → `PermanentFailure`.
    """
    status = response.status_code
    if status < 400:
        return
    if status == 429 or (status == 503 and "retry-after" in response.headers):
        delay = retry_after_seconds(response, now_ms=now_ms)
        raise RetryLater(delay, f"{service} answered {status}; retry in {delay} s")
    if status >= 500 or status == 408:
        raise DownstreamError(f"{service} answered {status}: {_snippet(response)}")
    raise PermanentFailure(f"{service} refused the request ({status}): {_snippet(response)}")


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:limit] if text else "(empty body)"
