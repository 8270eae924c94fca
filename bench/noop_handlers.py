"""A no-op `analytics-event` handler for `bench/e2e_throughput.py`.

The benchmark's consumer loads it with `JOBGATE_HANDLER_MODULES=bench.noop_handlers` (and the
repository root on PYTHONPATH), so what is measured is jobgate's own path: accept, queue,
lease, attempt bookkeeping, ack. The Celery baseline's task (`bench/celery_app.py`) does the
same nothing.
"""

from __future__ import annotations

from app.consumer.registry import HandlerRegistry, JobContext


async def noop(ctx: JobContext) -> None:
    del ctx  # the job succeeds without looking at it


def register(registry: HandlerRegistry) -> None:
    registry.handler("analytics-event")(noop)
