"""Fixtures for the handler tests: a JobContext factory over the real test database.

`make_run(job_type, payload)` validates the payload as the consumer does when it takes a
message (`HandlerSpec.parse`), so an invalid payload raises `InvalidPayload` right there."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import BaseModel

import app.handlers  # noqa: F401  (registers the handlers)
from app.bootstrap import Runtime
from app.consumer.registry import JobContext, Resources, registry
from app.core.ids import uuid7
from app.settings import Settings
from tests.factories import TenantFactory
from tests.support.fake_prestashop import FakePrestaShop, ThreadedServer
from tests.support.resources import resources_from_runtime

SHOP_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ123456"


@dataclass
class ProgressLog:
    calls: list[tuple[int, str | None]] = field(default_factory=list)

    async def __call__(self, percent: int, message: str | None = None) -> None:
        self.calls.append((percent, message))

    @property
    def percents(self) -> list[int]:
        return [p for p, _ in self.calls]


@dataclass
class Run:
    """One handler run: its context and the progress it reported."""

    ctx: JobContext[BaseModel]
    progress: ProgressLog

    async def __call__(self) -> None:
        spec = registry.get(self.ctx.type)
        assert spec is not None, f"no handler registered for {self.ctx.type}"
        await spec.func(self.ctx)


MakeRun = Callable[..., Run]


@pytest.fixture
def handler_settings(settings: Settings, tmp_path: Any) -> Settings:
    return settings.updated(
        object_store={"dir": tmp_path / "objects"},
        # The fake shop listens on 127.0.0.1, which the SSRF guard refuses by default.
        prestashop={"page_size": 10, "timeout_seconds": 10.0, "allow_private_urls": True},
    )


@pytest_asyncio.fixture
async def resources(handler_settings: Settings, runtime: Runtime) -> AsyncIterator[Resources]:
    async with httpx.AsyncClient() as http:
        yield resources_from_runtime(runtime, http=http, settings=handler_settings)


@pytest.fixture
def make_run(resources: Resources) -> MakeRun:
    def make(
        job_type: str,
        payload: dict[str, Any],
        *,
        tenant_id: str,
        job_id: str | None = None,
        attempt: int = 1,
        settings: Settings | None = None,
    ) -> Run:
        progress = ProgressLog()
        res = resources
        if settings is not None:
            res = replace(resources, settings=settings)
        spec = registry.get(job_type)
        assert spec is not None, f"no handler registered for {job_type}"
        ctx = JobContext(
            job_id=job_id or uuid7(),
            tenant_id=tenant_id,
            type=job_type,
            payload=spec.parse(payload),
            attempt=attempt,
            report_progress=progress,
            resources=res,
            created_at_ms=resources.clock.now_ms(),
        )
        return Run(ctx, progress)

    return make


@pytest_asyncio.fixture
async def tenant_id(tenants: TenantFactory) -> str:
    return (await tenants.create("acme")).tenant_id


@pytest.fixture
def fake_shop() -> Iterator[tuple[FakePrestaShop, ThreadedServer]]:
    shop = FakePrestaShop()
    shop.add_key(SHOP_KEY)
    with ThreadedServer(shop.app) as server:
        yield shop, server
