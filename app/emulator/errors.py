"""Cloudflare API errors, rendered in the v4 envelope, from ONE table of documented codes.

Every code the emulator answers is in `ERROR_CODES`, with its HTTP status and the name
Cloudflare gives it (docs/emulator.md, "Error codes", says where each comes from). The
classes below only pick a row: a code outside the table cannot be raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi.responses import JSONResponse

from app.core.errors import AppError
from app.queues.errors import QueueError


@dataclass(frozen=True, slots=True)
class ErrorCode:
    status: int
    name: str


# Cloudflare's Queues error-code reference (client side: 4xx; "429 type"; "500 type"), plus
# the two generic v4 API codes it shows: 7003 "No route for the URI" and 10000 authentication.
ERROR_CODES: dict[int, ErrorCode] = {
    7003: ErrorCode(404, "No route for the URI"),
    10000: ErrorCode(403, "Authentication error"),  # 401 when no token is sent at all
    10104: ErrorCode(404, "QueueNotFound"),
    10105: ErrorCode(400, "FeatureFlagNotSet"),
    10107: ErrorCode(400, "QueueIDMalformed"),
    10202: ErrorCode(400, "BatchDelayInvalid"),
    10203: ErrorCode(400, "MessageMetadataInvalid"),
    10204: ErrorCode(400, "MessageSizeOutOfBounds"),
    10205: ErrorCode(400, "BatchSizeOutOfBounds"),
    10206: ErrorCode(400, "BatchCountOutOfBounds"),
    10207: ErrorCode(400, "JSONRequestBodyInvalid"),
    10208: ErrorCode(400, "JSONRequestBodyMalformed"),
    10250: ErrorCode(429, "QueueOverloaded"),
    10251: ErrorCode(429, "QueueStorageLimitExceeded"),
    10252: ErrorCode(429, "QueueDisabled"),
    15000: ErrorCode(500, "UnknownInternalError"),
}
# Statuses a table code may also be answered with: 401 for a missing token; 409 for a
# conflicting write (the status Cloudflare's Queues docs use for a state conflict).
EXTRA_STATUSES: dict[int, frozenset[int]] = {10000: frozenset({401}), 10207: frozenset({409})}


class CfError(AppError):
    """An error answered as `{"success": false, "errors": [{code, message}], ...}`."""

    code: ClassVar[int] = 15000

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        allowed = {ERROR_CODES[self.code].status, *EXTRA_STATUSES.get(self.code, ())}
        if status is not None and status not in allowed:
            raise ValueError(f"code {self.code} is never answered with {status}")
        super().__init__(message, status=status or ERROR_CODES[self.code].status, headers=headers)


class NoRoute(CfError):
    """An unknown path, a method the path does not take, or a consumer that does not exist."""

    code = 7003


class AuthError(CfError):
    code = 10000


class QueueNotFound(CfError):
    code = 10104


class FeatureNotEnabled(CfError):
    """A feature the account has not enabled (here: a second consumer on a queue)."""

    code = 10105


class QueueIdMalformed(CfError):
    code = 10107


class BatchDelayInvalid(CfError):
    code = 10202


class MessageMetadataInvalid(CfError):
    code = 10203


class MessageTooLarge(CfError):
    code = 10204


class BatchTooLarge(CfError):
    code = 10205


class BatchCountInvalid(CfError):
    code = 10206


class BodyInvalid(CfError):
    """The body does not match the schema: shapes, types, ranges of settings, conflicts."""

    code = 10207


class BodyMalformed(CfError):
    code = 10208


class QueueOverloaded(CfError):
    """Per-queue throughput and the account's API rate limit alike (both 429)."""

    code = 10250


class StorageLimitExceeded(CfError):
    code = 10251


class QueuePaused(CfError):
    """A pull from a paused queue; the message is the documented `queue_delivery_paused`."""

    code = 10252


class InternalError(CfError):
    code = 15000


# One class per row of the table (a test checks that none is missing).
ERROR_CLASSES: dict[int, type[CfError]] = {cls.code: cls for cls in CfError.__subclasses__()}


def from_queue_error(exc: QueueError) -> CfError:
    """The engine's validation errors keep their Cloudflare code, with the table's status."""
    return ERROR_CLASSES.get(exc.code, InternalError)(exc.detail, headers=exc.headers)


def envelope(result: Any, **extra: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


def error_response(error: CfError) -> JSONResponse:
    body = {
        "success": False,
        "errors": [{"code": error.code, "message": error.detail}],
        "messages": [],
        "result": None,
    }
    return JSONResponse(body, status_code=error.status, headers=error.headers)
