"""Handlers for the dashboard's browser test, loaded by its consumer subprocess through
`JOBGATE_HANDLER_MODULES=tests.dashboard.browser_handlers`.

An analytics event with `properties.mode == "fail-until-fixed"` fails while the file named
by `JOBGATE_DASHBOARD_FIX_FILE` does not exist (so it goes dead), and succeeds once the test
creates it (so a retry from the dashboard succeeds). Other job types fail permanently.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.consumer.registry import HandlerRegistry, JobContext
from app.jobs.payloads import JOB_PAYLOADS, AnalyticsEventPayload
from tests.consumer.e2e_handlers import not_tested

FIX_FILE_ENV = "JOBGATE_DASHBOARD_FIX_FILE"


async def analytics(ctx: JobContext[AnalyticsEventPayload]) -> None:
    if ctx.payload.properties.get("mode") == "fail-until-fixed":
        if not Path(os.environ[FIX_FILE_ENV]).exists():
            raise RuntimeError("upstream down: the shop API answered 502")
    await ctx.progress(100, "done")


def register(registry: HandlerRegistry) -> None:
    registry.handler("analytics-event", AnalyticsEventPayload)(analytics)
    for job_type, model in JOB_PAYLOADS.items():
        if job_type != "analytics-event":
            registry.handler(job_type, model)(not_tested)
