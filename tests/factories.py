"""Factories for test data, going through the real services."""

from __future__ import annotations

from collections.abc import Iterable

from app.admission import email_policy
from app.bootstrap import Runtime
from app.core.clock import to_datetime
from app.tenants import service as tenants_service
from app.tenants.schemas import DEFAULT_SCOPES, Scope, TenantCreated


class TenantFactory:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._count = 0

    async def create(self, name: str | None = None, *, email_any: bool = False) -> TenantCreated:
        """A tenant; with `email_any`, an email policy allowing any recipient (none by default)."""
        self._count += 1
        async with self.runtime.sessionmaker() as session:
            created = await tenants_service.create_tenant(
                session, name=name or f"tenant-{self._count}", box=self.runtime.box
            )
            if email_any:
                await email_policy.set_policy(
                    session,
                    tenant_id=created.tenant_id,
                    allow_any=True,
                    domains=[],
                    rate=None,
                    now=to_datetime(self.runtime.clock.now_ms()),
                )
            await session.commit()
        return created

    async def key(self, tenant_id: str, scopes: Iterable[Scope] = DEFAULT_SCOPES) -> str:
        async with self.runtime.sessionmaker() as session:
            key, _ = await tenants_service.create_api_key(
                session, tenant_id=tenant_id, scopes=scopes
            )
            await session.commit()
        return key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
