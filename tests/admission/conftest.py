"""Gateways with chosen admission settings, over ASGI, on the test database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admission.service import AdmissionControl
from app.bootstrap import Runtime, build_admission, build_runtime
from app.core.clock import ManualClock
from app.main import create_app
from app.settings import Settings


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
    made: list[Gateway] = []

    async def make(*, root: dict[str, Any] | None = None, **admission: Any) -> Gateway:
        """A gateway whose root settings are updated with `root`, admission with the rest."""
        root_settings = settings.updated(**(root or {}), admission=admission)
        runtime = build_runtime(root_settings, clock=clock, engine=db_engine)
        app = create_app(runtime=runtime)
        control = build_admission(runtime)
        app.state.admission = control
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        gateway = Gateway(runtime=runtime, admission=control, http=http)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.http.aclose()
        await gateway.admission.close()
        await gateway.runtime.queue_engine.close()


class WriteRecorder:
    """Records every INSERT/UPDATE/DELETE the engine sends while `recording` is set."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.recording = False
        self.writes: list[str] = []
        self._engine = engine
        event.listen(engine.sync_engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if self.recording and verb in ("INSERT", "UPDATE", "DELETE"):
            self.writes.append(statement)

    def close(self) -> None:
        event.remove(self._engine.sync_engine, "before_cursor_execute", self._on_execute)


@pytest.fixture
def writes(db_engine: AsyncEngine) -> Iterator[WriteRecorder]:
    recorder = WriteRecorder(db_engine)
    yield recorder
    recorder.close()
