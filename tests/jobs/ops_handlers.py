"""Handlers for the job operations tests over real processes, loaded by a consumer
subprocess through `JOBGATE_HANDLER_MODULES=tests.jobs.ops_handlers`.

Analytics events fail while the file `JOBGATE_OPS_FAIL_FILE` exists (an outage the test
ends by deleting it); every other job type fails permanently (the tests submit none)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from app.consumer.registry import HandlerRegistry, JobContext, PermanentFailure
from app.jobs.payloads import JOB_PAYLOADS, AnalyticsEventPayload


async def analytics(ctx: JobContext[AnalyticsEventPayload]) -> None:
    if Path(os.environ["JOBGATE_OPS_FAIL_FILE"]).exists():
        raise RuntimeError("upstream outage")


async def not_tested(ctx: JobContext[BaseModel]) -> None:
    raise PermanentFailure(f"the job operations tests do not run {ctx.type} jobs")


def register(registry: HandlerRegistry) -> None:
    registry.handler("analytics-event", AnalyticsEventPayload)(analytics)
    for job_type, model in JOB_PAYLOADS.items():
        if job_type != "analytics-event":
            registry.handler(job_type, model)(not_tested)
