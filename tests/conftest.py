"""Test fixtures: a migrated database (SQLite, or PostgreSQL when JOBGATE_DATABASE_URL
points at one, in a fresh schema per run), a manual clock, the app over ASGI with its lifespan
running (scheduler, depth sampler, and the outbox relay with the Cloudflare backend)."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import app.models  # noqa: F401
from app.bootstrap import Runtime, build_runtime
from app.core.clock import ManualClock, SystemClock
from app.core.config import REPO_ROOT, DatabaseSettings, Environment, SecuritySettings
from app.core.db import create_engine, metadata
from app.core.migrations import upgrade
from app.main import create_app
from app.queues.config import QueueBackendSettings
from app.scheduler.runner import SchedulerRunner
from app.settings import Settings
from tests.factories import TenantFactory
from tests.support.asgi import asgi_client
from tests.support.databases import fresh_pg_schema, postgres_url_from_env
from tests.support.servers import TEST_SECRET_KEY

# Tests that need Redis use this database, each under its own key prefix (`redis_prefix`).
REDIS_URL = "redis://127.0.0.1:6379/9"


@pytest.fixture(scope="session")
def database() -> Iterator[tuple[str, str | None]]:
    """(database URL, PostgreSQL schema or None), migrated once for the whole run."""
    pg_url = postgres_url_from_env()
    if pg_url is None:
        with tempfile.TemporaryDirectory(prefix="jobgate-test-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'test.db'}"
            asyncio.run(_migrate(url, None))
            yield url, None
        return
    with fresh_pg_schema(pg_url, "test") as schema:
        asyncio.run(_migrate(pg_url, schema))
        yield pg_url, schema


async def _migrate(url: str, schema: str | None) -> None:
    engine = create_engine(DatabaseSettings(url=url), search_path=schema)
    await upgrade(engine)
    await engine.dispose()


@pytest.fixture
def settings(database: tuple[str, str | None]) -> Settings:
    url, _ = database
    return Settings(
        environment=Environment.test,
        # Tests need speed, not fsync-per-commit durability (the crash test checks that).
        db=DatabaseSettings(url=url, sqlite_synchronous="NORMAL"),
        queues=QueueBackendSettings(wrangler_config=REPO_ROOT / "wrangler.jsonc"),
        # The key `jobgate` subprocesses of the test get: they read what the test stored.
        security=SecuritySettings(secret_key=TEST_SECRET_KEY),
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ms=SystemClock().now_ms())


async def _clean(engine: AsyncEngine) -> None:
    tables = [table.name for table in reversed(metadata.sorted_tables)]
    # Last: on SQLite the DELETEs fire the counting triggers (TRUNCATE does not).
    tables.sort(key=lambda name: name == "row_counter")
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))


@pytest_asyncio.fixture
async def db_engine(
    settings: Settings, database: tuple[str, str | None]
) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.db, search_path=database[1])
    await _clean(engine)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def runtime(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> AsyncIterator[Runtime]:
    built = build_runtime(settings, clock=clock, engine=db_engine)
    yield built
    await built.committer.close()  # its SQLite writer process
    await built.queue_engine.close()


@pytest_asyncio.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(runtime=runtime)) as http:
        yield http


@pytest.fixture
def scheduler_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways started in this test keep their scheduler loop idle until they stop.

    For tests that fire schedules themselves with `run_once()` at the clock times they set:
    the loop polling beside them would now and then fire an occurrence first.
    """

    async def idle(self: SchedulerRunner) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    monkeypatch.setattr(SchedulerRunner, "run", idle)


@pytest.fixture
def tenants(runtime: Runtime) -> TenantFactory:
    return TenantFactory(runtime)


@pytest_asyncio.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of its own in the test Redis database; its keys are deleted afterwards."""
    prefix = f"jobgate-test-{secrets.token_hex(4)}"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
