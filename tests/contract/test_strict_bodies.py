"""Request bodies take what the document says and nothing else (app/core/schemas.py).

Each case is a value lax pydantic would coerce (`0` for a boolean, a number for a string, a
Unix time for a date-time), sent by the tenant that owns the data; it must be a 422 naming the
field, and leave nothing behind. The accept fast path (a plain key, no idempotency key) and
the full route (an idempotency key) refuse alike.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.tenants.schemas import Scope
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio

AGENT = {"type": "agent-task", "agentType": "content-management"}
R2_EVENT = {
    "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
    "action": "PutObject",
    "bucket": "product-images",
    "object": {"key": "products/42/main.jpg", "size": 65536, "eTag": "c846ff"},
    "eventTime": "2026-11-28T13:00:00.000Z",
}

LAX_JOBS = [
    pytest.param({**AGENT, "dryRun": 0}, "dryRun", id="number-for-boolean"),
    pytest.param({"type": "sync-orders", "siteId": 1}, "siteId", id="number-for-string"),
    pytest.param({"type": "sync-single-order", "orderId": "42"}, "orderId", id="text-for-integer"),
    pytest.param({"type": "sync-single-order", "orderId": True}, "orderId", id="bool-for-integer"),
    pytest.param(
        {"type": "sync-orders", "siteId": "s", "lastDays": 2.5}, "lastDays", id="fraction"
    ),
    pytest.param(
        {"type": "analytics-event", "name": "n", "occurredAt": 0}, "occurredAt", id="unix-time"
    ),
    pytest.param(
        {"type": "analytics-event", "name": "n", "occurredAt": "1700000000"},
        "occurredAt",
        id="unix-time-as-text",
    ),
]


def _refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert field in [str(part) for error in response.json()["errors"] for part in error["loc"]]


async def _job_count(client: httpx.AsyncClient, key: str) -> int:
    page = await client.get("/v1/jobs", headers=auth(key))
    assert page.status_code == 200
    return len(page.json()["data"])


@pytest.mark.parametrize(("job", "field"), LAX_JOBS)
@pytest.mark.parametrize("idempotency_key", [None, "strict-1"], ids=["fast-path", "full-route"])
async def test_a_lax_job_is_refused_on_both_paths(
    client: httpx.AsyncClient,
    tenants: TenantFactory,
    job: dict[str, Any],
    field: str,
    idempotency_key: str | None,
) -> None:
    key = (await tenants.create()).api_key
    # Warm the key cache, so the plain submission really takes the fast path.
    assert (await client.post("/v1/jobs", json=AGENT, headers=auth(key))).status_code == 202
    headers = auth(key) | ({"Idempotency-Key": idempotency_key} if idempotency_key else {})
    _refused(await client.post("/v1/jobs", json=job, headers=headers), field)
    _refused(await client.post("/v1/jobs/batch", json={"jobs": [job]}, headers=auth(key)), field)
    assert await _job_count(client, key) == 1


async def test_what_json_schema_calls_an_integer_is_taken(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    job = {"type": "sync-orders", "siteId": "s", "lastDays": 3.0, "delay_seconds": 60.0}
    response = await client.post("/v1/jobs", json=job, headers=auth(key))
    assert response.status_code == 202, response.text
    assert response.json()["payload"]["lastDays"] == 3
    assert response.json()["delay_seconds"] == 60


async def test_a_unix_event_time_is_refused_by_the_r2_webhook(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    response = await client.post(
        "/v1/webhooks/r2", json={**R2_EVENT, "eventTime": 0}, headers=auth(key)
    )
    _refused(response, "eventTime")
    response = await client.post("/v1/webhooks/r2", json=R2_EVENT, headers=auth(key))
    assert response.status_code == 202, response.text


async def test_a_number_for_a_boolean_is_refused_by_tenant_routes(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    retry = await client.post(
        "/v1/jobs/retry", json={"status": "dead", "dry_run": 1}, headers=auth(key)
    )
    _refused(retry, "dry_run")
    schedule = {"name": "s", "cron": "0 * * * *", "job": AGENT, "enabled": 1}
    _refused(await client.post("/v1/schedules", json=schedule, headers=auth(key)), "enabled")
    listed = await client.get("/v1/schedules", headers=auth(key))
    assert listed.json()["count"] == 0


async def test_a_text_for_a_number_is_refused_by_the_tenant_admin(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    tenant = await tenants.create()
    admin = await tenants.key(tenant.tenant_id, [Scope.admin])
    path = f"/v1/admin/tenants/{tenant.tenant_id}/r2-rules"
    operation = {"type": "thumbnail", "width": "200", "height": 200}
    rule = {"bucket": "product-images", "operations": [operation]}
    _refused(await client.post(path, json=rule, headers=auth(admin)), "width")
    rules = await client.get(path, headers=auth(admin))
    assert rules.status_code == 200
    assert rules.json() == []
