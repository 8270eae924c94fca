"""Queue errors, each carrying the Cloudflare error code the emulator answers with, and
the classification of what is worth retrying."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import ClassVar

from app.core.errors import (
    AppError,
    BadRequest,
    Conflict,
    FieldError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
)


class Retry(StrEnum):
    """Whether sending the same request again can succeed."""

    retryable = "retryable"  # the backend or the path to it failed: try again later
    never = "never"  # the request itself is refused: the same bytes will always be refused


# 10xxx codes that are not about the request's content: the account, the queue or the
# backend's load, all of which an operator or time can fix.
FIXABLE_CODES = frozenset(
    {
        10000,  # authentication: a token to fix
        10104,  # queue not found: a queue to (re)create
        10250,  # queue overloaded
        10251,  # queue storage limit reached
        10252,  # queue delivery paused
    }
)
# Statuses that refuse a request's content, whatever the code.
NEVER_STATUSES = frozenset({400, 413, 422})


def classify(status: int, code: int | None) -> Retry:
    """The retry table: network errors (answered as 503 here), 429 and 5xx are retryable;
    Cloudflare's 10xxx validation codes (10107, 10202-10208, ...) and 400/413/422 never
    succeed; anything else (401/403/404/409) is configuration, retried under a cap."""
    if status == 429 or status >= 500:
        return Retry.retryable
    if code is not None and code in FIXABLE_CODES:
        return Retry.retryable
    if code is not None and 10_000 <= code < 11_000:
        return Retry.never
    if status in NEVER_STATUSES:
        return Retry.never
    return Retry.retryable


class QueueError(AppError):
    code: ClassVar[int] = 15000

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[FieldError] | None = None,
        status: int | None = None,
        backend_status: int | None = None,
        backend_code: int | None = None,
    ) -> None:
        super().__init__(detail, headers=headers, errors=errors, status=status)
        # What the backend answered (HTTP status and Cloudflare code), when it answered over
        # HTTP; the class's own status and code otherwise (the local engine, network errors).
        self.backend_status = backend_status if backend_status is not None else self.status
        self.backend_code = backend_code if backend_code is not None else self.code

    @property
    def retry(self) -> Retry:
        return classify(self.backend_status, self.backend_code)


class QueueNotFound(QueueError, NotFound):
    code = 10104


class MessageTooLarge(QueueError, PayloadTooLarge):
    code = 10204


class BatchTooLarge(QueueError, PayloadTooLarge):
    code = 10205


class BatchCountInvalid(QueueError, PayloadTooLarge):
    code = 10206


class MessageInvalid(QueueError, BadRequest):
    """Bad content type or delay on one message."""

    code = 10203


class BatchDelayInvalid(QueueError, BadRequest):
    code = 10202


class QueuePaused(QueueError, Conflict):
    code = 10252


class QueueOverloaded(QueueError, TooManyRequests):
    code = 10250


class QueueUnavailable(QueueError, ServiceUnavailable):
    """The backend could not be reached or kept failing (network, 5xx)."""

    code = 15000


class QueueAuthFailed(QueueError, ServiceUnavailable):
    """The backend refused our credentials (Cloudflare code 10000): a configuration error."""

    code = 10000


class QueueRequestInvalid(QueueError, BadRequest):
    """The backend refused the request's shape (codes 10107, 10207, 10208)."""

    code = 10207


ERRORS_BY_CODE: dict[int, type[QueueError]] = {
    cls.code: cls
    for cls in (
        QueueNotFound,
        MessageTooLarge,
        BatchTooLarge,
        BatchCountInvalid,
        MessageInvalid,
        BatchDelayInvalid,
        QueuePaused,
        QueueOverloaded,
        QueueAuthFailed,
        QueueRequestInvalid,
    )
}
