"""Scheduler test kit: a tenant, its key, a fixed starting time, a schedule maker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.core.clock import ManualClock
from app.tenants.schemas import TenantCreated
from tests.factories import TenantFactory, auth

# 2026-03-01 01:30 UTC: the next 3-hourly occurrence is 03:00.
START = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
ORDERS = {"type": "sync-orders", "siteId": "shop-1"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture
def start(clock: ManualClock) -> datetime:
    clock.set(ms(START))
    return START


@pytest_asyncio.fixture
async def tenant(tenants: TenantFactory) -> TenantCreated:
    return await tenants.create()


@pytest.fixture
def key(tenant: TenantCreated) -> str:
    return tenant.api_key


async def make_schedule(client: httpx.AsyncClient, key: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "orders-every-3h", "cron": "0 */3 * * *", "job": ORDERS, **fields}
    response = await client.post("/v1/schedules", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture(autouse=True)
def _start_before_the_gateway(request: pytest.FixtureRequest) -> None:
    """Tests on START set the clock before their gateway's scheduler loop first reads it: a
    clock moved back afterwards would make that loop fire schedules created later."""
    if "start" in request.fixturenames:
        request.getfixturevalue("start")
