"""Lease length on a backend that cannot extend leases (Cloudflare documents no such call)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from app.bootstrap import Runtime
from app.consumer.leases import LEASE_MARGIN_MS
from app.consumer.process import Consumer
from app.consumer.service import handler_modules, load_handlers
from app.core.clock import ManualClock
from app.queues.base import (
    AckResult,
    OutgoingMessage,
    PullResult,
    QueueBackend,
    QueueMetrics,
    RetryRequest,
)
from app.queues.local import LocalQueueEngine
from tests.support.resources import resources_from_runtime

pytestmark = pytest.mark.asyncio


class WithoutLeaseExtension:
    """The local engine seen through the bare `QueueBackend` protocol, as Cloudflare is."""

    def __init__(self, engine: LocalQueueEngine) -> None:
        self._engine = engine

    async def send(self, queue: str, message: OutgoingMessage) -> QueueMetrics:
        return await self._engine.send(queue, message)

    async def send_batch(
        self, queue: str, messages: Sequence[OutgoingMessage], *, delay_seconds: int | None = None
    ) -> QueueMetrics:
        return await self._engine.send_batch(queue, messages, delay_seconds=delay_seconds)

    async def pull(
        self, queue: str, *, batch_size: int = 5, visibility_timeout_ms: int = 30_000
    ) -> PullResult:
        return await self._engine.pull(
            queue, batch_size=batch_size, visibility_timeout_ms=visibility_timeout_ms
        )

    async def ack(
        self, queue: str, *, acks: Sequence[str] = (), retries: Sequence[RetryRequest] = ()
    ) -> AckResult:
        return await self._engine.ack(queue, acks=acks, retries=retries)

    async def metrics(self, queue: str) -> QueueMetrics:
        return await self._engine.metrics(queue)

    async def close(self) -> None:
        await self._engine.close()


def _consumer(runtime: Runtime, backend: QueueBackend, http: httpx.AsyncClient) -> Consumer:
    resources = resources_from_runtime(runtime, http=http)
    return Consumer(
        backend,
        topology=runtime.topology,
        registry=load_handlers(handler_modules(runtime.settings.consumer.handler_modules)),
        resources=resources,
    )


async def test_leases_outlast_the_longest_handler_without_extension(
    runtime: Runtime, clock: ManualClock
) -> None:
    async with httpx.AsyncClient() as http:
        extending = _consumer(runtime, runtime.queue_engine, http)
        plain = _consumer(runtime, WithoutLeaseExtension(runtime.queue_engine), http)
    configured = runtime.topology.consumers["prestashop-sync"].visibility_timeout_ms
    # With a heartbeat the configured timeout is kept and extended while handlers run.
    assert extending.workers["prestashop-sync"].visibility_ms == configured
    # Without one, the lease covers the order sync's one-hour timeout.
    assert plain.workers["prestashop-sync"].visibility_ms == 3600 * 1000 + LEASE_MARGIN_MS

    await runtime.queue_engine.send("prestashop-sync", OutgoingMessage(body={"n": 1}))
    assert await plain.workers["prestashop-sync"].fill() == 1
    clock.advance(seconds=30 * 60)  # a 30-minute sync later: not delivered a second time
    assert (await runtime.queue_engine.pull("prestashop-sync")).messages == []
    clock.advance(seconds=31 * 60)
    assert len((await runtime.queue_engine.pull("prestashop-sync")).messages) == 1
