"""Per-tenant email policy at the door: recipients (none until configured, domains, any),
the send rate (429 + Retry-After), link variables (http/https only), admin route and CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime
from app.core.db import metadata
from app.jobs.models import Job
from tests.admission.conftest import Gateway, MakeGateway
from tests.factories import TenantFactory, auth
from tests.support.servers import CommandFailed, jobgate_env, run_jobgate

pytestmark = pytest.mark.asyncio

ADMIN_TOKEN = "operator-token-for-email-policy-tests"
ADMIN = auth(ADMIN_TOKEN)


def email(to: str, **variables: Any) -> dict[str, Any]:
    return {
        "type": "send-email",
        "to": to,
        "subject": "Hi",
        "templateId": "notification",
        "variables": {"message": "hello", **variables},
    }


async def _jobs(runtime: Runtime) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Job))).scalar_one())


async def _gateway(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(root={"security": {"admin_token": ADMIN_TOKEN}})


async def _set(gateway: Gateway, tenant_id: str, body: dict[str, Any]) -> Any:
    return await gateway.http.put(
        f"/v1/admin/tenants/{tenant_id}/email-policy", json=body, headers=ADMIN
    )


class TestRecipients:
    async def test_a_new_tenant_may_send_no_email_until_a_policy_is_set(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await _gateway(make_gateway)
        tenant = await tenants.create()
        got = await gateway.http.get(
            f"/v1/admin/tenants/{tenant.tenant_id}/email-policy", headers=ADMIN
        )
        assert got.status_code == 200
        assert got.json()["configured"] is False
        refused = await gateway.http.post(
            "/v1/jobs", json=email("victim@example.com"), headers=auth(tenant.api_key)
        )
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"] == ["body", "to"]
        assert "no email policy" in refused.json()["detail"]
        assert await _jobs(gateway.runtime) == 0
        # Other job types are unaffected.
        ok = await gateway.http.post(
            "/v1/jobs",
            json={"type": "analytics-event", "name": "x"},
            headers=auth(tenant.api_key),
        )
        assert ok.status_code == 202

    async def test_only_listed_domains_then_any(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await _gateway(make_gateway)
        tenant = await tenants.create()
        key = auth(tenant.api_key)
        put = await _set(gateway, tenant.tenant_id, {"domains": ["Shop.Example", "acme.com"]})
        assert put.status_code == 200, put.text
        assert put.json()["domains"] == ["acme.com", "shop.example"]
        assert put.json()["rate"] == "100/hour"
        allowed = await gateway.http.post("/v1/jobs", json=email("ana@SHOP.example"), headers=key)
        assert allowed.status_code == 202
        # A subdomain or a look-alike is another domain.
        for to in ("x@evil.example", "x@sub.shop.example", "x@shop.example.evil.com"):
            refused = await gateway.http.post("/v1/jobs", json=email(to), headers=key)
            assert refused.status_code == 422, to
            assert "not allow this recipient domain" in refused.json()["detail"]
        batch = await gateway.http.post(
            "/v1/jobs/batch",
            json={"jobs": [email("a@acme.com"), email("b@gmail.com")]},
            headers=key,
        )
        assert batch.status_code == 422
        assert batch.json()["errors"][0]["loc"] == ["body", "jobs", 1, "to"]
        assert "jobs.1.to" in batch.json()["detail"]
        assert await _jobs(gateway.runtime) == 1  # the batch stored nothing

        assert (await _set(gateway, tenant.tenant_id, {"allow_any": True})).status_code == 200
        anyone = await gateway.http.post("/v1/jobs", json=email("b@gmail.com"), headers=key)
        assert anyone.status_code == 202
        # An empty list closes email again.
        assert (await _set(gateway, tenant.tenant_id, {"domains": []})).status_code == 200
        closed = await gateway.http.post("/v1/jobs", json=email("b@gmail.com"), headers=key)
        assert closed.status_code == 422

    async def test_schedules_are_checked_when_saved(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await _gateway(make_gateway)
        tenant = await tenants.create()
        await _set(gateway, tenant.tenant_id, {"domains": ["acme.com"]})
        body = {"name": "spam", "cron": "0 * * * *", "job": email("x@elsewhere.example")}
        refused = await gateway.http.post("/v1/schedules", json=body, headers=auth(tenant.api_key))
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"] == ["body", "job", "to"]

    @pytest.mark.parametrize(
        "body",
        [
            {"allow_any": True, "domains": ["a.example"]},
            {"domains": ["not a domain"]},
            {"domains": ["a.example"], "rate": "lots"},
            {"domains": ["a.example"], "extra": 1},
        ],
    )
    async def test_bad_policies_are_422(
        self, make_gateway: MakeGateway, tenants: TenantFactory, body: dict[str, Any]
    ) -> None:
        gateway = await _gateway(make_gateway)
        tenant = await tenants.create()
        assert (await _set(gateway, tenant.tenant_id, body)).status_code == 422

    async def test_unknown_tenant_is_404_and_a_tenant_key_is_not_an_admin(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await _gateway(make_gateway)
        assert (await _set(gateway, "no-such-tenant", {"allow_any": True})).status_code == 404
        tenant = await tenants.create()
        own = await gateway.http.put(
            f"/v1/admin/tenants/{tenant.tenant_id}/email-policy",
            json={"allow_any": True},
            headers=auth(tenant.api_key),
        )
        assert own.status_code == 403


class TestRate:
    async def test_over_the_email_rate_is_429_with_retry_after(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await _gateway(make_gateway)
        tenant = await tenants.create()
        key = auth(tenant.api_key)
        await _set(gateway, tenant.tenant_id, {"allow_any": True, "rate": "2/hour"})
        for _ in range(2):
            ok = await gateway.http.post("/v1/jobs", json=email("a@b.example"), headers=key)
            assert ok.status_code == 202
        over = await gateway.http.post("/v1/jobs", json=email("a@b.example"), headers=key)
        assert over.status_code == 429
        assert "emails rate limit of 2 per hour" in over.json()["detail"]
        # Retry-After is capped by the admission settings (a client polls again by then).
        assert 60 <= int(over.headers["Retry-After"]) <= 3600
        # Only email is limited by it.
        other = await gateway.http.post(
            "/v1/jobs", json={"type": "analytics-event", "name": "x"}, headers=key
        )
        assert other.status_code == 202
        assert await _jobs(gateway.runtime) == 3


class TestLinks:
    @pytest.mark.parametrize(
        "url",
        [
            "javascript:alert(document.cookie)",
            "JavaScript:alert(1)",
            " javascript:alert(1)",
            "data:text/html;base64,PHNjcmlwdD4=",
            "//evil.example/x",
            "https://",
            "https://ok.example/\njavascript:1",
        ],
    )
    async def test_link_variables_must_be_http_urls(
        self, make_gateway: MakeGateway, tenants: TenantFactory, url: str
    ) -> None:
        gateway = await _gateway(make_gateway)
        tenant = await tenants.create(email_any=True)
        job = {**email("a@b.example", trackingUrl=url), "templateId": "order-shipped"}
        job["variables"]["orderId"] = 1
        refused = await gateway.http.post("/v1/jobs", json=job, headers=auth(tenant.api_key))
        assert refused.status_code == 422, refused.text
        assert "variables.trackingUrl" in refused.json()["errors"][0]["msg"]

    async def test_http_and_https_links_are_accepted(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await _gateway(make_gateway)
        tenant = await tenants.create(email_any=True)
        for url in ("https://track.example/p?id=1", "http://track.example/"):
            job = email("a@b.example", trackingUrl=url, nested={"shopLink": url})
            response = await gateway.http.post("/v1/jobs", json=job, headers=auth(tenant.api_key))
            assert response.status_code == 202, response.text
        nested = email("a@b.example", nested={"shopLink": "javascript:1"})
        refused = await gateway.http.post("/v1/jobs", json=nested, headers=auth(tenant.api_key))
        assert refused.status_code == 422
        assert "variables.nested.shopLink" in refused.json()["errors"][0]["msg"]


@pytest.mark.slow
async def test_cli_sets_and_shows_the_policy(
    database: tuple[str, str | None], tenants: TenantFactory
) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema)
    tenant = await tenants.create()
    shown = json.loads(run_jobgate("email-policy", "get", tenant.tenant_id, env=env))
    assert shown["configured"] is False
    assert shown["domains"] == []
    out = run_jobgate(
        "email-policy",
        "set",
        tenant.tenant_id,
        "--domains",
        "a.example,B.example",
        "--rate",
        "50/hour",
        env=env,
    )
    assert json.loads(out)["domains"] == ["a.example", "b.example"]
    assert json.loads(out)["rate"] == "50/hour"
    out = run_jobgate("email-policy", "set", tenant.tenant_id, "--any", env=env)
    assert json.loads(out)["allow_any"] is True
    with pytest.raises(CommandFailed):
        run_jobgate(
            "email-policy", "set", tenant.tenant_id, "--any", "--domains", "a.example", env=env
        )
    with pytest.raises(CommandFailed):
        run_jobgate("email-policy", "set", "no-such-tenant", "--any", env=env)


def _diff(connection: Connection) -> list[Any]:
    def ours(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table == "email_policy"

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": ours}
    )
    return list(compare_metadata(context, metadata))


async def test_migration_matches_the_model(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
