"""Shop connections, email senders and the upserts the handlers write with.

Services never commit: the handler (or the CLI) that owns the unit of work does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, select

from app.core.clock import utcnow
from app.core.db import table_of
from app.core.errors import NotFound, ValidationFailed
from app.core.ids import uuid7
from app.core.security import SecretBox
from app.handlers.models import EmailSender, PsSyncState, ShopConnection
from app.handlers.shop_url import ShopUrlGuard, UnsafeShopUrl
from app.tenants.models import Tenant

# PrestaShop keys are 32 characters; anything else is refused by the shop (code 18).
WEBSERVICE_KEY_LENGTH = 32


async def upsert(
    session: AsyncSession,
    model: type[SQLModel],
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str],
    update_columns: Sequence[str] | None = None,
    newer_by: str | None = None,
) -> None:
    """One multi-row INSERT .. ON CONFLICT (keys) DO UPDATE (or DO NOTHING), on SQLite and PG.

    With `newer_by`, an existing row is only overwritten by a row whose `newer_by` column
    is at least as recent, so a slow, older sync never undoes a newer one.
    """
    if not rows:
        return
    table = table_of(model)
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(list(rows))
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(list(rows))
    else:
        raise RuntimeError(f"upsert is not implemented for {dialect}")
    columns = (
        list(update_columns)
        if update_columns is not None
        else [name for name in rows[0] if name not in keys]
    )
    if columns:
        guard = None
        if newer_by is not None:
            current = table.c[newer_by]
            guard = current.is_(None) | (current <= stmt.excluded[newer_by])
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: stmt.excluded[name] for name in columns},
            where=guard,
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    await session.execute(stmt)


def _validate_shop(base_url: str, key: str, timezone: str) -> None:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationFailed("the shop URL must be an http(s) URL such as https://shop.example")
    if parts.query or parts.fragment:
        raise ValidationFailed("the shop URL must not carry a query or fragment")
    if len(key) != WEBSERVICE_KEY_LENGTH or not key.isalnum():
        raise ValidationFailed("a Webservice key is 32 letters and digits")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(f"unknown time zone {timezone!r}") from exc


async def _require_tenant(session: AsyncSession, tenant_id: str) -> None:
    if await session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id} does not exist")


async def set_shop_connection(
    session: AsyncSession,
    *,
    tenant_id: str,
    site_id: str,
    base_url: str,
    key: str,
    box: SecretBox,
    guard: ShopUrlGuard,
    timezone: str = "UTC",
    make_default: bool = False,
) -> ShopConnection:
    """Create or replace the tenant's shop `site_id`; the first shop becomes the default.

    `guard` refuses URLs whose host is (or resolves to) a non-public address (422)."""
    _validate_shop(base_url, key, timezone)
    await _require_tenant(session, tenant_id)
    try:
        await guard.check_url(base_url)
    except UnsafeShopUrl as exc:
        raise ValidationFailed(f"base_url: {exc}") from None
    now = utcnow()
    rows = await list_shop_connections(session, tenant_id=tenant_id)
    row = next((r for r in rows if r.site_id == site_id), None)
    if row is None:
        row = ShopConnection(
            id=uuid7(),
            tenant_id=tenant_id,
            site_id=site_id,
            base_url=base_url.rstrip("/"),
            key_encrypted=box.encrypt(key),
            timezone=timezone,
            is_default=not rows,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    else:
        row.base_url = base_url.rstrip("/")
        row.key_encrypted = box.encrypt(key)
        row.timezone = timezone
        row.updated_at = now
    if make_default and not row.is_default:
        await session.execute(
            update(table_of(ShopConnection))
            .where(table_of(ShopConnection).c.tenant_id == tenant_id)
            .values(is_default=False)
        )
        row.is_default = True
    await session.flush()
    return row


async def list_shop_connections(session: AsyncSession, *, tenant_id: str) -> list[ShopConnection]:
    result = await session.execute(
        select(ShopConnection)
        .where(ShopConnection.tenant_id == tenant_id)
        .order_by(ShopConnection.site_id)
    )
    return list(result.scalars().all())


async def get_shop_connection(
    session: AsyncSession, *, tenant_id: str, site_id: str | None
) -> ShopConnection | None:
    """The shop `site_id`, or with None the default shop (or the only one)."""
    rows = await list_shop_connections(session, tenant_id=tenant_id)
    if site_id is not None:
        return next((r for r in rows if r.site_id == site_id), None)
    default = next((r for r in rows if r.is_default), None)
    if default is None and len(rows) == 1:
        return rows[0]
    return default


async def set_email_sender(
    session: AsyncSession, *, tenant_id: str, address: str, display_name: str | None = None
) -> None:
    if "@" not in address or any(c in address for c in "\r\n<> "):
        raise ValidationFailed("the sender must be a plain address such as shop@example.com")
    if display_name and any(c in display_name for c in "\r\n"):
        raise ValidationFailed("the sender name must be one line")
    await _require_tenant(session, tenant_id)
    await upsert(
        session,
        EmailSender,
        [
            {
                "tenant_id": tenant_id,
                "address": address,
                "display_name": display_name,
                "updated_at": utcnow(),
            }
        ],
        keys=["tenant_id"],
    )


async def get_email_sender(session: AsyncSession, *, tenant_id: str) -> EmailSender | None:
    return await session.get(EmailSender, tenant_id)


async def get_watermark(
    session: AsyncSession, *, tenant_id: str, site_id: str, resource: str
) -> datetime | None:
    row = await session.get(PsSyncState, (tenant_id, site_id, resource))
    return row.watermark if row is not None else None


async def advance_watermark(
    session: AsyncSession,
    *,
    tenant_id: str,
    site_id: str,
    resource: str,
    watermark: datetime,
    job_id: str,
) -> None:
    """Move the watermark forward only (a late, older sync never moves it back)."""
    current = await get_watermark(session, tenant_id=tenant_id, site_id=site_id, resource=resource)
    if current is not None and current >= watermark:
        return
    await upsert(
        session,
        PsSyncState,
        [
            {
                "tenant_id": tenant_id,
                "site_id": site_id,
                "resource": resource,
                "watermark": watermark,
                "last_job_id": job_id,
                "updated_at": utcnow(),
            }
        ],
        keys=["tenant_id", "site_id", "resource"],
    )
