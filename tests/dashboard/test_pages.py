"""Every dashboard route answers who may call it; the read-only pages show the right data."""

from __future__ import annotations

import httpx
import pytest
from fastapi.routing import APIRoute

from app.bootstrap import Runtime
from app.consumer.models import CircuitBreaker
from app.core.clock import to_datetime
from app.dashboard.router import router as dashboard_router
from tests.dashboard.conftest import BROWSER, TenantKeys, login, submit
from tests.factories import auth

pytestmark = pytest.mark.asyncio
PUBLIC = {"/dashboard/login"}
SAMPLE_ID = "01a22fc4-1bc8-734d-9cb8-77daf67cf58a"


def _dashboard_routes() -> list[tuple[str, str]]:
    routes = []
    for route in dashboard_router.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/dashboard"):
            if route.path in PUBLIC or route.path == "/dashboard/logout":
                continue
            path = route.path.replace("{job_id}", SAMPLE_ID).replace("{schedule_id}", SAMPLE_ID)
            path = path.replace("{name}", "analytics-events")
            routes.extend((method, path) for method in sorted(route.methods))
    return routes


async def test_every_route_needs_an_operator_or_a_tenant_admin(
    client: httpx.AsyncClient, runtime: Runtime, tenant_a: TenantKeys
) -> None:
    routes = _dashboard_routes()
    assert len(routes) >= 15, routes
    for method, path in routes:
        anonymous = await client.request(method, path, headers={"Accept": "application/json"})
        assert anonymous.status_code == 401, (method, path)
        writer = await client.request(method, path, headers=auth(tenant_a.writer))
        assert writer.status_code == 403, (method, path)
        if method == "GET":
            browser = await client.request(method, path, headers=BROWSER)
            assert browser.status_code == 303, (method, path)
            assert browser.headers["location"].startswith("/dashboard/login?next=")


async def test_logout_needs_a_session_and_its_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/dashboard/logout", headers={"Accept": "application/json"})
    assert response.status_code == 401


async def test_jobs_page_filters(
    client: httpx.AsyncClient, tenant_a: TenantKeys, tenant_b: TenantKeys, operator_key: str
) -> None:
    mine = await submit(client, tenant_a.writer, "mine")
    theirs = await submit(client, tenant_b.writer, "theirs")
    email = await client.post(
        "/v1/jobs",
        json={"type": "sync-orders", "siteId": "shop-1"},
        headers=auth(tenant_a.writer),
    )
    assert email.status_code == 202, email.text
    orders = email.json()["id"]
    headers = auth(operator_key)

    async def listed(query: str) -> set[str]:
        page = await client.get(f"/dashboard/jobs?{query}", headers=headers)
        assert page.status_code == 200, page.text
        return {job for job in (mine, theirs, orders) if job in page.text}

    assert await listed("") == {mine, theirs, orders}
    assert await listed(f"tenant={tenant_b.tenant_id}") == {theirs}
    assert await listed("type=sync-orders") == {orders}
    assert await listed("queue=analytics-events") == {mine, theirs}
    assert await listed("status=queued&queue=prestashop-sync") == {orders}
    assert await listed("status=dead") == set()
    bad = await client.get("/dashboard/jobs?status=nope", headers=headers)
    assert bad.status_code == 422
    bad_type = await client.get("/dashboard/jobs?type=nope", headers=headers)
    assert bad_type.status_code == 422
    live = await client.get("/dashboard/jobs", headers=headers)
    assert '<meta http-equiv="refresh" content="3">' in live.text  # queued jobs listed


async def test_breakers_page_shows_the_viewers_tenant_only(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant_a: TenantKeys,
    tenant_b: TenantKeys,
    operator_key: str,
) -> None:
    now = to_datetime(runtime.clock.now_ms())
    async with runtime.sessionmaker() as session:
        session.add_all(
            [
                CircuitBreaker(
                    tenant_id=tenant_a.tenant_id,
                    job_type="send-email",
                    state="open",
                    failures=5,
                    opened_at_ms=runtime.clock.now_ms(),
                    last_error="SMTP 421 from alpha",
                    updated_at=now,
                ),
                CircuitBreaker(
                    tenant_id=tenant_b.tenant_id,
                    job_type="sync-orders",
                    state="half_open",
                    failures=5,
                    last_error="502 from bravo",
                    updated_at=now,
                ),
                CircuitBreaker(
                    tenant_id=tenant_b.tenant_id,
                    job_type="process-image",
                    state="closed",
                    failures=0,
                    updated_at=now,
                ),
            ]
        )
        await session.commit()
    await login(client, tenant_a.admin)
    mine = await client.get("/dashboard/breakers", headers=BROWSER)
    assert "SMTP 421 from alpha" in mine.text
    assert "502 from bravo" not in mine.text
    everyone = await client.get("/dashboard/breakers", headers=auth(operator_key))
    assert "SMTP 421 from alpha" in everyone.text
    assert "502 from bravo" in everyone.text
    assert "process-image" not in everyone.text  # closed and clean: nothing to show
