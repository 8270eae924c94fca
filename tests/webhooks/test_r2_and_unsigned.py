"""R2 notifications → process-image jobs; the opt-in unsigned ps_webhooks route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.jobs.models import Job
from app.tenants.schemas import TenantCreated
from app.webhooks import r2
from app.webhooks import service as webhooks_service
from app.webhooks.schemas import R2RuleCreate
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio


def notification(key: str, etag: str = "c846ff", action: str = "PutObject") -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key}
    if action != "DeleteObject":
        obj.update(size=65536, eTag=etag)
    return {
        "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
        "action": action,
        "bucket": "images",
        "object": obj,
        "eventTime": "2026-11-28T13:00:00.379Z",
    }


async def jobs(runtime: Runtime) -> list[Job]:
    async with runtime.sessionmaker() as session:
        return list((await session.execute(select(Job))).scalars().all())


@pytest_asyncio.fixture
async def tenant(tenants: TenantFactory, runtime: Runtime) -> TenantCreated:
    created = await tenants.create()
    async with runtime.sessionmaker() as session:
        for prefix, ops in (
            ("products/", [{"type": "thumbnail", "width": 200, "height": 200}]),
            ("products/hero/", [{"type": "alt-text"}]),
        ):
            await r2.add_rule(
                session,
                tenant_id=created.tenant_id,
                rule=R2RuleCreate.model_validate(
                    {"bucket": "images", "prefix": prefix, "operations": ops}
                ),
            )
        await session.commit()
    return created


class TestR2:
    async def test_created_object_makes_one_job_deduplicated_by_etag(
        self, client: httpx.AsyncClient, runtime: Runtime, tenant: TenantCreated
    ) -> None:
        headers = auth(tenant.api_key)
        first = await client.post(
            "/v1/webhooks/r2", json=notification("products/1.jpg"), headers=headers
        )
        assert first.status_code == 202, first.text
        [job_id] = first.json()["jobs"]
        again = await client.post(
            "/v1/webhooks/r2", json=notification("products/1.jpg"), headers=headers
        )
        assert again.status_code == 200
        assert again.json() == {"jobs": [job_id], "replay": True, "ignored": 0}
        [job] = await jobs(runtime)
        assert job.type == "process-image"
        assert job.queue == "image-processing"
        assert job.payload["key"] == "products/1.jpg"
        assert job.payload["operations"] == [{"type": "thumbnail", "width": 200, "height": 200}]
        # An overwrite is a new version (new eTag): a new job.
        newer = await client.post(
            "/v1/webhooks/r2", json=notification("products/1.jpg", etag="beef"), headers=headers
        )
        assert newer.status_code == 202
        assert newer.json()["jobs"] != [job_id]

    async def test_batch_longest_prefix_and_ignored_events(
        self, client: httpx.AsyncClient, runtime: Runtime, tenant: TenantCreated
    ) -> None:
        batch = {
            "messages": [
                notification("products/hero/a.png"),
                notification("elsewhere/b.png"),
                notification("products/c.png", action="DeleteObject"),
                {**notification("products/d.png"), "bucket": "other-bucket"},
            ]
        }
        response = await client.post("/v1/webhooks/r2", json=batch, headers=auth(tenant.api_key))
        assert response.status_code == 202
        [job] = await jobs(runtime)
        assert job.payload["operations"] == [{"type": "alt-text"}]
        assert response.json()["jobs"] == [job.id]
        # Why the other three made none: counted, the unmatched named, and a hint.
        assert response.json()["ignored"] == 3
        assert response.json()["unmatched"] == [
            "images/elsewhere/b.png",
            "other-bucket/products/d.png",
        ]
        assert "matched no R2 rule" in response.json()["hint"]

    async def test_needs_credentials_and_a_valid_body(
        self, client: httpx.AsyncClient, tenant: TenantCreated
    ) -> None:
        assert (await client.post("/v1/webhooks/r2", json=notification("x"))).status_code == 401
        bad = await client.post(
            "/v1/webhooks/r2", json={"bucket": "images"}, headers=auth(tenant.api_key)
        )
        assert bad.status_code == 422

    async def test_rules_are_per_tenant(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        tenants: TenantFactory,
        tenant: TenantCreated,
    ) -> None:
        other = await tenants.create("other")
        response = await client.post(
            "/v1/webhooks/r2", json=notification("products/1.jpg"), headers=auth(other.api_key)
        )
        assert response.status_code == 202
        # Backwards compatible (`jobs` and `replay` as before), plus why nothing was made.
        assert response.json() == {
            "jobs": [],
            "replay": False,
            "ignored": 1,
            "unmatched": ["images/products/1.jpg"],
            "hint": (
                "the tenant has no R2 rule: add one (POST /v1/admin/tenants/{tenant_id}/r2-rules) "
                "for the bucket and key prefix"
            ),
        }
        assert await jobs(runtime) == []


class TestUnsigned:
    async def test_opt_in_token_authenticates_and_maps_entities(
        self, client: httpx.AsyncClient, runtime: Runtime, tenant: TenantCreated
    ) -> None:
        base = f"/v1/webhooks/prestashop/{tenant.tenant_id}/unsigned"
        payload = {"action": "add", "entity": "Order", "data": {"id": 42, "id_shop": 1}}
        # Not enabled yet: the route does not exist for this tenant.
        assert (await client.post(f"{base}/whatever", json=payload)).status_code == 404
        async with runtime.sessionmaker() as session:
            token = await webhooks_service.enable_unsigned_route(
                session, tenant_id=tenant.tenant_id
            )
            await session.commit()
        assert (await client.post(f"{base}/wrong-token", json=payload)).status_code == 401
        accepted = await client.post(f"{base}/{token}", json=payload)
        assert accepted.status_code == 202, accepted.text
        [job] = await jobs(runtime)
        assert job.type == "sync-single-order"
        assert job.payload["orderId"] == 42
        ignored = await client.post(
            f"{base}/{token}", json={"action": "update", "entity": "Customer", "data": {"id": 1}}
        )
        assert ignored.status_code == 202
        assert ignored.json()["jobs"] == []
        malformed = await client.post(
            f"{base}/{token}", json={"action": "add", "entity": "Order", "data": {}}
        )
        assert malformed.status_code == 422

    async def test_identical_bodies_are_deduplicated(
        self, client: httpx.AsyncClient, runtime: Runtime, tenant: TenantCreated
    ) -> None:
        async with runtime.sessionmaker() as session:
            token = await webhooks_service.enable_unsigned_route(
                session, tenant_id=tenant.tenant_id
            )
            await session.commit()
        url = f"/v1/webhooks/prestashop/{tenant.tenant_id}/unsigned/{token}"
        body = b'{"action":"update","entity":"Order","data":{"id":7}}'
        first = await client.post(url, content=body)
        second = await client.post(url, content=body)
        assert first.status_code == 202
        assert second.status_code == 200
        assert second.json()["jobs"] == first.json()["jobs"]
        async with runtime.sessionmaker() as session:
            count = (await session.execute(select(func.count()).select_from(Job))).scalar_one()
        assert count == 1
