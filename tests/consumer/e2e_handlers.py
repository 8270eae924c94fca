"""Handlers for the end-to-end tests, loaded by a consumer subprocess through
`JOBGATE_HANDLER_MODULES=tests.consumer.e2e_handlers` (its `register` hook)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from app.consumer.registry import HandlerRegistry, JobContext


async def analytics(ctx: JobContext) -> None:
    mode = ctx.payload.get("properties", {}).get("mode", "ok")
    if mode == "fail":
        raise RuntimeError("always fails")
    if mode == "block":
        # Holds the handler while the test's block file exists (to kill the consumer mid-run).
        block = Path(os.environ["JOBGATE_E2E_BLOCK_FILE"])
        await ctx.progress(10, "blocked")
        while block.exists():
            await asyncio.sleep(0.05)


def register(registry: HandlerRegistry) -> None:
    registry.handler("analytics-event")(analytics)
