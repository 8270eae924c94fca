"""The accept fast path: plain submissions read nothing and answer like the full route."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime, build_runtime
from app.core.clock import ManualClock
from app.jobs.schemas import JobBatchResponse, JobPublic
from app.main import create_app
from app.settings import Settings
from tests.factories import TenantFactory, auth
from tests.support.asgi import asgi_client
from tests.support.statements import count_statements

pytestmark = pytest.mark.asyncio

ORDER = {"type": "sync-single-order", "orderId": 7, "siteId": "3"}


def _reads(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


async def test_a_plain_submission_reads_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    # The first request authenticates and reads the tenant's admission state.
    assert (await client.post("/v1/jobs", json=ORDER, headers=auth(key))).status_code == 202
    with count_statements(runtime.engine) as plain:
        single = await client.post("/v1/jobs", json=ORDER, headers=auth(key))
        batch = await client.post("/v1/jobs/batch", json={"jobs": [ORDER] * 3}, headers=auth(key))
    assert (single.status_code, batch.status_code) == (202, 202)
    assert _reads(plain) == []
    # An idempotency key needs the job table: the full route reads it.
    with count_statements(runtime.engine) as keyed:
        response = await client.post(
            "/v1/jobs", json=ORDER, headers={**auth(key), "Idempotency-Key": "k1"}
        )
    assert response.status_code == 202
    assert _reads(keyed) != []


async def test_the_fast_answer_is_the_documented_job(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    await client.post("/v1/jobs", json=ORDER, headers=auth(key))
    accepted = await client.post(
        "/v1/jobs",
        json=ORDER,
        headers={**auth(key), "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    )
    assert accepted.status_code == 202
    assert accepted.headers["content-type"] == "application/json"
    assert "ratelimit" in accepted.headers
    stored = await client.get(f"/v1/jobs/{accepted.json()['id']}", headers=auth(key))
    assert stored.status_code == 200
    assert accepted.json() == stored.json()
    assert accepted.json()["payload"] == {"orderId": 7, "siteId": "3"}
    batch = await client.post("/v1/jobs/batch", json={"jobs": [ORDER] * 2}, headers=auth(key))
    assert batch.status_code == 202
    for job in batch.json()["jobs"]:
        stored = await client.get(f"/v1/jobs/{job['id']}", headers=auth(key))
        assert job == stored.json()


async def test_the_fast_answer_is_written_as_the_model_writes_it(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    """Byte for byte what `JobPublic` / `JobBatchResponse` dump: field order, timestamps,
    non-ASCII text, floats, nested values, nulls."""
    key = (await tenants.create()).api_key
    await client.post("/v1/jobs", json=ORDER, headers=auth(key))
    event = {
        "type": "analytics-event",
        "name": "café.paid",
        "properties": {"amount": 12.5, "tiny": 1e-7, "tags": ["ü", None, True], "n": {"k": 2}},
    }
    single = await client.post("/v1/jobs", json=event, headers=auth(key))
    batch = await client.post("/v1/jobs/batch", json={"jobs": [event, ORDER]}, headers=auth(key))
    assert (single.status_code, batch.status_code) == (202, 202)
    assert list(single.json()) == list(JobPublic.model_fields)
    assert single.content == JobPublic.model_validate(single.json()).model_dump_json().encode()
    expected = JobBatchResponse.model_validate(batch.json()).model_dump_json().encode()
    assert batch.content == expected
    for job in [single.json(), *batch.json()["jobs"]]:
        stored = await client.get(f"/v1/jobs/{job['id']}", headers=auth(key))
        assert job == stored.json()


async def test_what_the_fast_path_does_not_take_gets_the_full_routes_answers(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    await client.post("/v1/jobs", json=ORDER, headers=auth(key))
    invalid = await client.post("/v1/jobs", json={"type": "sync-single-order"}, headers=auth(key))
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    wrong_tenant = await client.post(
        "/v1/jobs", json={**ORDER, "tenantId": "someone-else"}, headers=auth(key)
    )
    assert wrong_tenant.status_code == 403
    assert wrong_tenant.headers["content-type"] == "application/problem+json"
    text = await client.post(
        "/v1/jobs", content=b"{}", headers={**auth(key), "Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    too_many = await client.post("/v1/jobs/batch", json={"jobs": [ORDER] * 101}, headers=auth(key))
    assert too_many.status_code == 413
    unknown = await client.post("/v1/jobs", json=ORDER, headers=auth("jg_aaaaaaaa_nope"))
    assert unknown.status_code == 401


async def test_the_fast_path_keeps_what_the_middleware_does(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> None:
    """Plain submissions skip the middleware, not its rules: request id, body cap and the
    failed-authentication block are the same as on every other route."""
    runtime = build_runtime(
        settings.updated(auth_failures={"burst": 2, "window_seconds": 60}),
        clock=clock,
        engine=db_engine,
    )
    key = (await TenantFactory(runtime).create()).api_key
    app = create_app(runtime=runtime)
    cap = settings.http.max_request_bytes
    async with asgi_client(app, client=("198.51.100.7", 4321)) as client:
        await client.post("/v1/jobs", json=ORDER, headers=auth(key))  # warms key and tenant
        given = await client.post(
            "/v1/jobs", json=ORDER, headers={**auth(key), "X-Request-ID": "abc-123"}
        )
        made = await client.post("/v1/jobs/batch", json={"jobs": [ORDER]}, headers=auth(key))
        assert (given.status_code, made.status_code) == (202, 202)
        assert given.headers["x-request-id"] == "abc-123"
        assert len(made.headers["x-request-id"]) == 16
        assert given.headers.get_list("x-request-id") == ["abc-123"]
        # A refusal on the fast path is the application's problem+json, with the request id.
        foreign = await client.post(
            "/v1/jobs",
            json={**ORDER, "tenantId": "someone-else"},
            headers={**auth(key), "X-Request-ID": "r-403"},
        )
        assert foreign.status_code == 403
        assert foreign.headers["content-type"] == "application/problem+json"
        assert foreign.headers.get_list("x-request-id") == ["r-403"]
        oversized = await client.post(
            "/v1/jobs",
            content=b'{"type":"analytics-event","name":"' + b"x" * cap + b'"}',
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert oversized.status_code == 413
        # Blocked after its failed attempts, the address is refused even with a good key.
        for _ in range(2):
            assert (await client.get("/v1/jobs", headers=auth("nope"))).status_code == 401
        blocked = await client.post("/v1/jobs", json=ORDER, headers=auth(key))
        assert blocked.status_code == 429
        assert blocked.json()["type"].endswith("/auth-failures")
    await runtime.queue_engine.close()
    await runtime.committer.close()  # its writer's connection


async def test_the_queue_message_is_the_envelope_as_sent(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory
) -> None:
    """The envelope is encoded once, for its size check, and that text is the message body:
    the payload's keys in the order they came, non-ASCII as is, the size in bytes."""
    tenant = await tenants.create()
    event = {"type": "analytics-event", "name": "é", "properties": {"z": 1, "a": "ü€"}}
    for path, body in (("/v1/jobs", event), ("/v1/jobs/batch", {"jobs": [event]})):
        response = await client.post(path, json=body, headers=auth(tenant.api_key))
        assert response.status_code == 202, response.text
    messages = await runtime.queue_engine.peek("analytics-events", batch_size=10)
    assert len(messages) == 2
    for message in messages:
        envelope = json.loads(message.body)
        assert list(envelope) == [
            "idempotency_key",
            "job_id",
            "payload",
            "tenant_id",
            "trace",
            "type",
        ]
        assert list(envelope["payload"]["properties"]) == ["z", "a"]
        assert envelope["payload"]["properties"]["a"] == "ü€"
        assert envelope["tenant_id"] == tenant.tenant_id
        assert message.body == json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        assert message.size_bytes == len(message.body.encode())
