"""A consumer on the real local engine and job store, with its own topology and handlers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import json5
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime, build_runtime
from app.consumer.process import Consumer
from app.consumer.registry import HandlerRegistry
from app.core.clock import ManualClock
from app.core.config import REPO_ROOT
from app.jobs.models import Job, JobAttempt, JobEvent
from app.main import create_app
from app.queues.models import QueueMessage
from app.settings import Settings
from tests.factories import TenantFactory, auth
from tests.support.asgi import asgi_client
from tests.support.resources import resources_from_runtime

QUEUE = "analytics-events"
DLQ = "analytics-events-dlq"


def write_topology(path: Path, consumer: dict[str, Any]) -> Path:
    """The shipped wrangler.jsonc with `analytics-events`' consumer replaced."""
    raw = json5.loads((REPO_ROOT / "wrangler.jsonc").read_text())
    consumers = [c for c in raw["queues"]["consumers"] if c["queue"] != QUEUE]
    consumers.append({"queue": QUEUE, **consumer})
    raw["queues"]["consumers"] = consumers
    path.write_text(json.dumps(raw))
    return path


@dataclass
class Harness:
    runtime: Runtime
    client: httpx.AsyncClient
    consumer: Consumer
    registry: HandlerRegistry
    clock: ManualClock
    keys: dict[str, str]
    tenant_ids: dict[str, str]

    async def submit(self, tenant: str = "a", **properties: Any) -> str:
        body = {"type": "analytics-event", "name": "e", "properties": properties}
        response = await self.client.post("/v1/jobs", json=body, headers=auth(self.keys[tenant]))
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    async def job(self, job_id: str) -> Job:
        async with self.runtime.sessionmaker() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            return job

    async def attempts(self, job_id: str) -> list[JobAttempt]:
        async with self.runtime.sessionmaker() as session:
            stmt = (
                select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)
            )  # type: ignore[arg-type]
            return list((await session.execute(stmt)).scalars().all())

    async def statuses(self, job_id: str) -> list[str]:
        async with self.runtime.sessionmaker() as session:
            stmt = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)  # type: ignore[arg-type]
            return [e.status for e in (await session.execute(stmt)).scalars().all()]

    async def messages(self, queue: str = QUEUE) -> list[QueueMessage]:
        async with self.runtime.sessionmaker() as session:
            stmt = select(QueueMessage).where(QueueMessage.queue == queue)
            return list((await session.execute(stmt)).scalars().all())

    def new_consumer(self) -> Consumer:
        return Consumer(
            self.runtime.backend,
            topology=self.runtime.topology,
            registry=self.registry,
            resources=self.consumer.resources,
            queues=[QUEUE],
        )


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest_asyncio.fixture
async def make_harness(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine, tmp_path: Path
) -> AsyncIterator[MakeHarness]:
    stack = AsyncExitStack()

    async def make(
        registry: HandlerRegistry,
        *,
        tenants: tuple[str, ...] = ("a",),
        settings_update: dict[str, Any] | None = None,
        **consumer: Any,
    ) -> Harness:
        config = {"max_batch_size": 10, "max_batch_timeout": 0, "max_retries": 3, **consumer}
        path = write_topology(tmp_path / "wrangler.jsonc", config)
        update = dict(settings_update or {})
        tuned = settings.updated(
            queues={"wrangler_config": path},
            consumer={
                "retry_jitter": 0.0,
                "retry_base_seconds": 10,
                "heartbeat_ms": 20,
                **update.pop("consumer", {}),
            },
            **update,
        )
        runtime = build_runtime(tuned, clock=clock, engine=db_engine)
        stack.push_async_callback(runtime.queue_engine.close)  # after the gateway stopped
        stack.push_async_callback(runtime.committer.close)  # its SQLite writer process
        client = await stack.enter_async_context(asgi_client(create_app(runtime=runtime)))
        factory = TenantFactory(runtime)
        keys: dict[str, str] = {}
        ids: dict[str, str] = {}
        for name in tenants:
            created = await factory.create(name)
            keys[name], ids[name] = created.api_key, created.tenant_id
        resources = resources_from_runtime(runtime, http=client)
        built = Consumer(
            runtime.backend,
            topology=runtime.topology,
            registry=registry,
            resources=resources,
            queues=[QUEUE],
        )
        return Harness(runtime, client, built, registry, clock, keys, ids)

    async with stack:
        yield make
