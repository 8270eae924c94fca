"""What the consumer samples for Prometheus, and the port it serves its metrics on.

Every `interval` the consumer reads, through the backend's `metrics()` (the local engine's
tables, or Cloudflare's metrics API), the backlog and oldest message age of each queue it
consumes and of each one's dead letter queue, and the breakers that are not closed; the
gauges in `app.observability.metrics` hold the last sample. Counters (jobs started,
succeeded, ...) are updated by the worker as outcomes are decided.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client import start_http_server
from sqlalchemy import select

from app.consumer.models import CircuitBreaker
from app.core.clock import Clock
from app.core.db import SessionMaker, table_of
from app.core.periodic import run_every
from app.observability import metrics
from app.queues.base import QueueBackend
from app.queues.topology import Topology

log = logging.getLogger("jobgate.consumer")
_breakers = table_of(CircuitBreaker)


class Monitor:
    """Samples queue depths and breaker states into the consumer's gauges."""

    def __init__(
        self,
        backend: QueueBackend,
        *,
        topology: Topology,
        queues: Sequence[str],
        sessionmaker: SessionMaker,
        clock: Clock,
        interval_seconds: float,
    ) -> None:
        self._backend = backend
        self._sessionmaker = sessionmaker
        self._clock = clock
        self.interval_seconds = interval_seconds
        self.queues = list(queues)
        self.dead_letter_queues = sorted(
            {
                dlq
                for name in queues
                if (dlq := topology.consumers[name].dead_letter_queue) is not None
            }
        )

    async def sample_once(self) -> None:
        for queue in self.queues:
            backlog, age = await self._depth(queue)
            metrics.queue_backlog.labels(queue).set(backlog)
            metrics.queue_oldest_age.labels(queue).set(age)
        for queue in self.dead_letter_queues:
            backlog, age = await self._depth(queue)
            metrics.dlq_backlog.labels(queue).set(backlog)
            metrics.dlq_oldest_age.labels(queue).set(age)
        await self._sample_breakers()

    async def _depth(self, queue: str) -> tuple[int, float]:
        sample = await self._backend.metrics(queue)
        oldest = sample.oldest_message_timestamp_ms
        age = max(0, self._clock.now_ms() - oldest) / 1000 if oldest else 0.0
        return sample.backlog_count, age

    async def _sample_breakers(self) -> None:
        # Closed breakers (most of them, and all without a row) are left out of the series.
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(_breakers.c.tenant_id, _breakers.c.job_type, _breakers.c.state).where(
                        _breakers.c.state != "closed"
                    )
                )
            ).all()
            await session.commit()
        metrics.breaker_state.clear()
        for tenant_id, job_type, state in rows:
            value = metrics.BREAKER_STATE_VALUES.get(state, 0)
            metrics.breaker_state.labels(tenant_id, job_type).set(value)

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until `stop`; a failed sample is logged and tried again next time."""
        await run_every(
            self.interval_seconds, stop, self.sample_once, what="sampling queue metrics", logger=log
        )


def serve_metrics(host: str, port: int) -> Any:
    """Serve the consumer's metrics over HTTP on `host:port` (a daemon thread); returns the
    server (call `shutdown()` to stop it). ValueError when the port cannot be bound."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.CONSUMER_REGISTRY)
    except OSError as exc:  # taken, or not ours to bind: a setting to fix, not a crash
        raise ValueError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server
