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
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
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


def printable(text: str) -> str:
    """`text` safe to echo in a response or a log (NUL and lone surrogates escaped)."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def _field_errors(raw: Sequence[Any]) -> list[FieldError]:
    errors = []
    for item in raw:
        # A loc can hold a client's dict key, which JSON output must be able to encode.
        loc = [
            printable(part) if isinstance(part, str) else part
            for part in item.get("loc", ())
            if isinstance(part, str | int)
        ]
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


UPGRADE_HINT = "the database schema is missing or outdated: run `jobgate db upgrade`"
# PostgreSQL SQLSTATEs of a missing schema: undefined table, column, schema.
_PG_SCHEMA_MISSING = frozenset({"42P01", "42703", "3F000"})
# Connection exception, insufficient resources, operator intervention (shutdown, restart).
_PG_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})
# Serialization failure and deadlock: retrying the request is the remedy.
_PG_RETRYABLE = frozenset({"40001", "40P01"})
_SQLITE_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_NOMEM",
    "SQLITE_PROTOCOL",
)


def _unavailable(detail: str = "the job store is unavailable") -> ServiceUnavailable:
    return ServiceUnavailable(detail, headers={"Retry-After": "5"})


def _conflict() -> Conflict:
    return Conflict("the request conflicts with stored data; retry it if it still applies")


def _refused_value() -> ValidationFailed:
    return ValidationFailed("a value in the request cannot be stored")


def is_transient_conflict(exc: BaseException) -> bool:
    """A PostgreSQL deadlock or serialization failure: the transaction was rolled back whole
    and running it again is expected to succeed."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return getattr(orig, "sqlstate", None) in _PG_RETRYABLE


def database_problem(exc: BaseException) -> AppError | None:
    """The answer for a database failure, or None when it is a bug (a plain 500).

    Only the store being unreachable, overloaded, locked or not migrated is a 503: a
    value the store refuses (data exception, constraint violation) is the request's fault
    (422, 409) or ours, and never a 503 that would make the client retry it forever.
    """
    if isinstance(exc, FileNotFoundError):
        return _unavailable(UPGRADE_HINT)
    if isinstance(exc, PoolTimeout | OSError):  # OSError: refused, reset, timed out
        return _unavailable()
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return _unavailable()
    orig = exc.orig
    code = getattr(orig, "sqlstate", None)
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    message = str(orig)
    if (
        code in _PG_SCHEMA_MISSING
        or message.startswith(("no such table", "no such column"))
        or sqlite_name == "SQLITE_CANTOPEN"
    ):
        return _unavailable(UPGRADE_HINT)
    if isinstance(code, str):
        if code[:2] in _PG_UNAVAILABLE_CLASSES or code in _PG_RETRYABLE:
            return _unavailable()
        if code.startswith("22"):
            return _refused_value()
        if code.startswith("23"):
            return _conflict()
        return None
    if isinstance(sqlite_name, str):
        if sqlite_name.startswith(_SQLITE_UNAVAILABLE):
            return _unavailable()
        if sqlite_name.startswith("SQLITE_CONSTRAINT"):
            return _conflict()
        if sqlite_name in ("SQLITE_TOOBIG", "SQLITE_MISMATCH"):
            return _refused_value()
        return None
    if isinstance(exc, IntegrityError):
        return _conflict()
    if isinstance(exc, DataError):
        return _refused_value()
    if isinstance(exc, OperationalError):
        return _unavailable()
    return None


def describe_database_error(exc: BaseException) -> str:
    """The class and code of a database error, never its text (it can quote values)."""
    if not isinstance(exc, DBAPIError):
        return f"{type(exc).__name__}: {exc}"
    orig = exc.orig if exc.orig is not None else exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    return f"{type(orig).__name__}" + (f" ({code})" if code else "")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods of the routes on this request's path, OPTIONS included.

    A literal path (`/v1/jobs/batch`) names only its own routes' methods, not those of a
    templated one it also matches (`/v1/jobs/{job_id}`): what the API document says of it.
    """
    path = request.scope["path"]
    matching = [
        route
        for route in iter_route_contexts(request.app.router.routes)
        if getattr(route, "methods", None) and route.path_regex.match(path)
    ]
    literal = [route for route in matching if route.path_format == path]
    methods = {method for route in literal or matching for method in route.methods or ()}
    return ["OPTIONS", *(method for method in _METHODS if method in methods)]


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return problem_response(exc, request)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_error(exc.errors()), request)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on the path: list them all.
            allow = ", ".join(allowed_methods(request))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": allow})
            exc.headers = {**(exc.headers or {}), "Allow": allow}
        cls = _STATUS_CLASSES.get(exc.status_code)
        if cls is None:
            error = AppError(str(exc.detail), headers=exc.headers, status=exc.status_code)
        else:
            error = cls(str(exc.detail), headers=exc.headers)
        return problem_response(error, request)

    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        error = database_problem(exc)
        if error is None:
            return await on_unexpected(request, exc)
        where = f"{request.method} {request.url.path}"
        if error.status == 503:
            # The store is down, locked or not migrated: nothing was accepted.
            logger.error("database unavailable on %s: %s", where, describe_database_error(exc))
        else:
            # A value validation let through: worth fixing, so logged as an error.
            logger.error("database refused a value on %s: %s", where, describe_database_error(exc))
        return problem_response(error, request)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The engine hides SQL parameters, so a traceback carries no payload.
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(InternalError("an unexpected error occurred"), request)

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(PoolTimeout, on_database_error)
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
