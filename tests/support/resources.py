"""What consumer handlers share (`Resources`), built from a test's runtime."""

from __future__ import annotations

import httpx

from app.bootstrap import Runtime
from app.consumer.registry import Resources
from app.settings import Settings


def resources_from_runtime(
    runtime: Runtime, *, http: httpx.AsyncClient, settings: Settings | None = None
) -> Resources:
    """The runtime's sessionmaker, secret box and clock, with `settings` when given (handler
    tests tune them) and `http` as every handler's outbound client."""
    return Resources(
        settings=settings or runtime.settings,
        sessionmaker=runtime.sessionmaker,
        http=http,
        box=runtime.box,
        clock=runtime.clock,
    )
