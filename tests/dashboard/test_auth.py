"""Dashboard authentication: login cookie, bearer header, CSRF, roles and tenant isolation."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime, build_runtime
from app.core.clock import ManualClock
from app.dashboard.sessions import SESSION_COOKIE, SESSION_SECONDS
from app.main import create_app
from app.settings import Settings
from app.tenants import service as tenants_service
from tests.dashboard.conftest import (
    BROWSER,
    TenantKeys,
    csrf_of,
    login,
    operator_key_for,
    submit,
)
from tests.factories import auth
from tests.support.asgi import asgi_client

pytestmark = pytest.mark.asyncio


def _set_cookie_header(response: httpx.Response) -> str:
    headers = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    [session] = [h for h in headers if h.startswith(f"{SESSION_COOKIE}=")]
    return session


class TestLogin:
    async def test_browser_without_session_is_sent_to_login_and_a_script_gets_401(
        self, client: httpx.AsyncClient
    ) -> None:
        page = await client.get("/dashboard/jobs?status=dead", headers=BROWSER)
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/login?next=/dashboard/jobs%3Fstatus%3Ddead"
        api = await client.get("/dashboard/jobs", headers={"Accept": "application/json"})
        assert api.status_code == 401
        assert api.headers["content-type"] == "application/problem+json"

    async def test_operator_login_sets_an_encrypted_strict_httponly_cookie(
        self, client: httpx.AsyncClient, operator_key: str, runtime: Runtime
    ) -> None:
        response = await login(client, operator_key)
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard"
        cookie = _set_cookie_header(response)
        attributes = {part.strip().lower() for part in cookie.split(";")}
        assert "httponly" in attributes
        assert "samesite=strict" in attributes
        assert "path=/dashboard" in attributes
        assert f"max-age={SESSION_SECONDS}" in attributes
        assert "secure" not in attributes  # plain http here; see the https test
        value = cookie.split(";", 1)[0].split("=", 1)[1]
        assert operator_key not in value
        assert operator_key.split("_")[2] not in value
        home = await client.get("/dashboard", headers=BROWSER)
        assert home.status_code == 200
        for queue in runtime.topology.queues:
            assert f'data-queue="{queue}"' in home.text
        assert home.headers["x-frame-options"] == "DENY"
        assert "default-src 'self'" in home.headers["content-security-policy"]

    async def test_cookie_is_secure_over_https(self, runtime: Runtime, operator_key: str) -> None:
        async with asgi_client(create_app(runtime=runtime)) as http:
            http.base_url = httpx.URL("https://test")
            response = await login(http, operator_key)
        assert response.status_code == 303
        attributes = {p.strip().lower() for p in _set_cookie_header(response).split(";")}
        assert "secure" in attributes

    async def test_wrong_key_is_401_and_no_session(self, client: httpx.AsyncClient) -> None:
        response = await login(client, "jgo_deadbeef_" + "x" * 43)
        assert response.status_code == 401
        assert "This key is not valid." in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
        again = await client.get("/dashboard", headers=BROWSER)
        assert again.status_code == 303

    async def test_login_form_needs_its_csrf_token(
        self, client: httpx.AsyncClient, operator_key: str
    ) -> None:
        page = await client.get("/dashboard/login", headers=BROWSER)
        forged = await client.post(
            "/dashboard/login", data={"key": operator_key, "csrf": "0" * 64}, headers=BROWSER
        )
        assert forged.status_code == 403
        client.cookies.clear()  # a third-party page has no login cookie of ours
        no_cookie = await client.post(
            "/dashboard/login",
            data={"key": operator_key, "csrf": csrf_of(page.text)},
            headers=BROWSER,
        )
        assert no_cookie.status_code == 403
        assert SESSION_COOKIE not in no_cookie.headers.get("set-cookie", "")

    async def test_next_never_leaves_the_dashboard(
        self, client: httpx.AsyncClient, operator_key: str
    ) -> None:
        page = await client.get("/dashboard/login?next=//evil.example/x", headers=BROWSER)
        response = await client.post(
            "/dashboard/login",
            data={"key": operator_key, "csrf": csrf_of(page.text), "next": "https://evil.example"},
            headers=BROWSER,
        )
        assert response.headers["location"] == "/dashboard"

    async def test_a_key_without_admin_scope_is_refused(
        self, client: httpx.AsyncClient, tenant_a: TenantKeys
    ) -> None:
        response = await login(client, tenant_a.writer)
        assert response.status_code == 403
        bearer = await client.get("/dashboard/jobs", headers=auth(tenant_a.writer))
        assert bearer.status_code == 403

    async def test_logout_ends_the_session(
        self, client: httpx.AsyncClient, operator_key: str
    ) -> None:
        await login(client, operator_key)
        page = await client.get("/dashboard/jobs", headers=BROWSER)
        out = await client.post(
            "/dashboard/logout", data={"csrf": csrf_of(page.text)}, headers=BROWSER
        )
        assert out.status_code == 303
        assert out.headers["location"] == "/dashboard/login"
        assert (await client.get("/dashboard/jobs", headers=BROWSER)).status_code == 303

    async def test_tampered_expired_and_revoked_sessions_are_refused(
        self, client: httpx.AsyncClient, operator_key: str, clock: ManualClock, runtime: Runtime
    ) -> None:
        await login(client, operator_key)
        value = client.cookies[SESSION_COOKIE]

        def use(cookie: str) -> None:
            client.cookies.clear()
            client.cookies.set(SESSION_COOKIE, cookie, domain="test.local", path="/dashboard")

        use(value[:-6] + "AAAAAA")
        assert (await client.get("/dashboard", headers=BROWSER)).status_code == 303
        use(value)
        assert (await client.get("/dashboard", headers=BROWSER)).status_code == 200
        clock.advance(seconds=SESSION_SECONDS + 61)
        assert (await client.get("/dashboard", headers=BROWSER)).status_code == 303

        client.cookies.clear()
        await login(client, operator_key)
        assert (await client.get("/dashboard", headers=BROWSER)).status_code == 200
        async with runtime.sessionmaker() as session:
            [key] = await tenants_service.list_operator_keys(session)
            await tenants_service.revoke_operator_key(session, key_id=key.id)
            await session.commit()
        runtime.credentials.key_cache.clear()
        assert (await client.get("/dashboard", headers=BROWSER)).status_code == 303


class TestCsrf:
    async def _schedule(self, client: httpx.AsyncClient, key: str) -> str:
        created = await client.post(
            "/v1/schedules",
            json={
                "name": "views",
                "cron": "0 * * * *",
                "job": {"type": "analytics-event", "name": "x"},
            },
            headers=auth(key),
        )
        assert created.status_code == 201, created.text
        schedule_id: str = created.json()["id"]
        return schedule_id

    async def test_a_form_without_the_session_token_is_403(
        self, client: httpx.AsyncClient, tenant_a: TenantKeys
    ) -> None:
        schedule_id = await self._schedule(client, tenant_a.writer)
        await login(client, tenant_a.admin)
        path = f"/dashboard/schedules/{schedule_id}/pause"
        missing = await client.post(path, data={}, headers={"Accept": "application/json"})
        assert missing.status_code == 403
        assert missing.headers["content-type"] == "application/problem+json"
        wrong = await client.post(path, data={"csrf": "1" * 64}, headers=BROWSER)
        assert wrong.status_code == 403
        shown = await client.get(f"/v1/schedules/{schedule_id}", headers=auth(tenant_a.writer))
        assert shown.json()["enabled"] is True

        page = await client.get("/dashboard/schedules", headers=BROWSER)
        assert f'data-schedule="{schedule_id}"' in page.text
        done = await client.post(path, data={"csrf": csrf_of(page.text)}, headers=BROWSER)
        assert done.status_code == 303
        shown = await client.get(f"/v1/schedules/{schedule_id}", headers=auth(tenant_a.writer))
        assert shown.json()["enabled"] is False

    async def test_a_bearer_script_needs_no_csrf_token(
        self, client: httpx.AsyncClient, tenant_a: TenantKeys, operator_key: str
    ) -> None:
        schedule_id = await self._schedule(client, tenant_a.writer)
        run = await client.post(
            f"/dashboard/schedules/{schedule_id}/run", data={}, headers=auth(operator_key)
        )
        assert run.status_code == 303
        job_id = run.headers["location"].rsplit("/", 1)[1]
        job = await client.get(f"/v1/jobs/{job_id}", headers=auth(tenant_a.writer))
        assert job.status_code == 200
        assert job.json()["type"] == "analytics-event"


class TestTenantIsolation:
    async def test_tenant_admin_sees_its_own_jobs_only(
        self,
        client: httpx.AsyncClient,
        tenant_a: TenantKeys,
        tenant_b: TenantKeys,
        operator_key: str,
    ) -> None:
        mine = await submit(client, tenant_a.writer, "mine")
        theirs = await submit(client, tenant_b.writer, "theirs")
        await login(client, tenant_a.admin)
        home = await client.get("/dashboard", headers=BROWSER)
        assert home.status_code == 303
        assert home.headers["location"] == "/dashboard/jobs"
        jobs = await client.get("/dashboard/jobs", headers=BROWSER)
        assert mine in jobs.text
        assert theirs not in jobs.text
        # The tenant filter is the operator's: a tenant admin's own tenant is forced.
        other = await client.get(f"/dashboard/jobs?tenant={tenant_b.tenant_id}", headers=BROWSER)
        assert theirs not in other.text
        assert (await client.get(f"/dashboard/jobs/{mine}", headers=BROWSER)).status_code == 200
        assert (await client.get(f"/dashboard/jobs/{theirs}", headers=BROWSER)).status_code == 404
        bearer = await client.get(f"/dashboard/jobs/{theirs}", headers=auth(tenant_a.admin))
        assert bearer.status_code == 404
        assert bearer.headers["content-type"] == "application/problem+json"

        operator = await client.get("/dashboard/jobs", headers=auth(operator_key))
        assert mine in operator.text
        assert theirs in operator.text
        one = await client.get(f"/dashboard/jobs/{theirs}", headers=auth(operator_key))
        assert one.status_code == 200
        assert '"name": "theirs"' in one.text

    async def test_another_tenants_schedule_is_404(
        self, client: httpx.AsyncClient, tenant_a: TenantKeys, tenant_b: TenantKeys
    ) -> None:
        created = await client.post(
            "/v1/schedules",
            json={
                "name": "b",
                "cron": "0 * * * *",
                "job": {"type": "analytics-event", "name": "b"},
            },
            headers=auth(tenant_b.writer),
        )
        schedule_id = created.json()["id"]
        for action in ("pause", "resume", "run"):
            response = await client.post(
                f"/dashboard/schedules/{schedule_id}/{action}",
                data={},
                headers=auth(tenant_a.admin),
            )
            assert response.status_code == 404, action
        page = await client.get("/dashboard/schedules", headers=auth(tenant_a.admin))
        assert schedule_id not in page.text


async def test_failed_logins_spend_the_addresss_auth_failure_budget(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> None:
    runtime = build_runtime(
        settings.updated(auth_failures={"burst": 3, "window_seconds": 60}),
        clock=clock,
        engine=db_engine,
    )
    try:
        operator_key = await operator_key_for(runtime)
        async with asgi_client(create_app(runtime=runtime)) as http:
            for _ in range(3):
                assert (await login(http, "jgo_deadbeef_" + "y" * 43)).status_code == 401
            blocked = await http.get("/dashboard/login", headers=BROWSER)
            assert blocked.status_code == 429
            assert "retry-after" in blocked.headers
            # Even the right key waits for the window to end.
            refused = await http.get("/dashboard", headers=auth(operator_key))
            assert refused.status_code == 429
    finally:
        await runtime.queue_engine.close()
