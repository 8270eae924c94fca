"""Gateways with chosen admission settings, over ASGI, on the test database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admission.service import AdmissionControl
from app.bootstrap import Runtime, build_admission, build_runtime
from app.core.clock import ManualClock
from app.main import create_app
from app.settings import Settings
from tests.support.asgi import asgi_client
from tests.support.statements import WriteRecorder


@dataclass
class Gateway:
    runtime: Runtime
    admission: AdmissionControl
    http: httpx.AsyncClient


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def make_gateway(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> AsyncIterator[MakeGateway]:
    stack = AsyncExitStack()

    async def make(*, root: dict[str, Any] | None = None, **admission: Any) -> Gateway:
        """A gateway whose root settings are updated with `root`, admission with the rest."""
        root_settings = settings.updated(**(root or {}), admission=admission)
        runtime = build_runtime(root_settings, clock=clock, engine=db_engine)
        app = create_app(runtime=runtime)
        control = build_admission(runtime)
        app.state.admission = control  # the lifespan starts its sampler and closes it
        stack.push_async_callback(runtime.queue_engine.close)  # after the gateway stopped
        stack.push_async_callback(runtime.committer.close)  # its SQLite writer process
        http = await stack.enter_async_context(asgi_client(app))
        return Gateway(runtime=runtime, admission=control, http=http)

    async with stack:
        yield make


@pytest.fixture
def writes(db_engine: AsyncEngine) -> Iterator[WriteRecorder]:
    recorder = WriteRecorder(db_engine)
    yield recorder
    recorder.close()
