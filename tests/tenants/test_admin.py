"""The admin API: tenants, keys, webhook secrets, shops, R2 rules, the unsigned route."""

from __future__ import annotations

import httpx
import pytest

from app.tenants.schemas import Scope
from tests.factories import TenantFactory, auth
from tests.tenants.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.asyncio

ADMIN = auth(ADMIN_TOKEN)
ORDER = {"type": "sync-single-order", "orderId": 1}


async def new_tenant(client: httpx.AsyncClient, name: str = "acme") -> dict[str, str]:
    response = await client.post("/v1/admin/tenants", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


class TestAccess:
    async def test_no_credentials_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/admin/tenants")
        assert response.status_code == 401
        assert "www-authenticate" in response.headers

    async def test_tenant_key_without_admin_scope_is_403(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        created = await tenants.create()
        response = await client.get("/v1/admin/tenants", headers=auth(created.api_key))
        assert response.status_code == 403

    async def test_admin_scoped_key_manages_only_its_own_tenant(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        created = await tenants.create()
        key = await tenants.key(created.tenant_id, scopes=[Scope.admin])
        own = await client.get(f"/v1/admin/tenants/{created.tenant_id}", headers=auth(key))
        assert own.status_code == 200
        assert (await client.get("/v1/admin/tenants", headers=auth(key))).status_code == 403


class TestTenantsAndKeys:
    async def test_create_list_and_duplicate(self, client: httpx.AsyncClient) -> None:
        created = await new_tenant(client)
        assert created["api_key"].startswith("jg_")
        assert created["webhook_secret"].startswith("whsec_")
        listed = (await client.get("/v1/admin/tenants", headers=ADMIN)).json()["data"]
        assert [t["id"] for t in listed] == [created["tenant_id"]]
        again = await client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)
        assert again.status_code == 409
        missing = await client.get("/v1/admin/tenants/nope", headers=ADMIN)
        assert missing.status_code == 404

    async def test_key_create_list_by_prefix_and_revoke(self, client: httpx.AsyncClient) -> None:
        tenant = await new_tenant(client)
        base = f"/v1/admin/tenants/{tenant['tenant_id']}/api-keys"
        made = await client.post(base, json={"scopes": ["jobs:read"], "name": "ro"}, headers=ADMIN)
        assert made.status_code == 201
        key = made.json()
        assert key["scopes"] == ["jobs:read"]
        everything = (await client.get(base, headers=ADMIN)).json()["data"]
        assert len(everything) == 2
        assert all("api_key" not in k for k in everything)
        by_prefix = await client.get(base, params={"prefix": key["prefix"]}, headers=ADMIN)
        assert [k["id"] for k in by_prefix.json()["data"]] == [key["id"]]
        assert (await client.get("/v1/jobs", headers=auth(key["api_key"]))).status_code == 200
        revoked = await client.delete(f"{base}/{key['id']}", headers=ADMIN)
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert (await client.get("/v1/jobs", headers=auth(key["api_key"]))).status_code == 401
        assert (await client.delete(f"{base}/nope", headers=ADMIN)).status_code == 404


class TestWebhookSecrets:
    async def test_rotate_with_overlap_then_revoke(self, client: httpx.AsyncClient) -> None:
        tenant = await new_tenant(client)
        base = f"/v1/admin/tenants/{tenant['tenant_id']}/webhook-secrets"
        [first] = (await client.get(base, headers=ADMIN)).json()["data"]
        assert "secret" not in first
        lone = await client.delete(f"{base}/{first['id']}", headers=ADMIN)
        assert lone.status_code == 409  # never lock a shop out
        rotated = await client.post(base, headers=ADMIN)
        assert rotated.status_code == 201
        assert rotated.json()["secret"].startswith("whsec_")
        listed = (await client.get(base, headers=ADMIN)).json()["data"]
        assert [s["revoked_at"] for s in listed] == [None, None]
        done = await client.delete(f"{base}/{first['id']}", headers=ADMIN)
        assert done.status_code == 200
        assert done.json()["revoked_at"] is not None


class TestShops:
    async def test_set_and_list_without_the_key(self, client: httpx.AsyncClient) -> None:
        tenant = await new_tenant(client)
        base = f"/v1/admin/tenants/{tenant['tenant_id']}/shops"
        body = {"base_url": "https://shop.example", "webservice_key": "K" * 32}
        saved = await client.put(f"{base}/main", json=body, headers=ADMIN)
        assert saved.status_code == 200, saved.text
        assert saved.json()["is_default"] is True
        listed = (await client.get(base, headers=ADMIN)).json()["data"]
        assert [s["site_id"] for s in listed] == ["main"]
        assert "K" * 32 not in str(listed)
        bad = await client.put(
            f"{base}/main", json={**body, "webservice_key": "short"}, headers=ADMIN
        )
        assert bad.status_code == 422


class TestIngressSettings:
    async def test_r2_rules(self, client: httpx.AsyncClient) -> None:
        tenant = await new_tenant(client)
        base = f"/v1/admin/tenants/{tenant['tenant_id']}/r2-rules"
        rule = {"bucket": "images", "prefix": "products/", "operations": [{"type": "alt-text"}]}
        made = await client.post(base, json=rule, headers=ADMIN)
        assert made.status_code == 201
        assert (await client.post(base, json=rule, headers=ADMIN)).status_code == 409
        assert len((await client.get(base, headers=ADMIN)).json()) == 1
        gone = await client.delete(f"{base}/{made.json()['id']}", headers=ADMIN)
        assert gone.status_code == 204
        assert (await client.get(base, headers=ADMIN)).json() == []

    async def test_unsigned_route_opt_in_and_out(self, client: httpx.AsyncClient) -> None:
        tenant = await new_tenant(client)
        base = f"/v1/admin/tenants/{tenant['tenant_id']}/unsigned-webhook"
        made = await client.post(base, headers=ADMIN)
        assert made.status_code == 201
        assert made.json()["path"].endswith(made.json()["token"])
        assert (await client.delete(base, headers=ADMIN)).status_code == 204
        assert (await client.delete(base, headers=ADMIN)).status_code == 404
