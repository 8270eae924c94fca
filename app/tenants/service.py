"""Tenants and credentials. Services never commit: the caller's boundary does."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.core.clock import utcnow
from app.core.db import SessionMaker
from app.core.errors import Conflict, NotFound
from app.core.ids import uuid7
from app.core.periodic import run_every
from app.core.security import (
    OPERATOR_KEY_PREFIX,
    SecretBox,
    api_key_matches,
    api_key_prefix,
    hash_api_key,
    new_api_key,
    new_webhook_secret,
)
from app.tenants.models import ApiKey, OperatorKey, Tenant, WebhookSecret
from app.tenants.schemas import (
    DEFAULT_SCOPES,
    OPERATOR,
    TENANT_SCOPES,
    Principal,
    Scope,
    TenantCreated,
)

logger = logging.getLogger(__name__)


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
    working everywhere within `ttl_seconds`. `refresh` (the gateway runs it every quarter
    of the TTL) re-checks the keys used in the last `keep_warm_seconds` against their rows:
    a key still valid stays cached without a request ever missing, a revoked, deleted or
    re-scoped one leaves at once. Without it, every busy key would expire at the same
    moment on every connection, and each would read the key table in the request path;
    a client pausing for a few seconds would come back to a cold key on every connection.
    """

    def __init__(
        self, ttl_seconds: float = 5.0, max_entries: int = 10_000, keep_warm_seconds: float = 60.0
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._keep_warm = keep_warm_seconds
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._used: dict[str, float] = {}  # hash -> when it was last served

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        now = time.monotonic()
        if entry is None or entry[0] < now:
            return None
        self._used[key_hash] = now
        return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self._ttl, principal)

    def clear(self) -> None:
        self._entries.clear()
        self._used.clear()

    async def refresh(self, session: AsyncSession) -> None:
        """Extend the keys used lately whose rows still grant the same."""
        since = time.monotonic() - self._keep_warm
        self._used = {h: at for h, at in self._used.items() if at >= since}
        cached = {h: self._entries[h][1] for h in self._used if h in self._entries}
        tenant_ids = [p.key_id for p in cached.values() if not p.operator and p.key_id]
        operator_ids = [p.key_id for p in cached.values() if p.operator and p.key_id]
        current: dict[str, Principal] = {}
        if tenant_ids:
            stmt = select(ApiKey).where(col(ApiKey.id).in_(tenant_ids))
            for row in (await session.execute(stmt)).scalars():
                if row.revoked_at is None:
                    current[row.id] = _tenant_principal(row)
        if operator_ids:
            stmt_operator = select(OperatorKey).where(col(OperatorKey.id).in_(operator_ids))
            for op_row in (await session.execute(stmt_operator)).scalars():
                if op_row.revoked_at is None:
                    current[op_row.id] = _operator_principal(op_row)
        for key_hash, principal in cached.items():
            if current.get(principal.key_id or "") == principal:
                self.put(key_hash, principal)
            else:
                self._entries.pop(key_hash, None)


async def keep_key_cache(cache: ApiKeyCache, reader: SessionMaker, stop: asyncio.Event) -> None:
    """Run `cache.refresh` every quarter of its TTL until `stop` is set; a failed round
    is logged and leaves the keys to expire (requests then read them themselves)."""
    async def one_round() -> None:
        async with reader() as session:
            await cache.refresh(session)

    await run_every(
        cache.ttl_seconds / 4, stop, one_round, what="API key cache refresh", logger=logger
    )


def _tenant_principal(row: ApiKey) -> Principal:
    # Only scopes a tenant may hold count, whatever a row says.
    scopes = frozenset(s for s in row.scopes.split() if s in TENANT_SCOPES)
    return Principal(tenant_id=row.tenant_id, scopes=scopes, key_id=row.id)


def _operator_principal(row: OperatorKey) -> Principal:
    return Principal(tenant_id="", scopes=OPERATOR.scopes, key_id=row.id, operator=True)


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
    principal = _tenant_principal(row)
    if cache is not None:
        cache.put(key_hash, principal)
    return principal


async def authenticate_operator_key(
    session: AsyncSession, key: str, *, cache: ApiKeyCache | None = None
) -> Principal | None:
    """The operator principal for a valid, unrevoked operator key; None otherwise."""
    prefix = api_key_prefix(key, OPERATOR_KEY_PREFIX)
    if prefix is None:
        return None
    key_hash = hash_api_key(key)
    if cache is not None and (cached := cache.get(key_hash)) is not None:
        return cached
    stmt = select(OperatorKey).where(OperatorKey.prefix == prefix)
    row = (await session.execute(stmt)).scalars().first()
    if row is None or row.revoked_at is not None or not api_key_matches(key, row.key_hash):
        return None
    principal = _operator_principal(row)
    if cache is not None:
        cache.put(key_hash, principal)
    return principal


# --- Operator keys (CLI only: whoever runs `jobgate` against the database is the operator) ---


