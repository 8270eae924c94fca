"""The API key cache's refresh: busy keys never expire in the request path, and a key
revoked or re-scoped in the database (by another gateway, or the CLI) leaves at once."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from fastapi import Request
from sqlalchemy import update
from sqlmodel import col

from app.bootstrap import Runtime
from app.core.clock import utcnow
from app.core.security import api_key_prefix, hash_api_key
from app.main import create_app
from app.tenants.deps import authenticate
from app.tenants.models import ApiKey, OperatorKey
from app.tenants.schemas import Scope
from app.tenants.service import (
    ApiKeyCache,
    authenticate_api_key,
    authenticate_operator_key,
    create_operator_key,
)
from tests.factories import TenantFactory

pytestmark = pytest.mark.asyncio


async def cached(runtime: Runtime, cache: ApiKeyCache, key: str) -> None:
    async with runtime.sessionmaker() as session:
        assert await authenticate_api_key(session, key, cache=cache) is not None


async def refresh(runtime: Runtime, cache: ApiKeyCache) -> None:
    async with runtime.reader() as session:
        await cache.refresh(session)


async def test_a_used_key_stays_cached_past_its_ttl(
    runtime: Runtime, tenants: TenantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await tenants.create()
    cache = ApiKeyCache(ttl_seconds=60)
    await cached(runtime, cache, tenant.api_key)
    key_hash = hash_api_key(tenant.api_key)
    principal = cache.get(key_hash)
    assert principal is not None
    assert principal.tenant_id == tenant.tenant_id

    # 50 s later the key was refreshed (it was used): valid until 110 s, not 60 s.
    now = [1000.0]
    monkeypatch.setattr("app.tenants.service.time.monotonic", lambda: now[0])
    cache.put(key_hash, principal)
    cache.get(key_hash)
    now[0] += 50
    await refresh(runtime, cache)
    now[0] += 50
    assert cache.get(key_hash) == principal
    # That use counts once more; after it, unused: not extended, it expires on time.
    await refresh(runtime, cache)
    now[0] += 61
    await refresh(runtime, cache)
    assert cache.get(key_hash) is None


async def test_a_key_stays_warm_through_a_quiet_spell(
    runtime: Runtime, tenants: TenantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client pausing for half a minute finds its key cached on every connection (the
    first request after the pause must not take the full route); a minute unused, it goes."""
    tenant = await tenants.create()
    cache = ApiKeyCache(ttl_seconds=5, keep_warm_seconds=60)
    now = [1000.0]
    monkeypatch.setattr("app.tenants.service.time.monotonic", lambda: now[0])
    await cached(runtime, cache, tenant.api_key)
    key_hash = hash_api_key(tenant.api_key)
    assert cache.get(key_hash) is not None
    for _ in range(24):  # 30 s without a request, the keeper's rounds every 1.25 s
        now[0] += 1.25
        await refresh(runtime, cache)
    assert cache.get(key_hash) is not None
    for _ in range(60):  # then 75 s more without one
        now[0] += 1.25
        await refresh(runtime, cache)
    assert cache.get(key_hash) is None


async def test_revoked_or_rescoped_keys_leave_at_the_next_refresh(
    runtime: Runtime, tenants: TenantFactory
) -> None:
    tenant = await tenants.create()
    other_key = await tenants.key(tenant.tenant_id, [Scope.jobs_read])
    cache = ApiKeyCache(ttl_seconds=3600)
    await cached(runtime, cache, tenant.api_key)
    await cached(runtime, cache, other_key)
    async with runtime.sessionmaker() as session:
        operator_key, _ = await create_operator_key(session, name="ops")
        assert await authenticate_operator_key(session, operator_key, cache=cache) is not None
        await session.commit()

    # As another process would: straight in the database, this cache is not told.
    async with runtime.sessionmaker() as session:
        await session.execute(
            update(ApiKey)
            .where(col(ApiKey.prefix) == api_key_prefix(tenant.api_key))
            .values(revoked_at=utcnow())
        )
        await session.execute(
            update(ApiKey)
            .where(col(ApiKey.tenant_id) == tenant.tenant_id, col(ApiKey.scopes) == "jobs:read")
            .values(scopes="jobs:read jobs:write")
        )
        await session.execute(update(OperatorKey).values(revoked_at=utcnow()))
        await session.commit()
    for key in (tenant.api_key, other_key, operator_key):
        assert cache.get(hash_api_key(key)) is not None  # still cached: used this round

    await refresh(runtime, cache)
    assert cache.get(hash_api_key(tenant.api_key)) is None
    assert cache.get(hash_api_key(operator_key)) is None
    assert cache.get(hash_api_key(other_key)) is None  # its scopes changed: read again
    async with runtime.sessionmaker() as session:
        again = await authenticate_api_key(session, other_key, cache=cache)
    assert again is not None
    assert again.has(Scope.jobs_write)


async def test_a_key_not_in_the_cache_is_read_without_the_write_lock(
    runtime: Runtime, tenants: TenantFactory
) -> None:
    """On SQLite a lookup in the request's own session would begin IMMEDIATE and wait for
    whatever holds the write lock (the group commit's writer, under load: up to 1.5 s)."""
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's single write lock")
    database = runtime.engine.url.database
    assert database is not None
    tenant = await tenants.create()
    app = create_app(runtime=runtime)
    request = Request(
        {
            "type": "http",
            "app": app,
            "headers": [(b"authorization", f"Bearer {tenant.api_key}".encode())],
        }
    )
    runtime.credentials.key_cache.clear()
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock meanwhile
        principal = await asyncio.wait_for(authenticate(request, runtime.credentials), timeout=5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert principal.tenant_id == tenant.tenant_id
