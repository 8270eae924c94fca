"""Wiring a consumer process: handlers from modules, shared resources, signals."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import httpx

from app.consumer.config import ConsumerSettings
from app.consumer.monitoring import Monitor, serve_metrics
from app.consumer.process import Consumer
from app.consumer.registry import HandlerRegistry, Resources
from app.consumer.registry import registry as global_registry
from app.consumer.wiring import check_job_types
from app.core.clock import Clock
from app.core.db import SessionMaker
from app.core.security import SecretBox
from app.queues.base import QueueBackend
from app.queues.topology import Topology

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger("jobgate.consumer")

RegisterHook = Callable[[HandlerRegistry], None]


class ConsumerParts(Protocol):
    """What a consumer process uses of the composition root (`app.bootstrap.Runtime`)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def sessionmaker(self) -> SessionMaker: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def box(self) -> SecretBox: ...
    @property
    def backend(self) -> QueueBackend: ...
    @property
    def topology(self) -> Topology: ...

    async def open(self) -> None: ...


# The idle consumer's longest wait between pulls when JOBGATE_CONSUMER_POLL_MAX_MS is not set,
# i.e. how late new work is noticed after a quiet spell (polling starts again at the minimum
# after every batch). On the local engine an empty pull is one short transaction (~3 ms of
# CPU, briefly holding SQLite's write lock): 1 s costs ~0.3% of a core per consumed queue.
# On Cloudflare every pull is an API call, rate-limited account-wide (1,200 per 5 minutes):
# 2 s is already 150 calls per 5 minutes per consumed queue when idle.
IDLE_POLL_MAX_MS = {"local": 1_000, "cloudflare": 2_000}


def idle_poll_max_ms(settings: ConsumerSettings, backend: str) -> int:
    """JOBGATE_CONSUMER_POLL_MAX_MS when set, else the queue `backend`'s default."""
    if settings.poll_max_ms is not None:
        return settings.poll_max_ms
    return IDLE_POLL_MAX_MS[backend]


def load_handlers(modules: Sequence[str]) -> HandlerRegistry:
    """A fresh registry with the handlers of `modules`.

    A module either defines `register(registry)` (tests use this to bring their own
    handlers, so nothing is registered twice on the process-wide registry) or registers on
    the process-wide registry with `@handler` when imported; those defined under a listed
    module are copied in. A job type registered twice is an error.
    """
    fresh = HandlerRegistry()
    hooks: list[RegisterHook] = []
    for name in modules:
        module = importlib.import_module(name)
        hook = getattr(module, "register", None)
        if callable(hook):
            hooks.append(hook)
    for hook in hooks:
        hook(fresh)
    prefixes = tuple(modules)
    for job_type in sorted(global_registry.types):
        spec = global_registry.get(job_type)
        # Only handlers defined under a listed module (importing `app.models` elsewhere may
        # have registered others on the process-wide registry).
        if spec is None or not _defined_under(spec.func.__module__, prefixes):
            continue
        fresh.register(spec)
    return fresh


def check_handlers(settings: ConsumerSettings, topology: Topology) -> None:
    """The gateway's start-up check: each job type it accepts has a handler in
    JOBGATE_HANDLER_MODULES (bound to its model), and no handler names an unknown type."""
    check_job_types(topology, load_handlers(handler_modules(settings.handler_modules)))


def _defined_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def handler_modules(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def build_consumer(
    runtime: ConsumerParts,
    *,
    http: httpx.AsyncClient,
    queues: Sequence[str] | None = None,
    registry: HandlerRegistry | None = None,
) -> Consumer:
    """A consumer on the runtime's queue backend (local engine or Cloudflare)."""
    settings = runtime.settings
    resources = Resources(
        settings=settings,
        sessionmaker=runtime.sessionmaker,
        http=http,
        box=runtime.box,
        clock=runtime.clock,
    )
    return Consumer(
        runtime.backend,
        topology=runtime.topology,
        registry=registry or load_handlers(handler_modules(settings.consumer.handler_modules)),
        resources=resources,
        queues=queues,
        poll_max_ms=idle_poll_max_ms(settings.consumer, settings.queues.backend),
    )


async def serve(runtime: ConsumerParts, *, queues: Sequence[str] | None = None) -> None:
    """Consume until SIGTERM or SIGINT, then stop cleanly (nothing is lost)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.open()
    settings = runtime.settings
    port = settings.observability.consumer_metrics_port
    metrics_server = serve_metrics(settings.http.host, port) if port else None
    if metrics_server is None:
        log.info("metrics are not served: set JOBGATE_CONSUMER_METRICS_PORT to scrape them")
    async with httpx.AsyncClient(timeout=60.0) as http:
        consumer = build_consumer(runtime, http=http, queues=queues)
        monitor = Monitor(
            runtime.backend,
            topology=runtime.topology,
            queues=consumer.queues,
            sessionmaker=runtime.sessionmaker,
            clock=runtime.clock,
            interval_seconds=settings.observability.metrics_sample_seconds,
        )
        sampler = asyncio.create_task(monitor.run(stop))
        log.info("consuming %s", ", ".join(consumer.queues))
        try:
            await consumer.run(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            stop.set()
            await sampler
            if metrics_server is not None:
                metrics_server.shutdown()
    log.info("consumer stopped")
