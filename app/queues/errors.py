"""Queue errors, each carrying the Cloudflare error code the emulator answers with."""

from __future__ import annotations

from typing import ClassVar

from app.core.errors import (
    AppError,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
)


class QueueError(AppError):
    code: ClassVar[int] = 15000


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
