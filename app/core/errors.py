"""One error hierarchy, rendered as RFC 9457 problem+json by one set of handlers.

AppError
 ├── BadRequest (400)            ├── Conflict (409)
 ├── Unauthorized (401)          ├── PayloadTooLarge (413)
 ├── Forbidden (403)             ├── UnsupportedMediaType (415)
 ├── NotFound (404)              ├── ValidationFailed (422)
 ├── TooManyRequests (429)       └── ServiceUnavailable (503)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://jobgate.dev/problems/"


class FieldError(BaseModel):
    """One invalid field: where it is (`loc`) and what is wrong with it."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=[f"{TYPE_BASE}not-found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["job 0193... does not exist"])
    instance: str | None = None
    errors: list[FieldError] | None = None


class AppError(Exception):
    status: int = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[FieldError] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        if status is not None:
            self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors else None

    def to_problem(self, instance: str | None = None) -> Problem:
        return Problem(
            type=TYPE_BASE + self.slug,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
        )


class BadRequest(AppError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(AppError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str, *, scheme: str = "Bearer") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": scheme})


class Forbidden(AppError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(AppError):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(AppError):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(AppError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class ValidationFailed(AppError):
    status, title, slug = 422, "Unprocessable Content", "validation-failed"


class TooManyRequests(AppError):
    status, title, slug = 429, "Too Many Requests", "rate-limited"


class ServiceUnavailable(AppError):
    status, title, slug = 503, "Service Unavailable", "unavailable"


class InternalError(AppError):
    """Never raised on purpose: what an unexpected exception is rendered as."""


_STATUS_CLASSES: dict[int, type[AppError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        TooManyRequests,
        ServiceUnavailable,
    )
}


def problem_response(error: AppError, request: Request | None = None) -> JSONResponse:
    problem = error.to_problem(instance=request.url.path if request is not None else None)
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=error.status,
        headers=error.headers,
        media_type=PROBLEM_JSON,
    )


def _field_errors(raw: Sequence[Any]) -> list[FieldError]:
    errors = []
    for item in raw:
        loc = [part for part in item.get("loc", ()) if isinstance(part, str | int)]
        if item.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("type")  # the discriminator is the field at fault
        errors.append(FieldError(loc=loc, msg=str(item.get("msg", "")), type=item.get("type", "")))
    return errors


def validation_error(raw: Sequence[Any]) -> AppError:
    """Map pydantic errors to 400 (not JSON at all) or 422 naming each bad field."""
    if any(item.get("type") == "json_invalid" for item in raw):
        return BadRequest("request body is not valid JSON")
    errors = _field_errors(raw)
    names = ", ".join(".".join(str(p) for p in e.loc if p != "body") or "body" for e in errors)
    return ValidationFailed(f"invalid fields: {names}", errors=errors)


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return problem_response(exc, request)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_error(exc.errors()), request)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        cls = _STATUS_CLASSES.get(exc.status_code)
        if cls is None:
            error = AppError(str(exc.detail), headers=exc.headers, status=exc.status_code)
        else:
            error = cls(str(exc.detail), headers=exc.headers)
        return problem_response(error, request)

    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        # The store is down or locked: the client should retry, nothing was accepted.
        logger.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        error = ServiceUnavailable("the job store is unavailable", headers={"Retry-After": "5"})
        return problem_response(error, request)

    async def on_unexpected(request: Request, _exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(InternalError("an unexpected error occurred"), request)

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(OperationalError, on_database_error)
    app.add_exception_handler(InterfaceError, on_database_error)
    app.add_exception_handler(OSError, on_database_error)
    app.add_exception_handler(Exception, on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring problem+json for each status."""
    descriptions = {status: cls.title for status, cls in _STATUS_CLASSES.items()}
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, "Error"),
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }
