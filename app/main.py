"""The gateway application."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.types import Lifespan, Receive, Scope, Send

from app import __version__
from app.admission.admin import router as admission_admin_router
from app.admission.auth_failures import AuthFailureThrottle, FailedAuthThrottle
from app.admission.deps import AdmissionGate
from app.bootstrap import Runtime, build_admission, build_runtime, provide
from app.consumer.service import check_handlers
from app.core.docs import install_docs
from app.core.errors import install_error_handlers
from app.core.middleware import BodyLimit
from app.core.openapi import DEFAULT_SERVER_URL, TAG_METADATA, install_openapi, operation_id
from app.core.storable import reject_unstorable
from app.dashboard.router import router as dashboard_router
from app.handlers.admin import router as handlers_admin_router
from app.jobs.accept import AcceptFastPath
from app.jobs.admin import router as jobs_admin_router
from app.jobs.router import router as jobs_router
from app.observability import tracing
from app.observability.logs import RequestContext
from app.observability.router import router as observability_router
from app.observability.tracing import ServerSpans
from app.queues.admin import router as queues_admin_router
from app.scheduler.router import router as schedules_router
from app.scheduler.runner import SchedulerRunner
from app.settings import Settings, get_settings
from app.tenants.deps import RequireScope, require_operator
from app.tenants.router import router as admin_router
from app.tenants.service import keep_key_cache
from app.webhooks.admin import router as webhooks_admin_router
from app.webhooks.router import router as webhooks_router
from app.webhooks.schemas import (
    PrestaShopEvent,
    PrestaShopPing,
    R2Notification,
    R2NotificationBatch,
    UnsignedPrestaShopEvent,
)

DESCRIPTION = """\
Run background jobs on Cloudflare Queues. Authenticate with `Authorization: Bearer <api key>`.
A `202` means the job is stored durably; errors are `application/problem+json` (RFC 9457).
"""


class Gateway(FastAPI):
    """FastAPI with plain job submissions answered in front of its middleware and router
    (`AcceptFastPath`, set by `create_app`); everything else is FastAPI's."""

    accept: AcceptFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accept = self.accept
        if accept is not None and accept.takes(scope):
            await accept(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def call_full(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The application with all its middleware (what the fast path hands over to)."""
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the gateway. A given `runtime` is used as is (tests); else one is built."""
    settings = settings or (runtime.settings if runtime else get_settings())
    # Fail at start-up, not on the first request, when the configuration is wrong.
    state = runtime or build_runtime(settings)
    check_handlers(settings.consumer, state.topology)
    admission = build_admission(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.admission.start()  # samples queue depth in the background
        keys_stop = asyncio.Event()
        keys_task = asyncio.create_task(
            keep_key_cache(state.credentials.key_cache, state.reader, keys_stop),
            name="api-key-cache",
        )
        relay_task = asyncio.create_task(state.relay.run()) if state.relay else None
        # Every gateway runs a scheduler; fires are claimed, so they never double-fire.
        scheduler = SchedulerRunner(
            state.sessionmaker, state.submitter, admission=app.state.admission, reader=state.reader
        )
        app.state.scheduler = scheduler
        scheduler_task = asyncio.create_task(scheduler.run())
        # What start-up built (modules, models, schemas, table metadata: about 180k objects)
        # lives as long as the gateway: kept out of the collector's full passes, each of
        # which would otherwise stall every request in flight for tens of milliseconds.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            keys_stop.set()
            await keys_task
            scheduler.stop()
            await scheduler_task
            if state.relay is not None and relay_task is not None:
                state.relay.stop()
                await relay_task
                if state.relay.ready:
                    # Publish what is still waiting, without lingering.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(state.relay.relay_once(force=True), timeout=10)
            await app.state.admission.close()
            if runtime is None:
                await state.close()

    app = build_api(lifespan=lifespan, server_url=settings.http.public_url)
    provide(app, state, admission)
    app.add_middleware(BodyLimit, max_bytes=settings.http.max_request_bytes)
    # Outermost: a blocked address is refused before its body or credential is read.
    app.state.auth_failures = AuthFailureThrottle(
        admission.limiter.storage,
        burst=settings.auth_failures.burst,
        window_seconds=settings.auth_failures.window_seconds,
        slack=admission.limiter.reset_slack,
    )
    app.add_middleware(FailedAuthThrottle, throttle=app.state.auth_failures)
    if settings.observability.otel_enabled and not tracing.enabled():
        tracing.enable(service_name="jobgate-gateway")
    app.state.metrics_include_url = settings.observability.metrics_include_url
    # Outermost of all: every response (a refusal too) has a request id and a span.
    app.add_middleware(ServerSpans)
    app.add_middleware(RequestContext)
    app.accept = AcceptFastPath(app, app.call_full, max_body_bytes=settings.http.max_request_bytes)
    return app


def build_api(
    *, lifespan: Lifespan[FastAPI] | None = None, server_url: str = DEFAULT_SERVER_URL
) -> Gateway:
    """The routes, their errors and their documentation, with nothing built behind them.

    `create_app` adds the components and middleware; `jobgate openapi` needs only this, so
    it runs without a database or secrets.
    """
    app = Gateway(
        title="jobgate",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAG_METADATA,
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
        # Strings no database can store are refused on every route, before any handler.
        dependencies=[Depends(reject_unstorable)],
        # Served from vendored assets (`install_docs`), not FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    # Webhook bodies are read raw (signatures first), so their models are added by hand.
    install_openapi(
        app,
        schemas=(
            PrestaShopEvent,
            PrestaShopPing,
            UnsignedPrestaShopEvent,
            R2Notification,
            R2NotificationBatch,
        ),
        # Bearer security and rate-limit headers follow from each route's dependencies.
        authenticators=(RequireScope,),
        rate_limiters=(AdmissionGate,),
        server_url=server_url,
    )
    app.include_router(jobs_router)
    app.include_router(webhooks_router)
    app.include_router(schedules_router)
    # The admin routes of each domain, in the order the API documents them.
    app.include_router(admin_router)
    app.include_router(handlers_admin_router)
    app.include_router(webhooks_admin_router)
    app.include_router(admission_admin_router)
    app.include_router(jobs_admin_router)
    # Operator only; the queues package knows no tenants, so the check is attached here.
    app.include_router(queues_admin_router, dependencies=[Depends(require_operator)])
    app.include_router(observability_router)
    app.include_router(dashboard_router)
    install_docs(app)
    return app
