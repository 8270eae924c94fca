"""OpenTelemetry traces, off by default: accept -> publish -> each attempt of a job.

With `JOBGATE_OTEL_ENABLED=true` a process installs a tracer provider (resource and exporter
from the standard `OTEL_*` variables: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_EXPORTER=otlp|console|none`, `OTEL_EXPORTER_OTLP_*`; the OTLP exporter is the
`otel` extra). The gateway opens a server span per request (its parent: the caller's
`traceparent`), and the job's envelope carries that span's `traceparent`; the outbox relay
opens a publish span, and the consumer a span per attempt, both children of it, so one trace
shows the whole life of a job. Disabled, every function here is a cheap no-op.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

TRACER_NAME = "jobgate"
_propagator = TraceContextTextMapPropagator()
_enabled = False
# The provider spans go to: the one given to `enable` (tests), else the global one.
_provider: Any | None = None


def enabled() -> bool:
    return _enabled


def enable(provider: Any | None = None, *, service_name: str = "jobgate") -> None:
    """Trace from now on: with `provider` (tests give one with an in-memory exporter), else
    a new SDK provider configured from the `OTEL_*` environment."""
    global _enabled, _provider
    if provider is None:
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            log.info("OTEL_SDK_DISABLED=true: tracing stays off")
            return
        trace.set_tracer_provider(_provider_from_env(service_name))
    _provider = provider
    _enabled = True


def disable() -> None:
    global _enabled, _provider
    _enabled = False
    _provider = None


def _provider_from_env(service_name: str) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our default name.
    resource = Resource.create(
        {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    )
    provider = TracerProvider(resource=resource)
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    exporter: Any = None
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning(
                "JOBGATE_OTEL_ENABLED is set but the OTLP exporter is not installed "
                "(pip install 'jobgate[otel]'): spans are not exported"
            )
        else:
            exporter = OTLPSpanExporter()  # endpoint and headers from OTEL_EXPORTER_OTLP_*
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _tracer() -> trace.Tracer:
    if _provider is not None:
        tracer: trace.Tracer = _provider.get_tracer(TRACER_NAME)
        return tracer
    return trace.get_tracer(TRACER_NAME)


def extract(carrier: Mapping[str, Any] | None) -> Context | None:
    """The context of a `{"traceparent": ...}` carrier (None when it holds no valid one)."""
    if not carrier:
        return None
    headers = {k: v for k, v in carrier.items() if isinstance(v, str)}
    context = _propagator.extract(headers)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def current_carrier() -> dict[str, str] | None:
    """`{"traceparent": ...}` of the current span (None when not tracing)."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier or None


def job_trace(incoming_traceparent: str | None) -> dict[str, str] | None:
    """What a new job's envelope carries as `trace`: the gateway's current span while
    tracing, else the caller's `traceparent` as it came (for a tracer further down)."""
    return current_carrier() or (
        {"traceparent": incoming_traceparent} if incoming_traceparent else None
    )


@contextmanager
def span(
    name: str,
    *,
    parent: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span | None]:
    """A span named `name`, child of the `parent` carrier (else of the current span);
    yields None and does nothing when tracing is off."""
    if not _enabled:
        yield None
        return
    context = extract(parent) if parent is not None else None
    with _tracer().start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
    ) as current:
        yield current


def mark_error(current: Span | None, description: str) -> None:
    if current is not None:
        current.set_status(Status(StatusCode.ERROR, description))


class ServerSpans:
    """ASGI middleware: a SERVER span per HTTP request while tracing (parent: the request's
    `traceparent`), named after the matched route, with the response status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _enabled:
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", [])
            if name in (b"traceparent", b"tracestate")
        }
        method = scope.get("method", "GET")
        with _tracer().start_as_current_span(
            f"{method} {scope.get('path', '')}",
            context=_propagator.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        ) as current:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        current.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template:
                    current.update_name(f"{method} {template}")
                    current.set_attribute("http.route", template)


def published(queue: str, bodies: list[str], *, started_ns: int) -> None:
    """A PRODUCER span per published message, child of its job's accept span (the envelope's
    `trace`), from `started_ns` to now: the publish call the message went out in."""
    ended_ns = time.time_ns()
    tracer = _tracer()
    for body in bodies:
        try:
            envelope = json.loads(body)
        except ValueError:
            continue
        carrier = envelope.get("trace") if isinstance(envelope, dict) else None
        context = extract(carrier) if isinstance(carrier, dict) else None
        if context is None:
            continue
        publish = tracer.start_span(
            f"publish {queue}",
            context=context,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.destination.name": queue,
                "jobgate.job_id": str(envelope.get("job_id", "")),
            },
            start_time=started_ns,
        )
        publish.end(end_time=ended_ns)
