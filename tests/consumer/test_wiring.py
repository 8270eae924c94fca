"""The start-up check: job models, topology routes and handlers name the same job types.

A consumer refuses to start on a mismatch (for the queues it consumes), and so does the
gateway (for every queue, with the handlers of JOBGATE_HANDLER_MODULES)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from app.bootstrap import Runtime
from app.consumer.process import Consumer
from app.consumer.registry import HandlerRegistry, JobContext, Resources
from app.consumer.service import check_handlers, load_handlers
from app.consumer.wiring import JobTypeMismatch, check_job_types, job_type_problems
from app.core.config import REPO_ROOT
from app.jobs.payloads import JOB_PAYLOADS, AnalyticsEventPayload, SyncOrdersPayload
from app.main import create_app
from app.queues.topology import Topology, load_topology
from app.settings import Settings

SHIPPED = REPO_ROOT / "wrangler.jsonc"


class VideoPayload(BaseModel):
    url: str


async def nothing(ctx: JobContext[BaseModel]) -> None:
    del ctx


def registry_for(types_and_models: dict[str, type[BaseModel]]) -> HandlerRegistry:
    registry = HandlerRegistry()
    for job_type, model in types_and_models.items():
        registry.handler(job_type, model)(nothing)
    return registry


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(SHIPPED, job_types=frozenset(JOB_PAYLOADS))


def problems(
    topology: Topology,
    registry: HandlerRegistry,
    *,
    models: dict[str, type[BaseModel]] = JOB_PAYLOADS,
    routes: dict[str, str] | None = None,
    queues: list[str] | None = None,
) -> list[str]:
    return job_type_problems(
        models=models,
        routes=topology.routes if routes is None else routes,
        registry=registry,
        queues=queues,
    )


def test_the_shipped_handlers_models_and_routes_agree(topology: Topology) -> None:
    check_job_types(topology, load_handlers(["app.handlers"]))


def test_a_routed_job_type_without_a_handler_is_named(topology: Topology) -> None:
    registry = registry_for({t: m for t, m in JOB_PAYLOADS.items() if t != "sync-orders"})
    assert problems(topology, registry) == [
        "job type 'sync-orders' (queue 'prestashop-sync') has no handler"
    ]


def test_a_handler_for_an_unknown_job_type_is_named(topology: Topology) -> None:
    registry = registry_for({**JOB_PAYLOADS, "resize-video": VideoPayload})
    [problem] = problems(topology, registry)
    assert problem == (
        "a handler (tests.consumer.test_wiring.nothing) is registered for job type "
        "'resize-video', which has no model"
    )


def test_a_model_without_a_route_is_named(topology: Topology) -> None:
    models = {**JOB_PAYLOADS, "resize-video": VideoPayload}
    registry = registry_for(models)
    assert problems(topology, registry, models=models) == [
        "job type 'resize-video' has a model (VideoPayload) but no queue in jobgate.routes"
    ]


def test_a_route_without_a_model_is_named(topology: Topology) -> None:
    routes = {**topology.routes, "resize-video": "image-processing"}
    assert problems(topology, registry_for(JOB_PAYLOADS), routes=routes) == [
        "jobgate.routes names job type 'resize-video', which has no model"
    ]


def test_a_handler_bound_to_another_model_is_named(topology: Topology) -> None:
    registry = registry_for({**JOB_PAYLOADS, "sync-orders": AnalyticsEventPayload})
    assert problems(topology, registry) == [
        "the handler for job type 'sync-orders' takes AnalyticsEventPayload, "
        "but its model is SyncOrdersPayload"
    ]


def test_only_the_consumed_queues_need_handlers(topology: Topology) -> None:
    registry = registry_for({"analytics-event": AnalyticsEventPayload})
    assert problems(topology, registry, queues=["analytics-events"]) == []
    missing = problems(topology, registry, queues=["analytics-events", "prestashop-sync"])
    assert missing == [
        "job type 'sync-orders' (queue 'prestashop-sync') has no handler",
        "job type 'sync-products' (queue 'prestashop-sync') has no handler",
        "job type 'sync-single-order' (queue 'prestashop-sync') has no handler",
    ]


def test_every_mismatch_is_named_in_one_error(topology: Topology) -> None:
    registry = registry_for({"sync-orders": SyncOrdersPayload, "resize-video": VideoPayload})
    with pytest.raises(JobTypeMismatch) as raised:
        check_job_types(topology, registry)
    message = str(raised.value)
    assert message.startswith("job models, queue routes and handlers disagree: ")
    for named in ("'resize-video'", "'send-email'", "'agent-task'", "'process-image'"):
        assert named in message
    assert "'sync-orders'" not in message


# -- where the check runs --------------------------------------------------------------------


def test_a_consumer_refuses_to_start(runtime: Runtime) -> None:
    registry = registry_for({"analytics-event": AnalyticsEventPayload})
    resources = Resources(
        settings=runtime.settings,
        sessionmaker=runtime.sessionmaker,
        http=None,  # type: ignore[arg-type]  # no handler runs here
        box=runtime.box,
        clock=runtime.clock,
    )

    def consumer(queues: list[str] | None) -> Consumer:
        return Consumer(
            runtime.backend,
            topology=runtime.topology,
            registry=registry,
            resources=resources,
            queues=queues,
        )

    with pytest.raises(JobTypeMismatch, match="'agent-task' \\(queue 'ai-agent-tasks'\\)"):
        consumer(None)  # every queue
    with pytest.raises(JobTypeMismatch, match="'send-email' \\(queue 'email-sending'\\)"):
        consumer(["analytics-events", "email-sending"])
    assert consumer(["analytics-events"]).queues == ["analytics-events"]


RegisterHook = Callable[[HandlerRegistry], None]


@pytest.fixture
def handler_module(monkeypatch: pytest.MonkeyPatch) -> Callable[[RegisterHook], str]:
    """A handler module (by name, for JOBGATE_HANDLER_MODULES) with the given `register`."""

    def make(register: RegisterHook) -> str:
        name = "jobgate_test_wiring_handlers"
        module = types.ModuleType(name)
        module.register = register  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, module)
        return name

    return make


def test_the_gateway_refuses_to_start(
    settings: Settings, runtime: Runtime, handler_module: Callable[[RegisterHook], str]
) -> None:
    def register(registry: HandlerRegistry) -> None:
        registry.handler("analytics-event", AnalyticsEventPayload)(nothing)
        registry.handler("resize-video", VideoPayload)(nothing)

    partial = settings.updated(consumer={"handler_modules": handler_module(register)})
    with pytest.raises(JobTypeMismatch) as raised:
        create_app(partial, runtime=runtime)
    message = str(raised.value)
    assert "job type 'sync-orders' (queue 'prestashop-sync') has no handler" in message
    assert "registered for job type 'resize-video', which has no model" in message
    # The same settings with the company's handlers start.
    check_handlers(settings.consumer, runtime.topology)
    create_app(settings, runtime=runtime)
