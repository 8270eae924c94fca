"""The gateway over ASGI, as a server would run it: its lifespan started and stopped.

The lifespan starts what a gateway runs beside its routes (the outbox relay with the
Cloudflare backend, the scheduler, the admission depth sampler), so API tests see those
loops running, and their shutdown (relay flush, Redis close) is exercised too.

So an async test with a gateway open must not block its event loop on something that needs
the database (a `jobgate` command, a call to the emulator process): on SQLite a loop caught
inside a transaction would hold the write lock until the blocked loop runs again. Run such
calls in a thread (`run_jobgate_async`, `asyncio.to_thread`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

# Generous: start-up and the relay's final flush run on a shared, noisy machine.
LIFESPAN_TIMEOUT_S = 30.0


@asynccontextmanager
async def asgi_client(
    app: FastAPI, *, client: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for `app`, seen as coming from `client`, inside the app's lifespan."""
    async with LifespanManager(
        app, startup_timeout=LIFESPAN_TIMEOUT_S, shutdown_timeout=LIFESPAN_TIMEOUT_S
    ) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http
