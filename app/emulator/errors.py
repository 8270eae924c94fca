"""Cloudflare API errors, rendered in the v4 envelope.

Documented codes (docs/cloudflare-queues.md, "Error codes"): 10000 auth, 7003 no route,
10104 queue not found, 10107 malformed queue id, 10202-10208 validation, 10250-10252
throughput / storage / paused, 971 global rate limit, 15000 internal, 100127 / 100128
consumer / queue settings.
Where Cloudflare's code is unknown the emulator picks one and says so below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from app.core.errors import AppError
from app.queues.errors import QueueError


class CfError(AppError):
    """An error answered as `{"success": false, "errors": [{code, message}], ...}`."""

    code: int = 15000

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, headers=headers)
        if code is not None:
            self.code = code


class AuthError(CfError):
    status, code = 403, 10000


class NoRoute(CfError):
    status, code = 404, 7003


class MethodNotAllowed(CfError):
    """Our choice."""

    status, code = 405, 7001


class QueueNotFound(CfError):
    status, code = 404, 10104


class QueueIdMalformed(CfError):
    status, code = 400, 10107


class BatchDelayInvalid(CfError):
    status, code = 400, 10202


class MessageMetadataInvalid(CfError):
    status, code = 400, 10203


class BatchCountInvalid(CfError):
    status, code = 400, 10206


class BodyInvalid(CfError):
    status, code = 400, 10207


class BodyMalformed(CfError):
    status, code = 400, 10208


class QueueOverloaded(CfError):
    status, code = 429, 10250


class StorageLimitExceeded(CfError):
    status, code = 429, 10251


class QueuePaused(CfError):
    """The status and message are documented; the code is our choice."""

    status, code = 409, 10252


class GlobalRateLimited(CfError):
    status, code = 429, 971


class InternalError(CfError):
    status, code = 500, 15000


class ConsumerSettingsInvalid(CfError):
    status, code = 400, 100127


class QueueSettingsInvalid(CfError):
    status, code = 400, 100128


# Not documented by Cloudflare: the emulator's choices (docs/cloudflare-queues.md).


class QueueNameTaken(CfError):
    status, code = 409, 11009


class ConsumerExists(CfError):
    status, code = 409, 100127


class ConsumerNotFound(CfError):
    status, code = 404, 11004


class NoPullConsumer(CfError):
    """Pull without an http_pull consumer; the status is JOBGATE_EMULATOR_NO_CONSUMER_STATUS."""

    status, code = 405, 11006


def from_queue_error(exc: QueueError) -> CfError:
    """The engine's validation errors keep their Cloudflare code; the status is 400, as for
    every validation error the emulator answers (Cloudflare documents no status)."""
    status = 400 if exc.status in (400, 413) else exc.status
    return CfError(exc.detail, status=status, code=exc.code, headers=exc.headers)


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
