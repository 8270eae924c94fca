"""The consumer process's core: one `QueueWorker` per consumed queue, and the sweep that
ends jobs whose final delivery was lost.

`run_once()` runs one cycle on every queue with no waiting (tests); `run()` consumes until
stopped, then lets in-flight runs finish (interrupting them after the shutdown grace) and
hands buffered messages back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from app.consumer.breaker import BreakerPolicy
from app.consumer.registry import HandlerRegistry, Resources
from app.consumer.retry import RetryPolicy
from app.consumer.wakeup import QueueNotices
from app.consumer.wiring import check_job_types
from app.consumer.worker import CycleReport, QueueWorker
from app.jobs import lifecycle
from app.queues.base import QueueBackend, SupportsJointTransactions
from app.queues.topology import Topology

log = logging.getLogger("jobgate.consumer")

# Used when neither the caller nor the settings name one (service.py picks per backend).
IDLE_POLL_MAX_MS_DEFAULT = 1_000


class Consumer:
    """Consumes the named queues (all consumed queues of the topology by default)."""

    def __init__(
        self,
        backend: QueueBackend,
        *,
        topology: Topology,
        registry: HandlerRegistry,
        resources: Resources,
        queues: Sequence[str] | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        poll_max_ms: int | None = None,
    ) -> None:
        settings = resources.settings
        names = list(queues) if queues else topology.consumed_queues
        unknown = [name for name in names if name not in topology.consumers]
        if unknown:
            raise ValueError(f"no consumer is configured for queue(s) {', '.join(unknown)}")
        # Every job type routed to these queues has a handler for its model (or no start).
        check_job_types(topology, registry, queues=names)
        self.settings = settings
        self.resources = resources
        # Longest wait between pulls while the queue stays empty (never below the minimum).
        self.poll_max_ms = max(
            settings.consumer.poll_min_ms,
            poll_max_ms or settings.consumer.poll_max_ms or IDLE_POLL_MAX_MS_DEFAULT,
        )
        self.retry = retry or RetryPolicy(
            base_seconds=settings.consumer.retry_base_seconds, jitter=settings.consumer.retry_jitter
        )
        self.breaker = breaker or BreakerPolicy(
            threshold=settings.breaker.threshold,
            window_ms=settings.breaker.window_seconds * 1000,
            cooldown_ms=settings.breaker.cooldown_seconds * 1000,
        )
        # On PostgreSQL, idle workers of the local engine wake on the store's notices.
        self._notices = (
            QueueNotices.for_url(settings.db.url, resources.sessionmaker)
            if isinstance(backend, SupportsJointTransactions)
            else None
        )
        self.workers: dict[str, QueueWorker] = {
            name: QueueWorker(
                queue=name,
                config=topology.consumers[name],
                queue_max_retries=topology.queues[name].max_retries,
                backend=backend,
                registry=registry,
                resources=resources,
                retry=self.retry,
                breaker=self.breaker,
                job_types=[t for t, queue in topology.routes.items() if queue == name],
                wakeup=self._notices.watch(name) if self._notices is not None else None,
            )
            for name in names
        }

    @property
    def queues(self) -> list[str]:
        return list(self.workers)

    async def run_once(self) -> CycleReport:
        """One cycle on every queue, without waiting for batches to fill."""
        reports = await asyncio.gather(*(w.cycle() for w in self.workers.values()))
        total = CycleReport()
        for report in reports:
            total = total + report
        return total

    async def sweep_lost(self) -> int:
        """Mark `dead` the jobs whose final delivery's lease ran out with no outcome.

        The queue backend dead-letters such a message by itself (no consumer sees it again),
        so this is the only place that ends those jobs. Returns how many were marked.
        """
        clock = self.resources.clock
        now = clock.now_ms()
        cutoff = now - self.settings.consumer.lost_grace_seconds * 1000
        async with self.resources.sessionmaker() as session:
            lost = await lifecycle.lost_final_attempts(
                session, queues=self.queues, expired_before_ms=cutoff
            )
            reason = (
                "its consumer was lost during the final delivery; "
                "the message is in the dead letter queue"
            )
            await lifecycle.settle(session, dead=dict.fromkeys(lost, reason), now_ms=now)
            await session.commit()
        for job_id in lost:
            log.warning("job %s is dead: %s", job_id, reason, extra={"job_id": job_id})
        return len(lost)

    async def _sweeper(self) -> None:
        while True:
            try:
                await self.sweep_lost()
            except Exception:
                log.exception("sweeping lost attempts failed")
            await asyncio.sleep(self.settings.consumer.sweep_interval_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; then finish in-flight runs (interrupting them after
        the shutdown grace) and hand buffered messages back."""
        settings = self.settings
        if self._notices is not None:
            await self._notices.start()
        tasks = [
            asyncio.create_task(
                worker.run(
                    stop,
                    poll_min_ms=settings.consumer.poll_min_ms,
                    poll_max_ms=self.poll_max_ms,
                )
            )
            for worker in self.workers.values()
        ]
        sweeper = asyncio.create_task(self._sweeper())
        try:
            await stop.wait()
            _, pending = await asyncio.wait(tasks, timeout=settings.consumer.shutdown_grace_seconds)
            if pending:
                log.warning("shutdown grace over: releasing in-flight messages")
                for worker in self.workers.values():
                    worker.abort()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            sweeper.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(sweeper, *tasks, return_exceptions=True)
            if self._notices is not None:
                await self._notices.close()
