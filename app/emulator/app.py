"""The emulator application: `jobgate emulator` serves it with uvicorn.

Every response under `/client/v4` is a Cloudflare v4 envelope, errors included: an unknown
path or method is 404 code 7003, an unexpected failure 500 code 15000. `GET /healthz`
answers when the registry is loaded; `/_emulator/*` exists only with test controls on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.core.db import create_engine, create_sessionmaker
from app.emulator import controls
from app.emulator.config import EmulatorAppSettings, EmulatorConfig, OffsetClock
from app.emulator.errors import (
    BodyInvalid,
    CfError,
    InternalError,
    NoRoute,
    QueueOverloaded,
    error_response,
    from_queue_error,
)
from app.emulator.router import router
from app.emulator.service import EmulatorService
from app.emulator.throttle import FaultPlan
from app.queues.errors import QueueError

logger = logging.getLogger(__name__)

API_PREFIX = "/client/v4"


class FaultInjector:
    """Answers scheduled faults in place of (or after) Cloudflare API calls."""

    def __init__(self, app: ASGIApp, *, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        fault = self.plan.take(path) if path.startswith(API_PREFIX) else None
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.after:

            async def discard(_message: object) -> None:
                return None

            await self.app(scope, receive, discard)  # the call takes effect, its answer is lost
        if fault.kind == "drop":
            # Headers promising a body that never comes: uvicorn closes the connection.
            headers = [(b"content-length", b"64")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            return
        error: CfError
        if fault.kind == "rate_limit":
            error = QueueOverloaded(
                "rate limited (injected fault)", headers={"Retry-After": str(fault.retry_after)}
            )
        else:
            error = InternalError("internal error (injected fault)")
        await error_response(error)(scope, receive, send)


class StripTrailingSlash:
    """`/queues/` is `/queues`: clients that join paths naively must not get redirects."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(API_PREFIX) and len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_cf_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CfError)
        return error_response(exc)

    async def on_queue_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QueueError)
        return error_response(from_queue_error(exc))

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code in (404, 405):  # no route for this path, or for this method
            return error_response(NoRoute("No route for the URI"))
        if exc.status_code < 500:
            return error_response(BodyInvalid(str(exc.detail)))
        return error_response(InternalError(str(exc.detail)))

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(BodyInvalid(str(exc)))

    async def on_unexpected(request: Request, _exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(InternalError("Internal server error"))

    app.add_exception_handler(CfError, on_cf_error)
    app.add_exception_handler(QueueError, on_queue_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def create_app(settings: EmulatorAppSettings | None = None) -> FastAPI:
    """Build the emulator; refuses to start without a token to accept.

    Without `settings` (uvicorn's factory call, in the emulator's own process) they are read
    from the environment here, the process's entry point.
    """
    settings = settings or EmulatorAppSettings()
    if not settings.cloudflare.api_token:
        raise ValueError("set JOBGATE_CF_API_TOKEN: the emulator accepts exactly that token")
    config = EmulatorConfig.from_settings(settings.emulator)
    faults = FaultPlan(config)
    db_engine = create_engine(settings.db)
    service = EmulatorService(create_sessionmaker(db_engine), config=config, clock=OffsetClock())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.load()
        try:
            yield
        finally:
            await db_engine.dispose()

    app = FastAPI(
        title="jobgate Cloudflare Queues emulator",
        version=__version__,
        lifespan=lifespan,
        docs_url="/_emulator/docs" if settings.emulator.test_controls else None,
        redoc_url=None,
        openapi_url="/_emulator/openapi.json" if settings.emulator.test_controls else None,
    )
    app.state.settings = settings
    app.state.emulator = service
    app.state.faults = faults
    app.add_middleware(FaultInjector, plan=faults)
    app.add_middleware(StripTrailingSlash)
    _install_error_handlers(app)
    app.include_router(router)
    if settings.emulator.test_controls:
        app.include_router(controls.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
