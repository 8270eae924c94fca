"""No-op handlers for `bench/e2e_throughput.py`.

The benchmark's consumer loads them with `JOBGATE_HANDLER_MODULES=bench.noop_handlers` (and the
repository root on PYTHONPATH), so what is measured is jobgate's own path: accept, queue,
lease, payload validation, attempt bookkeeping, ack. The Celery baseline's task
(`bench/celery_app.py`) does the same nothing. Every job type gets one (the start-up checks
want a handler per routed type); the benchmark submits analytics events.
"""

from __future__ import annotations

from pydantic import BaseModel

from app.consumer.registry import HandlerRegistry, JobContext
from app.jobs.payloads import JOB_PAYLOADS


async def noop(ctx: JobContext[BaseModel]) -> None:
    del ctx  # the job succeeds without looking at it


def register(registry: HandlerRegistry) -> None:
    for job_type, model in JOB_PAYLOADS.items():
        registry.handler(job_type, model)(noop)
