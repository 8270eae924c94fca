"""Handlers for the end-to-end tests, loaded by a consumer subprocess through
`JOBGATE_HANDLER_MODULES=tests.consumer.e2e_handlers` (its `register` hook).

The tests submit only analytics events; every other job type gets a handler that fails
permanently, so the gateway's and the consumer's start-up checks (a handler per routed job
type) pass with these modules."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from app.consumer.registry import HandlerRegistry, JobContext, PermanentFailure
from app.jobs.payloads import JOB_PAYLOADS, AnalyticsEventPayload


async def analytics(ctx: JobContext[AnalyticsEventPayload]) -> None:
    mode = ctx.payload.properties.get("mode", "ok")
    if mode == "fail":
        raise RuntimeError("always fails")
    if mode == "block":
        # Holds the handler while the test's block file exists (to kill the consumer mid-run).
        block = Path(os.environ["JOBGATE_E2E_BLOCK_FILE"])
        await ctx.progress(10, "blocked")
        while block.exists():
            await asyncio.sleep(0.05)


async def not_tested(ctx: JobContext[BaseModel]) -> None:
    raise PermanentFailure(f"the end-to-end tests do not run {ctx.type} jobs")


def register(registry: HandlerRegistry) -> None:
    registry.handler("analytics-event", AnalyticsEventPayload)(analytics)
    for job_type, model in JOB_PAYLOADS.items():
        if job_type != "analytics-event":
            registry.handler(job_type, model)(not_tested)
