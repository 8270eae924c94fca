"""Dashboard fixtures: an operator key, tenants with admin keys, and logging in through the
login page the way a browser does (the form's CSRF token read from the page)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest_asyncio

from app.bootstrap import Runtime
from app.tenants import service as tenants_service
from app.tenants.schemas import Scope
from tests.factories import TenantFactory, auth

BROWSER = {"Accept": "text/html,application/xhtml+xml"}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page holds no CSRF token"
    return match.group(1)


async def login(client: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await client.get("/dashboard/login", headers=BROWSER)
    assert page.status_code == 200
    return await client.post(
        "/dashboard/login",
        data={"key": key, "csrf": csrf_of(page.text), "next": "/dashboard"},
        headers=BROWSER,
    )


@dataclass(frozen=True)
class TenantKeys:
    tenant_id: str
    admin: str  # admin scope: may use the dashboard
    writer: str  # jobs:write + jobs:read: may not


async def operator_key_for(runtime: Runtime) -> str:
    async with runtime.sessionmaker() as session:
        key, _ = await tenants_service.create_operator_key(session, name="dashboard-tests")
        await session.commit()
    return key


@pytest_asyncio.fixture
async def operator_key(runtime: Runtime) -> str:
    return await operator_key_for(runtime)


async def _tenant(tenants: TenantFactory, name: str) -> TenantKeys:
    created = await tenants.create(name)
    admin = await tenants.key(created.tenant_id, [Scope.admin])
    return TenantKeys(tenant_id=created.tenant_id, admin=admin, writer=created.api_key)


@pytest_asyncio.fixture
async def tenant_a(tenants: TenantFactory) -> TenantKeys:
    return await _tenant(tenants, "alpha")


@pytest_asyncio.fixture
async def tenant_b(tenants: TenantFactory) -> TenantKeys:
    return await _tenant(tenants, "bravo")


async def submit(client: httpx.AsyncClient, key: str, name: str = "page.view") -> str:
    response = await client.post(
        "/v1/jobs", json={"type": "analytics-event", "name": name}, headers=auth(key)
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id
