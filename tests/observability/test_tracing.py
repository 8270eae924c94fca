"""One trace from the request that created a job to each of its attempts, recorded with the
OpenTelemetry SDK's in-memory exporter.

The gateway runs in-process with the Cloudflare backend's wiring (jobs go through the
outbox); a relay publishes the outbox to the local engine, and a consumer runs the job: its
first attempt fails and is retried, the second succeeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import build_runtime
from app.consumer.process import Consumer
from app.consumer.registry import HandlerRegistry, JobContext, RetryLater
from app.core.clock import ManualClock
from app.jobs.dispatchers import OutboxDispatcher
from app.jobs.payloads import AnalyticsEventPayload
from app.main import create_app
from app.observability import tracing
from app.settings import Settings
from tests.consumer.conftest import QUEUE, write_topology
from tests.consumer.e2e_handlers import register as register_others
from tests.factories import TenantFactory, auth
from tests.outbox.conftest import make_relay
from tests.support.asgi import asgi_client
from tests.support.resources import resources_from_runtime

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


def _registry() -> HandlerRegistry:
    async def flaky(ctx: JobContext[AnalyticsEventPayload]) -> None:
        if ctx.attempt == 1:
            raise RetryLater(0, "downstream busy")

    registry = HandlerRegistry()
    registry.handler("analytics-event", AnalyticsEventPayload)(flaky)
    others = HandlerRegistry()
    register_others(others)
    for spec in others.specs:
        if spec.job_type != "analytics-event":
            registry.register(spec)
    return registry


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


@pytest.mark.asyncio
async def test_one_trace_runs_from_accept_to_publish_to_each_attempt(
    settings: Settings,
    clock: ManualClock,
    db_engine: AsyncEngine,
    tmp_path: Path,
    exporter: InMemorySpanExporter,
) -> None:
    topology = write_topology(
        tmp_path / "wrangler.jsonc",
        {"max_batch_size": 10, "max_batch_timeout": 0, "max_retries": 3, "retry_delay": 0},
    )
    # The Cloudflare wiring (outbox dispatcher) on an unreachable API: the test's own relay
    # publishes the outbox to the local engine instead.
    runtime = build_runtime(
        settings.updated(
            queues={"backend": "cloudflare", "wrangler_config": topology},
            cloudflare={"api_token": "token", "api_base_url": "http://127.0.0.1:9/client/v4"},
        ),
        clock=clock,
        engine=db_engine,
    )
    assert isinstance(runtime.dispatcher, OutboxDispatcher)
    tenant = await TenantFactory(runtime).create()
    relay = make_relay(runtime, runtime.queue_engine, clock, linger_ms=0)
    async with asgi_client(create_app(runtime=runtime)) as client:
        response = await client.post(
            "/v1/jobs",
            json={"type": "analytics-event", "name": "traced"},
            headers={**auth(tenant.api_key), "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert await relay.relay_once(force=True) == 1
        consumer = Consumer(
            runtime.queue_engine,
            topology=runtime.topology,
            registry=_registry(),
            resources=resources_from_runtime(runtime, http=client),
            queues=[QUEUE],
        )
        first = await consumer.run_once()
        second = await consumer.run_once()
    await runtime.backend.close()
    await runtime.committer.close()  # its writer's connection
    assert first.counts["retry"] == 1
    assert second.counts["succeeded"] == 1

    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    accept = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /v1/jobs"]
    publish = [s for s in spans if s.kind is SpanKind.PRODUCER]
    attempts = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert len(accept) == 1
    assert len(publish) == 1
    assert len(attempts) == 2
    # One trace: the caller's, carried from the request through the envelope.
    for span in [*accept, *publish, *attempts]:
        assert span.context is not None
        assert _hex(span.context.trace_id, 32) == TRACE_ID, span.name
    [server] = accept
    assert server.parent is not None
    assert _hex(server.parent.span_id, 16) == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 202
    assert server.context is not None
    for span in [*publish, *attempts]:
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id, span.name
    assert publish[0].name == f"publish {QUEUE}"
    attempts.sort(key=lambda s: s.start_time or 0)
    numbers = [(s.attributes or {}).get("jobgate.attempt") for s in attempts]
    outcomes = [(s.attributes or {}).get("jobgate.outcome") for s in attempts]
    assert numbers == [1, 2]
    assert outcomes == ["retry", "succeeded"]
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].status.status_code is not StatusCode.ERROR
    assert all((s.attributes or {}).get("jobgate.job_id") == job_id for s in attempts)


@pytest.mark.asyncio
async def test_tracing_off_passes_the_callers_traceparent_on_unchanged(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> None:
    assert not tracing.enabled()
    runtime = build_runtime(settings, clock=clock, engine=db_engine)
    tenant = await TenantFactory(runtime).create()
    traceparent = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
    async with asgi_client(create_app(runtime=runtime)) as client:
        response = await client.post(
            "/v1/jobs",
            json={"type": "analytics-event", "name": "untraced"},
            headers={**auth(tenant.api_key), "traceparent": traceparent},
        )
    assert response.status_code == 202
    pulled = await runtime.queue_engine.pull(QUEUE, batch_size=10)
    await runtime.queue_engine.close()
    await runtime.committer.close()  # its writer's connection
    # For a tracer further down (the caller's, or a consumer that traces).
    assert [m.body["trace"] for m in pulled.messages] == [{"traceparent": traceparent}]


def test_the_provider_follows_the_standard_otel_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = tracing._provider_from_env("jobgate-consumer")
    assert provider.resource.attributes["service.name"] == "jobgate-consumer"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-jobs")
    provider = tracing._provider_from_env("jobgate-consumer")
    assert provider.resource.attributes["service.name"] == "shop-jobs"


def test_otel_sdk_disabled_keeps_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracing.enable(service_name="jobgate-gateway")
    assert not tracing.enabled()
    assert tracing.current_carrier() is None
