"""The producer API: submit, read, list, idempotency, limits, auth, isolation."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.jobs.models import Job, JobEvent
from app.queues.models import QueueMessage
from app.tenants.schemas import Scope
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio

ORDER = {"type": "sync-single-order", "orderId": 42}


async def _count(runtime: Runtime, model: Any) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


@pytest_asyncio.fixture
async def key(tenants: TenantFactory) -> str:
    return (await tenants.create(email_any=True)).api_key


class TestSubmit:
    async def test_accepts_job_and_stores_job_event_and_message(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        response = await client.post("/v1/jobs", json=ORDER, headers=auth(key))
        assert response.status_code == 202
        body = response.json()
        assert body["type"] == "sync-single-order"
        assert body["queue"] == "prestashop-sync"
        assert body["status"] == "queued"
        assert body["payload"] == {"orderId": 42, "siteId": None}
        assert await _count(runtime, Job) == 1
        assert await _count(runtime, JobEvent) == 1
        pulled = await runtime.queue_engine.pull("prestashop-sync", batch_size=10)
        [message] = pulled.messages
        assert message.body["job_id"] == body["id"]
        assert message.body["type"] == "sync-single-order"
        assert message.body["payload"] == {"orderId": 42, "siteId": None}

    async def test_get_shows_queued(self, client: httpx.AsyncClient, key: str) -> None:
        created = (await client.post("/v1/jobs", json=ORDER, headers=auth(key))).json()
        response = await client.get(f"/v1/jobs/{created['id']}", headers=auth(key))
        assert response.status_code == 200
        assert response.json()["status"] == "queued"
        assert response.json()["attempts"] == 0
        assert response.json()["progress"] == 0

    @pytest.mark.parametrize(
        ("job", "queue"),
        [
            ({"type": "sync-orders", "siteId": "s1"}, "prestashop-sync"),
            ({"type": "sync-products", "siteId": "7"}, "prestashop-sync"),
            ({"type": "sync-single-order", "orderId": 1, "siteId": "s1"}, "prestashop-sync"),
            (
                {
                    "type": "send-email",
                    "to": "a@example.com",
                    "subject": "Hi",
                    "templateId": "welcome",
                    "variables": {"n": 1},
                    "priority": "high",
                },
                "email-sending",
            ),
            (
                {
                    "type": "process-image",
                    "key": "a.jpg",
                    "operations": [
                        {"type": "thumbnail", "width": 10, "height": 20},
                        {"type": "alt-text"},
                    ],
                },
                "image-processing",
            ),
            ({"type": "analytics-event", "name": "x", "properties": {"a": 1}}, "analytics-events"),
            ({"type": "agent-task", "agentType": "content-management"}, "ai-agent-tasks"),
        ],
    )
    async def test_every_job_type_routes_to_its_queue(
        self, client: httpx.AsyncClient, key: str, job: dict[str, Any], queue: str
    ) -> None:
        response = await client.post("/v1/jobs", json=job, headers=auth(key))
        assert response.status_code == 202, response.text
        assert response.json()["queue"] == queue

    async def test_defaults_are_filled_in(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.post(
            "/v1/jobs", json={"type": "sync-orders", "siteId": "s1"}, headers=auth(key)
        )
        assert response.json()["payload"] == {"siteId": "s1", "lastDays": 40, "bulkMode": True}

    async def test_delay_seconds_delays_delivery(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, key: str
    ) -> None:
        response = await client.post(
            "/v1/jobs", json={**ORDER, "delay_seconds": 60}, headers=auth(key)
        )
        assert response.status_code == 202
        assert response.json()["delay_seconds"] == 60
        assert (await runtime.queue_engine.pull("prestashop-sync")).messages == []
        clock.advance(seconds=60)
        assert len((await runtime.queue_engine.pull("prestashop-sync")).messages) == 1


class TestValidation:
    @pytest.mark.parametrize(
        ("job", "field"),
        [
            ({"type": "no-such-type"}, "type"),
            ({"orderId": 1}, "type"),
            ({"type": "sync-single-order"}, "orderId"),
            ({"type": "sync-single-order", "orderId": "abc"}, "orderId"),
            ({"type": "sync-single-order", "orderId": 0}, "orderId"),
            ({"type": "sync-orders", "siteId": "s", "lastDays": -1}, "lastDays"),
            ({"type": "send-email", "to": "not-an-email", "subject": "s", "templateId": "t"}, "to"),
            (
                {
                    "type": "send-email",
                    "to": "a@b.co",
                    "subject": "s",
                    "templateId": "t",
                    "priority": "urgent",
                },
                "priority",
            ),
            ({"type": "process-image", "key": "k", "operations": [{"type": "blur"}]}, "operations"),
            ({"type": "agent-task", "agentType": "a", "unexpected": 1}, "unexpected"),
            ({**ORDER, "delay_seconds": 86_401}, "delay_seconds"),
            ({**ORDER, "delay_seconds": -1}, "delay_seconds"),
        ],
    )
    async def test_bad_field_is_422_naming_it(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str, job: dict[str, Any], field: str
    ) -> None:
        response = await client.post("/v1/jobs", json=job, headers=auth(key))
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 422
        assert field in problem["detail"]
        assert any(field in [str(p) for p in error["loc"]] for error in problem["errors"])
        assert await _count(runtime, Job) == 0

    async def test_non_json_is_400(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.post(
            "/v1/jobs",
            content=b"{not json",
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
    async def test_wrong_content_type_is_415(
        self, client: httpx.AsyncClient, key: str, content_type: str
    ) -> None:
        response = await client.post(
            "/v1/jobs",
            content=json.dumps(ORDER).encode(),
            headers={**auth(key), "Content-Type": content_type},
        )
        assert response.status_code == 415
        assert response.json()["title"] == "Unsupported Media Type"

    async def test_missing_content_type_is_415(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.post(
            "/v1/jobs", content=json.dumps(ORDER).encode(), headers=auth(key)
        )
        assert response.status_code == 415

    async def test_payload_over_127900_bytes_is_413(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        job = {"type": "analytics-event", "name": "big", "properties": {"blob": "x" * 128_000}}
        response = await client.post("/v1/jobs", json=job, headers=auth(key))
        assert response.status_code == 413
        assert "127900" in response.json()["detail"]
        assert await _count(runtime, Job) == 0

    async def test_payload_just_under_the_limit_is_accepted(
        self, client: httpx.AsyncClient, key: str
    ) -> None:
        job = {"type": "analytics-event", "name": "big", "properties": {"blob": "x" * 127_000}}
        response = await client.post("/v1/jobs", json=job, headers=auth(key))
        assert response.status_code == 202

    async def test_request_body_over_the_cap_is_413(
        self, client: httpx.AsyncClient, key: str
    ) -> None:
        job = {"type": "analytics-event", "name": "big", "properties": {"blob": "x" * 2_000_000}}
        response = await client.post("/v1/jobs", json=job, headers=auth(key))
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        # Refused before routing, it still names the request like every other problem.
        assert response.json()["instance"] == "/v1/jobs"

    async def test_body_tenant_id_of_another_tenant_is_403(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        mine = await tenants.create()
        other = await tenants.create()
        response = await client.post(
            "/v1/jobs", json={**ORDER, "tenantId": other.tenant_id}, headers=auth(mine.api_key)
        )
        assert response.status_code == 403
        same = await client.post(
            "/v1/jobs", json={**ORDER, "tenantId": mine.tenant_id}, headers=auth(mine.api_key)
        )
        assert same.status_code == 202
        assert "tenantId" not in same.json()["payload"]


class TestIdempotency:
    async def test_repeat_returns_original_with_200(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        headers = {**auth(key), "Idempotency-Key": "order-42"}
        first = await client.post("/v1/jobs", json=ORDER, headers=headers)
        second = await client.post("/v1/jobs", json=ORDER, headers=headers)
        assert first.status_code == 202
        assert second.status_code == 200
        assert second.json()["id"] == first.json()["id"]
        assert await _count(runtime, Job) == 1
        assert await _count(runtime, QueueMessage) == 1

    async def test_same_key_different_body_is_409(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        headers = {**auth(key), "Idempotency-Key": "order-42"}
        await client.post("/v1/jobs", json=ORDER, headers=headers)
        response = await client.post("/v1/jobs", json={**ORDER, "orderId": 43}, headers=headers)
        assert response.status_code == 409
        assert await _count(runtime, Job) == 1

    async def test_keys_are_per_tenant(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        a, b = await tenants.create(), await tenants.create()
        ra = await client.post(
            "/v1/jobs", json=ORDER, headers={**auth(a.api_key), "Idempotency-Key": "k"}
        )
        rb = await client.post(
            "/v1/jobs", json=ORDER, headers={**auth(b.api_key), "Idempotency-Key": "k"}
        )
        assert ra.status_code == rb.status_code == 202
        assert ra.json()["id"] != rb.json()["id"]

    async def test_key_is_free_again_after_the_window(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, key: str
    ) -> None:
        headers = {**auth(key), "Idempotency-Key": "order-42"}
        first = await client.post("/v1/jobs", json=ORDER, headers=headers)
        clock.advance(seconds=runtime.settings.jobs.idempotency_window_seconds + 1)
        second = await client.post("/v1/jobs", json={**ORDER, "orderId": 7}, headers=headers)
        assert second.status_code == 202
        assert second.json()["id"] != first.json()["id"]
        # A repeat now answers with the new job.
        third = await client.post("/v1/jobs", json={**ORDER, "orderId": 7}, headers=headers)
        assert third.status_code == 200
        assert third.json()["id"] == second.json()["id"]


class TestBatch:
    async def test_batch_is_accepted_atomically(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        jobs = [
            ORDER,
            {"type": "analytics-event", "name": "x"},
            {"type": "send-email", "to": "a@example.com", "subject": "s", "templateId": "t"},
        ]
        response = await client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=auth(key))
        assert response.status_code == 202
        body = response.json()["jobs"]
        assert [j["queue"] for j in body] == [
            "prestashop-sync",
            "analytics-events",
            "email-sending",
        ]
        assert await _count(runtime, Job) == 3
        assert await _count(runtime, QueueMessage) == 3

    async def test_one_bad_job_rejects_the_whole_batch(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        jobs = [ORDER, {"type": "sync-single-order", "orderId": "x"}]
        response = await client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=auth(key))
        assert response.status_code == 422
        assert "jobs.1" in response.json()["detail"]
        assert await _count(runtime, Job) == 0

    async def test_more_than_100_jobs_is_413(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        response = await client.post(
            "/v1/jobs/batch", json={"jobs": [ORDER] * 101}, headers=auth(key)
        )
        assert response.status_code == 413
        assert await _count(runtime, Job) == 0

    async def test_100_jobs_are_accepted(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.post(
            "/v1/jobs/batch", json={"jobs": [ORDER] * 100}, headers=auth(key)
        )
        assert response.status_code == 202
        assert len({j["id"] for j in response.json()["jobs"]}) == 100

    async def test_batch_over_256000_bytes_is_413(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        job = {"type": "analytics-event", "name": "b", "properties": {"blob": "x" * 90_000}}
        response = await client.post("/v1/jobs/batch", json={"jobs": [job] * 3}, headers=auth(key))
        assert response.status_code == 413
        assert "256000" in response.json()["detail"]
        assert await _count(runtime, Job) == 0

    async def test_empty_batch_is_422(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.post("/v1/jobs/batch", json={"jobs": []}, headers=auth(key))
        assert response.status_code == 422

    async def test_per_job_idempotency_keys(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        first = await client.post(
            "/v1/jobs/batch",
            json={"jobs": [{**ORDER, "idempotency_key": "a"}, {**ORDER, "orderId": 2}]},
            headers=auth(key),
        )
        assert first.status_code == 202
        again = await client.post(
            "/v1/jobs/batch",
            json={"jobs": [{**ORDER, "idempotency_key": "a"}]},
            headers=auth(key),
        )
        # Every job repeats a key: a replayed batch answers 200, as a replayed single job.
        assert again.status_code == 200
        assert again.json()["jobs"][0]["id"] == first.json()["jobs"][0]["id"]
        assert await _count(runtime, Job) == 2
        # Mixed: one repeat, one new job. Something was created: 202, the repeat's original.
        mixed = await client.post(
            "/v1/jobs/batch",
            json={"jobs": [{**ORDER, "idempotency_key": "a"}, {**ORDER, "orderId": 3}]},
            headers=auth(key),
        )
        assert mixed.status_code == 202
        assert mixed.json()["jobs"][0]["id"] == first.json()["jobs"][0]["id"]
        assert await _count(runtime, Job) == 3
        conflict = await client.post(
            "/v1/jobs/batch",
            json={"jobs": [{**ORDER, "orderId": 9, "idempotency_key": "a"}]},
            headers=auth(key),
        )
        assert conflict.status_code == 409

    async def test_batch_idempotency_key_header_keys_each_job(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        batch = {"jobs": [ORDER, {**ORDER, "orderId": 2}, {**ORDER, "idempotency_key": "own"}]}
        headers = {**auth(key), "Idempotency-Key": "nightly-42"}
        first = await client.post("/v1/jobs/batch", json=batch, headers=headers)
        assert first.status_code == 202
        ids = [j["id"] for j in first.json()["jobs"]]
        async with runtime.sessionmaker() as session:
            keys = dict((await session.execute(select(Job.id, Job.idempotency_key))).all())
        # `<header>:<index>`, except for a job that brings its own key.
        assert [keys[i] for i in ids] == ["nightly-42:0", "nightly-42:1", "own"]
        replay = await client.post("/v1/jobs/batch", json=batch, headers=headers)
        assert replay.status_code == 200
        assert [j["id"] for j in replay.json()["jobs"]] == ids
        assert await _count(runtime, Job) == 3
        # Another body under the same header: a job's key reused for another job.
        changed = {"jobs": [{**ORDER, "orderId": 7}]}
        assert (
            await client.post("/v1/jobs/batch", json=changed, headers=headers)
        ).status_code == 409
        # Without the header the same batch is new work (the header was not ignored before).
        fresh = await client.post(
            "/v1/jobs/batch", json={"jobs": batch["jobs"][:2]}, headers=auth(key)
        )
        assert fresh.status_code == 202
        assert not {j["id"] for j in fresh.json()["jobs"]} & set(ids)
        too_long = {**auth(key), "Idempotency-Key": "k" * 252}
        assert (
            await client.post("/v1/jobs/batch", json=batch, headers=too_long)
        ).status_code == 422

    async def test_same_key_twice_in_one_batch(
        self, client: httpx.AsyncClient, runtime: Runtime, key: str
    ) -> None:
        same = await client.post(
            "/v1/jobs/batch",
            json={"jobs": [{**ORDER, "idempotency_key": "a"}, {**ORDER, "idempotency_key": "a"}]},
            headers=auth(key),
        )
        assert same.status_code == 202
        ids = [j["id"] for j in same.json()["jobs"]]
        assert ids[0] == ids[1]
        assert await _count(runtime, Job) == 1
        clash = await client.post(
            "/v1/jobs/batch",
            json={
                "jobs": [
                    {**ORDER, "idempotency_key": "b"},
                    {**ORDER, "orderId": 5, "idempotency_key": "b"},
                ]
            },
            headers=auth(key),
        )
        assert clash.status_code == 409


class TestAuth:
    async def test_missing_key_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/jobs", json=ORDER)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")

    @pytest.mark.parametrize(
        "header",
        ["Bearer nope", "Bearer jg_00000000_" + "x" * 43, "Basic abc", "Bearer", "jg_x"],
    )
    async def test_invalid_key_is_401(self, client: httpx.AsyncClient, header: str) -> None:
        response = await client.post("/v1/jobs", json=ORDER, headers={"Authorization": header})
        assert response.status_code == 401

    async def test_right_prefix_wrong_secret_is_401(
        self, client: httpx.AsyncClient, key: str
    ) -> None:
        forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        response = await client.post("/v1/jobs", json=ORDER, headers=auth(forged))
        assert response.status_code == 401

    async def test_wrong_scope_is_403(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        tenant = await tenants.create()
        reader = await tenants.key(tenant.tenant_id, scopes=[Scope.jobs_read])
        writer = await tenants.key(tenant.tenant_id, scopes=[Scope.jobs_write])
        assert (await client.post("/v1/jobs", json=ORDER, headers=auth(reader))).status_code == 403
        created = await client.post("/v1/jobs", json=ORDER, headers=auth(writer))
        assert created.status_code == 202
        job_id = created.json()["id"]
        assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(writer))).status_code == 403
        assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(reader))).status_code == 200
        assert (await client.get("/v1/jobs", headers=auth(writer))).status_code == 403

    async def test_admin_scope_implies_the_others(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        tenant = await tenants.create()
        admin = await tenants.key(tenant.tenant_id, scopes=[Scope.admin])
        assert (await client.post("/v1/jobs", json=ORDER, headers=auth(admin))).status_code == 202


class TestReadAndIsolation:
    async def test_other_tenants_job_is_404(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        a, b = await tenants.create(), await tenants.create()
        created = (await client.post("/v1/jobs", json=ORDER, headers=auth(a.api_key))).json()
        response = await client.get(f"/v1/jobs/{created['id']}", headers=auth(b.api_key))
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        listing = await client.get("/v1/jobs", headers=auth(b.api_key))
        assert listing.json() == {"data": [], "next_cursor": None}

    async def test_unknown_job_is_404(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.get("/v1/jobs/does-not-exist", headers=auth(key))
        assert response.status_code == 404

    async def test_list_is_newest_first_and_paged(
        self, client: httpx.AsyncClient, key: str
    ) -> None:
        ids = []
        for order_id in range(1, 6):
            job = {**ORDER, "orderId": order_id}
            ids.append((await client.post("/v1/jobs", json=job, headers=auth(key))).json()["id"])
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/jobs", params=params, headers=auth(key))).json()
            seen.extend(job["id"] for job in page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))

    async def test_list_filters_by_status_and_type(
        self, client: httpx.AsyncClient, key: str
    ) -> None:
        await client.post("/v1/jobs", json=ORDER, headers=auth(key))
        await client.post(
            "/v1/jobs", json={"type": "analytics-event", "name": "x"}, headers=auth(key)
        )
        by_type = await client.get(
            "/v1/jobs", params={"type": "analytics-event"}, headers=auth(key)
        )
        assert [j["type"] for j in by_type.json()["data"]] == ["analytics-event"]
        queued = await client.get("/v1/jobs", params={"status": "queued"}, headers=auth(key))
        assert len(queued.json()["data"]) == 2
        done = await client.get("/v1/jobs", params={"status": "succeeded"}, headers=auth(key))
        assert done.json()["data"] == []

    @pytest.mark.parametrize(
        "params",
        [{"status": "bogus"}, {"type": "bogus"}, {"limit": 0}, {"limit": 101}],
    )
    async def test_bad_list_parameters_are_422(
        self, client: httpx.AsyncClient, key: str, params: dict[str, Any]
    ) -> None:
        response = await client.get("/v1/jobs", params=params, headers=auth(key))
        assert response.status_code == 422
        # Each names the bad parameter the same way, whoever checks it.
        [name] = params
        [error] = response.json()["errors"]
        assert error["loc"] == ["query", name]
        assert response.json()["detail"] == f"invalid fields: query.{name}"

    async def test_bad_cursor_is_400(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.get("/v1/jobs", params={"cursor": "!!!"}, headers=auth(key))
        assert response.status_code == 400


class TestErrors:
    async def test_unknown_path_is_problem_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/nope")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"

    async def test_wrong_method_is_problem_405(self, client: httpx.AsyncClient) -> None:
        response = await client.delete("/v1/jobs")
        assert response.status_code == 405
        assert response.headers["content-type"] == "application/problem+json"


async def test_streamed_body_over_the_cap_is_413(client: httpx.AsyncClient, key: str) -> None:
    async def chunks() -> Any:
        yield b'{"type": "analytics-event", "name": "big", "properties": {"blob": "'
        for _ in range(40):
            yield b"x" * 50_000
        yield b'"}}'

    response = await client.post(
        "/v1/jobs", content=chunks(), headers={**auth(key), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
