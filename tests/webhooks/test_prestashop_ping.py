"""`POST /v1/webhooks/prestashop/{tenant_id}/ping`: the module's "test connection" button.

Who may call it: only a sender holding one of that tenant's webhook secrets (another
tenant's secret, a forged one or a stale timestamp is 401, the same answer as an unknown
tenant). It never creates a job or a webhook event, and says which shop events would sync.
"""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.handlers import service as handlers_service
from app.handlers.shop_url import ShopUrlGuard
from app.jobs.models import Job
from app.tenants.schemas import TenantCreated
from app.webhooks.models import WebhookEvent
from app.webhooks.verifiers import sign_headers
from tests.factories import TenantFactory

pytestmark = pytest.mark.asyncio

PING = json.dumps({"shop": {"id": "default", "url": "https://shop.example"}}).encode()


async def _ping(
    client: httpx.AsyncClient, clock: ManualClock, tenant_id: str, secret: str, body: bytes = PING
) -> httpx.Response:
    headers = sign_headers([secret], "msg_ping_1", clock.now_ms() // 1000, body)
    url = f"/v1/webhooks/prestashop/{tenant_id}/ping"
    return await client.post(url, content=body, headers=headers)


async def _rows(runtime: Runtime) -> tuple[int, int]:
    async with runtime.sessionmaker() as session:
        jobs = await session.execute(select(func.count()).select_from(Job))
        events = await session.execute(select(func.count()).select_from(WebhookEvent))
        return int(jobs.scalar_one()), int(events.scalar_one())


async def test_a_signed_ping_names_the_shop_and_creates_nothing(
    client: httpx.AsyncClient, clock: ManualClock, runtime: Runtime, tenants: TenantFactory
) -> None:
    tenant: TenantCreated = await tenants.create()
    before = await _rows(runtime)
    unregistered = await _ping(client, clock, tenant.tenant_id, tenant.webhook_secret)
    assert unregistered.status_code == 200, unregistered.text
    assert unregistered.json() == {"tenant_id": tenant.tenant_id, "site_id": None}

    async with runtime.sessionmaker() as session:
        await handlers_service.set_shop_connection(
            session,
            tenant_id=tenant.tenant_id,
            site_id="default",
            base_url="https://shop.example/",
            key="A" * 32,
            box=runtime.box,
            guard=ShopUrlGuard(),
        )
        await session.commit()
    registered = await _ping(client, clock, tenant.tenant_id, tenant.webhook_secret)
    assert registered.json() == {"tenant_id": tenant.tenant_id, "site_id": "default"}
    # The same webhook-id again is still only a check: pings are not recorded events.
    again = await _ping(client, clock, tenant.tenant_id, tenant.webhook_secret)
    assert again.status_code == 200
    assert await _rows(runtime) == before


async def test_wrong_secret_other_tenant_and_bad_body_are_refused(
    client: httpx.AsyncClient, clock: ManualClock, runtime: Runtime, tenants: TenantFactory
) -> None:
    tenant = await tenants.create()
    other = await tenants.create()
    before = await _rows(runtime)
    crossed = await _ping(client, clock, tenant.tenant_id, other.webhook_secret)
    assert crossed.status_code == 401
    assert crossed.headers["content-type"].startswith("application/problem+json")
    unknown = await _ping(client, clock, "no-such-tenant", tenant.webhook_secret)
    assert unknown.status_code == 401
    unsigned = await client.post(f"/v1/webhooks/prestashop/{tenant.tenant_id}/ping", content=PING)
    assert unsigned.status_code == 401
    malformed = await _ping(client, clock, tenant.tenant_id, tenant.webhook_secret, b'{"shop": 3}')
    assert malformed.status_code == 422
    assert await _rows(runtime) == before
