"""The schedules API: CRUD, tenant isolation, scopes, validation, fire-now."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.jobs.models import Job
from app.scheduler.models import ScheduleFire
from app.tenants.schemas import Scope, TenantCreated
from tests.factories import TenantFactory, auth
from tests.scheduler.conftest import ORDERS, at, make_schedule

pytestmark = pytest.mark.asyncio


async def _fires(runtime: Runtime) -> list[ScheduleFire]:
    async with runtime.sessionmaker() as session:
        return list((await session.execute(select(ScheduleFire))).scalars().all())


class TestCreate:
    async def test_created_with_first_occurrence_and_defaults(
        self, client: httpx.AsyncClient, key: str, start: datetime
    ) -> None:
        body = await make_schedule(client, key)
        assert body["name"] == "orders-every-3h"
        assert body["cron"] == "0 */3 * * *"
        assert body["enabled"] is True
        # The template is stored with the job's defaults filled in.
        assert body["job"] == {
            "type": "sync-orders",
            "siteId": "shop-1",
            "lastDays": 40,
            "bulkMode": True,
        }
        assert datetime.fromisoformat(body["next_run_at"]) == at("2026-03-01T03:00:00")
        assert body["last_run_at"] is None
        assert body["last_job_id"] is None
        assert datetime.fromisoformat(body["created_at"]) == start

    async def test_time_zone_reads_the_cron_on_that_wall_clock(
        self, client: httpx.AsyncClient, key: str, start: datetime
    ) -> None:
        assert (await make_schedule(client, key))["timezone"] == "UTC"
        paris = await make_schedule(
            client, key, name="paris-9am", cron="0 9 * * *", timezone="Europe/Paris"
        )
        assert paris["timezone"] == "Europe/Paris"
        # 09:00 in Paris in March (before the change) is 08:00 UTC.
        assert datetime.fromisoformat(paris["next_run_at"]) == at("2026-03-01T08:00:00")
        moved = await client.patch(
            f"/v1/schedules/{paris['id']}", json={"timezone": "America/New_York"}, headers=auth(key)
        )
        assert moved.status_code == 200, moved.text
        assert datetime.fromisoformat(moved.json()["next_run_at"]) == at("2026-03-01T14:00:00")
        for bad in ("Mars/Olympus", "../etc/localtime"):
            refused = await client.post(
                "/v1/schedules",
                json={"name": "x", "cron": "0 9 * * *", "job": ORDERS, "timezone": bad},
                headers=auth(key),
            )
            assert refused.status_code == 422
            assert [e["loc"] for e in refused.json()["errors"]] == [["body", "timezone"]]
        null = await client.patch(
            f"/v1/schedules/{paris['id']}", json={"timezone": None}, headers=auth(key)
        )
        assert null.status_code == 422

    async def test_disabled_has_no_next_run(
        self, client: httpx.AsyncClient, key: str, start: datetime
    ) -> None:
        body = await make_schedule(client, key, enabled=False)
        assert body["enabled"] is False
        assert body["next_run_at"] is None

    async def test_duplicate_name_is_409_but_other_tenant_may_reuse_it(
        self, client: httpx.AsyncClient, key: str, tenants: TenantFactory, start: datetime
    ) -> None:
        await make_schedule(client, key)
        again = await client.post(
            "/v1/schedules",
            json={"name": "orders-every-3h", "cron": "0 0 * * *", "job": ORDERS},
            headers=auth(key),
        )
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert "orders-every-3h" in again.json()["detail"]
        other = (await tenants.create()).api_key
        await make_schedule(client, other)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"cron": "0 */3 * *"}, "cron"),
            ({"cron": "61 * * * *"}, "cron"),
            ({"cron": "0 0 30 2 *"}, "cron"),
            ({"job": {"type": "sync-orders"}}, "job.sync-orders.siteId"),
            ({"job": {"type": "sync-orders", "siteId": "s", "lastDays": 0}}, "job"),
            ({"job": {"type": "no-such-job"}}, "job.type"),
            ({"job": {"type": "sync-orders", "siteId": "s", "bogus": 1}}, "job"),
            ({"job": {"type": "sync-orders", "siteId": "s", "idempotency_key": "k"}}, "job"),
            ({"name": ""}, "name"),
            ({"name": " padded"}, "name"),
            ({"surprise": True}, "surprise"),
        ],
    )
    async def test_bad_fields_are_422_naming_the_field(
        self, client: httpx.AsyncClient, key: str, body: dict[str, object], field: str
    ) -> None:
        payload = {"name": "n", "cron": "0 */3 * * *", "job": ORDERS, **body}
        response = await client.post("/v1/schedules", json=payload, headers=auth(key))
        assert response.status_code == 422, response.text
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["status"] == 422
        assert field in problem["detail"]
        assert any(".".join(map(str, e["loc"][1:])).startswith(field) for e in problem["errors"])

    async def test_cron_error_says_why(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.post(
            "/v1/schedules",
            json={"name": "n", "cron": "0 0 */3 * * *", "job": ORDERS},
            headers=auth(key),
        )
        [error] = response.json()["errors"]
        assert error["loc"] == ["body", "cron"]
        assert "5 fields" in error["msg"]

    async def test_foreign_tenant_id_in_job_is_403(
        self, client: httpx.AsyncClient, key: str
    ) -> None:
        job = {**ORDERS, "tenantId": "someone-else"}
        response = await client.post(
            "/v1/schedules", json={"name": "n", "cron": "0 0 * * *", "job": job}, headers=auth(key)
        )
        assert response.status_code == 403

    async def test_needs_json_body(self, client: httpx.AsyncClient, key: str) -> None:
        response = await client.post(
            "/v1/schedules", content=b"name=n", headers={**auth(key), "content-type": "text/plain"}
        )
        assert response.status_code == 415


class TestReadUpdateDelete:
    async def test_list_and_get(
        self, client: httpx.AsyncClient, key: str, tenants: TenantFactory, start: datetime
    ) -> None:
        b = await make_schedule(
            client, key, name="b-products", job={"type": "sync-products", "siteId": "s"}
        )
        a = await make_schedule(client, key, name="a-orders")
        other = (await tenants.create()).api_key
        await make_schedule(client, other, name="theirs")
        listed = (await client.get("/v1/schedules", headers=auth(key))).json()
        assert listed["count"] == 2
        assert [s["id"] for s in listed["data"]] == [a["id"], b["id"]]
        got = await client.get(f"/v1/schedules/{b['id']}", headers=auth(key))
        assert got.status_code == 200
        assert got.json() == b

    async def test_other_tenants_schedule_is_404_everywhere(
        self, client: httpx.AsyncClient, key: str, tenants: TenantFactory, start: datetime
    ) -> None:
        theirs = await make_schedule(client, (await tenants.create()).api_key)
        path = f"/v1/schedules/{theirs['id']}"
        assert (await client.get(path, headers=auth(key))).status_code == 404
        assert (
            await client.patch(path, json={"enabled": False}, headers=auth(key))
        ).status_code == 404
        assert (await client.delete(path, headers=auth(key))).status_code == 404
        assert (await client.post(f"{path}/run", headers=auth(key))).status_code == 404
        missing = await client.get("/v1/schedules/nope", headers=auth(key))
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

    async def test_patch_changes_only_what_is_sent(
        self, client: httpx.AsyncClient, key: str, clock: ManualClock, start: datetime
    ) -> None:
        created = await make_schedule(client, key)
        clock.advance(seconds=60)
        response = await client.patch(
            f"/v1/schedules/{created['id']}",
            json={"job": {"type": "sync-orders", "siteId": "shop-2", "lastDays": 7}},
            headers=auth(key),
        )
        assert response.status_code == 200
        body = response.json()
        assert body["job"]["siteId"] == "shop-2"
        assert body["job"]["lastDays"] == 7
        assert body["name"] == created["name"]
        assert body["cron"] == created["cron"]
        assert body["next_run_at"] == created["next_run_at"]
        assert body["updated_at"] != created["updated_at"]

    async def test_new_cron_reschedules_from_now(
        self, client: httpx.AsyncClient, key: str, start: datetime
    ) -> None:
        created = await make_schedule(client, key)
        response = await client.patch(
            f"/v1/schedules/{created['id']}", json={"cron": "15 * * * *"}, headers=auth(key)
        )
        assert datetime.fromisoformat(response.json()["next_run_at"]) == at("2026-03-01T02:15:00")

    async def test_disable_then_enable(
        self, client: httpx.AsyncClient, key: str, clock: ManualClock, start: datetime
    ) -> None:
        created = await make_schedule(client, key)
        path = f"/v1/schedules/{created['id']}"
        off = (await client.patch(path, json={"enabled": False}, headers=auth(key))).json()
        assert off["enabled"] is False
        assert off["next_run_at"] is None
        clock.advance(seconds=4 * 3600)  # 05:30: the 03:00 slot passed while disabled
        on = (await client.patch(path, json={"enabled": True}, headers=auth(key))).json()
        assert on["enabled"] is True
        assert datetime.fromisoformat(on["next_run_at"]) == at("2026-03-01T06:00:00")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"cron": "nope"}, "cron"),
            ({"cron": None}, "cron"),
            ({"name": None}, "name"),
            ({"enabled": None}, "enabled"),
            ({"job": {"type": "send-email", "to": "not-an-email"}}, "job.send-email"),
            ({"other": 1}, "other"),
        ],
    )
    async def test_patch_validation(
        self,
        client: httpx.AsyncClient,
        key: str,
        start: datetime,
        body: dict[str, object],
        field: str,
    ) -> None:
        created = await make_schedule(client, key)
        response = await client.patch(
            f"/v1/schedules/{created['id']}", json=body, headers=auth(key)
        )
        assert response.status_code == 422
        assert field in response.json()["detail"]

    async def test_rename_onto_existing_name_is_409(
        self, client: httpx.AsyncClient, key: str, start: datetime
    ) -> None:
        await make_schedule(client, key, name="one")
        two = await make_schedule(client, key, name="two")
        response = await client.patch(
            f"/v1/schedules/{two['id']}", json={"name": "one"}, headers=auth(key)
        )
        assert response.status_code == 409

    async def test_delete_keeps_the_jobs(
        self, client: httpx.AsyncClient, key: str, runtime: Runtime, start: datetime
    ) -> None:
        created = await make_schedule(client, key)
        path = f"/v1/schedules/{created['id']}"
        job = (await client.post(f"{path}/run", headers=auth(key))).json()
        deleted = await client.delete(path, headers=auth(key))
        assert deleted.status_code == 204
        assert (await client.get(path, headers=auth(key))).status_code == 404
        assert await _fires(runtime) == []
        assert (await client.get(f"/v1/jobs/{job['id']}", headers=auth(key))).status_code == 200


class TestScopes:
    async def test_read_key_reads_but_cannot_change(
        self, client: httpx.AsyncClient, key: str, tenant: TenantCreated, tenants: TenantFactory
    ) -> None:
        created = await make_schedule(client, key)
        reader = await tenants.key(tenant.tenant_id, [Scope.jobs_read])
        path = f"/v1/schedules/{created['id']}"
        assert (await client.get(path, headers=auth(reader))).status_code == 200
        assert (await client.get("/v1/schedules", headers=auth(reader))).status_code == 200
        body = {"name": "x", "cron": "0 0 * * *", "job": ORDERS}
        assert (
            await client.post("/v1/schedules", json=body, headers=auth(reader))
        ).status_code == 403
        assert (
            await client.patch(path, json={"enabled": False}, headers=auth(reader))
        ).status_code == 403
        assert (await client.delete(path, headers=auth(reader))).status_code == 403
        assert (await client.post(f"{path}/run", headers=auth(reader))).status_code == 403

    async def test_write_only_key_cannot_read(
        self, client: httpx.AsyncClient, tenant: TenantCreated, tenants: TenantFactory
    ) -> None:
        writer = await tenants.key(tenant.tenant_id, [Scope.jobs_write])
        assert (await client.get("/v1/schedules", headers=auth(writer))).status_code == 403

    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/schedules")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


class TestRunNow:
    async def test_fires_now_through_the_normal_job_path(
        self, client: httpx.AsyncClient, key: str, runtime: Runtime, start: datetime
    ) -> None:
        created = await make_schedule(client, key)
        response = await client.post(f"/v1/schedules/{created['id']}/run", headers=auth(key))
        assert response.status_code == 202
        job = response.json()
        assert job["type"] == "sync-orders"
        assert job["status"] == "queued"
        assert job["queue"] == "prestashop-sync"
        assert job["payload"] == {"siteId": "shop-1", "lastDays": 40, "bulkMode": True}
        assert job["idempotency_key"] == f"schedule:{created['id']}:2026-03-01T01:30:00.000Z"
        listed = (await client.get("/v1/jobs?status=queued", headers=auth(key))).json()
        assert [j["id"] for j in listed["data"]] == [job["id"]]
        pulled = await runtime.queue_engine.pull("prestashop-sync", batch_size=10)
        [message] = pulled.messages
        assert message.body["job_id"] == job["id"]
        schedule = (await client.get(f"/v1/schedules/{created['id']}", headers=auth(key))).json()
        assert schedule["last_job_id"] == job["id"]
        # The timetable is unchanged.
        assert schedule["next_run_at"] == created["next_run_at"]
        [fire] = await _fires(runtime)
        assert fire.trigger == "manual"
        assert fire.job_id == job["id"]

    async def test_disabled_schedule_can_be_run_by_hand(
        self, client: httpx.AsyncClient, key: str, start: datetime
    ) -> None:
        created = await make_schedule(client, key, enabled=False)
        response = await client.post(f"/v1/schedules/{created['id']}/run", headers=auth(key))
        assert response.status_code == 202

    async def test_same_instant_twice_gives_the_same_job(
        self,
        client: httpx.AsyncClient,
        key: str,
        clock: ManualClock,
        runtime: Runtime,
        start: datetime,
    ) -> None:
        created = await make_schedule(client, key)
        path = f"/v1/schedules/{created['id']}/run"
        first = (await client.post(path, headers=auth(key))).json()
        second = (await client.post(path, headers=auth(key))).json()
        assert first["id"] == second["id"]
        clock.advance(ms=1)
        third = (await client.post(path, headers=auth(key))).json()
        assert third["id"] != first["id"]
        async with runtime.sessionmaker() as session:
            count = (await session.execute(select(func.count()).select_from(Job))).scalar_one()
        assert count == 2
