"""The gateway application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.core.config import Settings, get_settings
from app.core.errors import install_error_handlers
from app.core.middleware import BodyLimit
from app.core.openapi import TAG_METADATA, install_openapi, operation_id
from app.core.runtime import Runtime, build_runtime
from app.jobs.router import router as jobs_router
from app.observability.router import router as observability_router

DESCRIPTION = """\
Run background jobs on Cloudflare Queues. Authenticate with `Authorization: Bearer <api key>`.
A `202` means the job is stored durably; errors are `application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the gateway. A given `runtime` is used as is (tests); else one is built."""
    settings = settings or (runtime.settings if runtime else get_settings())
    # Fail at start-up, not on the first request, when the configuration is wrong.
    state = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = state
        try:
            yield
        finally:
            if runtime is None:
                await state.close()

    app = FastAPI(
        title="jobgate",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAG_METADATA,
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
    )
    app.state.runtime = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(jobs_router)
    app.include_router(observability_router)
    return app
