"""Tenants and credentials. Services never commit: the caller's boundary does."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from app.core.clock import utcnow
from app.core.errors import Conflict
from app.core.ids import uuid7
from app.core.security import (
    SecretBox,
    api_key_matches,
    api_key_prefix,
    hash_api_key,
    new_api_key,
    new_webhook_secret,
)
from app.tenants.models import ApiKey, Tenant, WebhookSecret
from app.tenants.schemas import DEFAULT_SCOPES, Principal, Scope, TenantCreated


async def create_tenant(
    session: AsyncSession,
    *,
    name: str,
    box: SecretBox,
    scopes: Iterable[Scope] = DEFAULT_SCOPES,
) -> TenantCreated:
    existing = await session.execute(select(Tenant).where(Tenant.name == name))
    if existing.scalars().first() is not None:
        raise Conflict(f"a tenant named {name!r} already exists")
    now = utcnow()
    tenant = Tenant(id=uuid7(), name=name, created_at=now)
    session.add(tenant)
    await session.flush()
    key, _ = await create_api_key(session, tenant_id=tenant.id, scopes=scopes)
    secret = new_webhook_secret()
    session.add(
        WebhookSecret(
            id=uuid7(), tenant_id=tenant.id, secret_encrypted=box.encrypt(secret), created_at=now
        )
    )
    await session.flush()
    return TenantCreated(tenant_id=tenant.id, api_key=key, webhook_secret=secret)


async def create_api_key(
    session: AsyncSession,
    *,
    tenant_id: str,
    scopes: Iterable[Scope] = DEFAULT_SCOPES,
    name: str | None = None,
) -> tuple[str, ApiKey]:
    key, prefix = new_api_key()
    row = ApiKey(
        id=uuid7(),
        tenant_id=tenant_id,
        prefix=prefix,
        key_hash=hash_api_key(key),
        scopes=" ".join(sorted(s.value for s in scopes)),
        name=name,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return key, row


async def count_tenants(session: AsyncSession) -> int:
    return len((await session.execute(select(Tenant.id))).scalars().all())


class ApiKeyCache:
    """Remembers verified keys briefly, so the hot path skips a query per request.

    Only successful lookups are cached, keyed by the key's hash; a revoked key stops
    working everywhere within `ttl_seconds`.
    """

    def __init__(self, ttl_seconds: float = 5.0, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self._ttl, principal)

    def clear(self) -> None:
        self._entries.clear()


async def authenticate_api_key(
    session: AsyncSession, key: str, *, cache: ApiKeyCache | None = None
) -> Principal | None:
    """The principal for a valid, unrevoked key; None otherwise."""
    prefix = api_key_prefix(key)
    if prefix is None:
        return None
    key_hash = hash_api_key(key)
    if cache is not None and (cached := cache.get(key_hash)) is not None:
        return cached
    row = (await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))).scalars().first()
    if row is None or row.revoked_at is not None or not api_key_matches(key, row.key_hash):
        return None
    principal = Principal(
        tenant_id=row.tenant_id, scopes=frozenset(row.scopes.split()), key_id=row.id
    )
    if cache is not None:
        cache.put(key_hash, principal)
    return principal