async def create_operator_key(session: AsyncSession, *, name: str) -> tuple[str, OperatorKey]:
    """A new operator key; `name` is unique among the active ones."""
    stmt = select(OperatorKey).where(
        OperatorKey.name == name, col(OperatorKey.revoked_at).is_(None)
    )
    if (await session.execute(stmt)).scalars().first() is not None:
        raise Conflict(f"an active operator key named {name!r} exists already")
    key, prefix = new_api_key(OPERATOR_KEY_PREFIX)
    row = OperatorKey(
        id=uuid7(), prefix=prefix, key_hash=hash_api_key(key), name=name, created_at=utcnow()
    )
    session.add(row)
    await session.flush()
    return key, row


async def list_operator_keys(session: AsyncSession) -> list[OperatorKey]:
    stmt = select(OperatorKey).order_by(col(OperatorKey.created_at), col(OperatorKey.id))
    return list((await session.execute(stmt)).scalars().all())


async def revoke_operator_key(session: AsyncSession, *, key_id: str) -> OperatorKey:
    """Revoke by id or visible prefix (idempotent); gateways forget it within their cache TTL."""
    stmt = select(OperatorKey).where((OperatorKey.id == key_id) | (OperatorKey.prefix == key_id))
    row = (await session.execute(stmt)).scalars().first()
    if row is None:
        raise NotFound(f"operator key {key_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row


# --- Administration (admin API and CLI) ---------------------------------------------------


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    rows = await session.execute(select(Tenant).order_by(col(Tenant.created_at), col(Tenant.id)))
    return list(rows.scalars().all())


async def active_key_counts(session: AsyncSession) -> dict[str, int]:
    """How many unrevoked API keys each tenant has (tenants with none are absent)."""
    stmt = (
        select(col(ApiKey.tenant_id), func.count())
        .where(col(ApiKey.revoked_at).is_(None))
        .group_by(col(ApiKey.tenant_id))
    )
    return {tenant_id: int(count) for tenant_id, count in (await session.execute(stmt)).all()}


async def get_tenant(session: AsyncSession, *, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} does not exist")
    return tenant


async def find_tenant(session: AsyncSession, *, ref: str) -> Tenant:
    """A tenant by id or, failing that, by name (what operators remember)."""
    tenant = await session.get(Tenant, ref)
    if tenant is None:
        tenant = (await session.execute(select(Tenant).where(Tenant.name == ref))).scalars().first()
    if tenant is None:
        raise NotFound(f"no tenant has the id or name {ref!r}")
    return tenant


async def list_api_keys(
    session: AsyncSession, *, tenant_id: str, prefix: str | None = None
) -> list[ApiKey]:
    """The tenant's keys (revoked ones too), optionally those whose prefix starts so."""
    stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    if prefix:
        stmt = stmt.where(col(ApiKey.prefix).startswith(prefix, autoescape=True))
    rows = await session.execute(stmt.order_by(col(ApiKey.created_at), col(ApiKey.id)))
    return list(rows.scalars().all())


async def revoke_api_key(
    session: AsyncSession, *, tenant_id: str, key_id: str, cache: ApiKeyCache | None = None
) -> ApiKey:
    """Revoke a key (idempotent); other processes' caches forget it within their TTL."""
    row = await session.get(ApiKey, key_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"API key {key_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    if cache is not None:
        cache.clear()
    return row


async def list_webhook_secrets(session: AsyncSession, *, tenant_id: str) -> list[WebhookSecret]:
    stmt = select(WebhookSecret).where(WebhookSecret.tenant_id == tenant_id)
    rows = await session.execute(stmt.order_by(col(WebhookSecret.created_at)))
    return list(rows.scalars().all())


async def active_webhook_secrets(
    session: AsyncSession, *, tenant_id: str, box: SecretBox
) -> list[str]:
    """The tenant's unrevoked secrets, newest first (every one verifies during rotation)."""
    rows = await list_webhook_secrets(session, tenant_id=tenant_id)
    return [box.decrypt(r.secret_encrypted) for r in reversed(rows) if r.revoked_at is None]


async def add_webhook_secret(
    session: AsyncSession, *, tenant_id: str, box: SecretBox
) -> tuple[str, WebhookSecret]:
    """Rotation, step one: a new secret; the old ones stay valid until revoked."""
    await get_tenant(session, tenant_id=tenant_id)
    secret = new_webhook_secret()
    row = WebhookSecret(
        id=uuid7(), tenant_id=tenant_id, secret_encrypted=box.encrypt(secret), created_at=utcnow()
    )
    session.add(row)
    await session.flush()
    return secret, row


async def revoke_webhook_secret(
    session: AsyncSession, *, tenant_id: str, secret_id: str
) -> WebhookSecret:
    """Rotation, step two: revoke the old secret. The last active one cannot be revoked."""
    row = await session.get(WebhookSecret, secret_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"webhook secret {secret_id} does not exist")
    if row.revoked_at is None:
        active = [
            r for r in await list_webhook_secrets(session, tenant_id=tenant_id) if not r.revoked_at
        ]
        if len(active) <= 1:
            raise Conflict("this is the tenant's only active webhook secret: add one first")
        row.revoked_at = utcnow()
        await session.flush()
    return row
