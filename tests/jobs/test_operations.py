"""Job operations on the real local engine and job store, driven by the consumer's
`run_once()`: attempts, cancel, retry (one and bulk, paced), `next_attempt_at`, the dead
letter queue, and who may call each route."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from app.consumer.registry import HandlerRegistry, JobContext
from app.core.clock import to_datetime
from app.core.db import table_of
from app.jobs import lifecycle
from app.jobs.models import Job
from app.jobs.payloads import AnalyticsEventPayload
from app.outbox import service as outbox_service
from app.outbox.models import OutboxMessage
from app.queues.base import OutgoingMessage
from app.tenants import service as tenants_service
from app.tenants.schemas import Scope
from tests.consumer.conftest import DLQ, QUEUE, Harness, MakeHarness
from tests.consumer.conftest import make_harness as make_harness  # a fixture
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio
_jobs = table_of(Job)


class Flaky:
    """Analytics jobs fail while `failing` is set; `runs` counts handler calls per job."""

    def __init__(self) -> None:
        self.failing = True
        self.runs: dict[str, int] = {}
        self.registry = HandlerRegistry()

        @self.registry.handler("analytics-event", AnalyticsEventPayload)
        async def handle(ctx: JobContext[AnalyticsEventPayload]) -> None:
            self.runs[ctx.job_id] = self.runs.get(ctx.job_id, 0) + 1
            if self.failing:
                raise RuntimeError("boom: upstream down")


async def _harness(make: MakeHarness, handlers: Flaky, **settings: Any) -> Harness:
    # max_retries 1: two attempts, the second 10 s after the first (fixed delay). The
    # breaker stays out of the way: these jobs fail on purpose.
    return await make(
        handlers.registry,
        tenants=("a", "b"),
        max_retries=1,
        retry_delay=10,
        settings_update={"breaker": {"threshold": 1000}, **settings},
    )


async def _dead(h: Harness, tenant: str = "a", **properties: Any) -> str:
    """A job that used both its attempts and is dead (its copy in the DLQ)."""
    job_id = await h.submit(tenant, **properties)
    for _ in range(4):
        await h.consumer.run_once()
        if (await h.job(job_id)).status == "dead":
            break
        h.clock.advance(seconds=10)
    assert (await h.job(job_id)).status == "dead"
    return job_id


async def _dlq_jobs(h: Harness) -> list[str]:
    return [m.body.split('"job_id":"')[1][:36] for m in await h.messages(DLQ)]


async def _set_status(h: Harness, job_id: str, status: str) -> None:
    async with h.runtime.sessionmaker() as session:
        await session.execute(update(_jobs).where(_jobs.c.id == job_id).values(status=status))
        await session.commit()


class TestAttemptsAndRetry:
    async def test_dead_job_attempts_then_retry_runs_it_with_a_fresh_budget(
        self, make_harness: MakeHarness
    ) -> None:
        flaky = Flaky()
        h = await _harness(make_harness, flaky)
        key = auth(h.keys["a"])
        job_id = await h.submit("a", n=1)
        await h.consumer.run_once()
        retrying = (await h.client.get(f"/v1/jobs/{job_id}", headers=key)).json()
        assert retrying["status"] == "retrying"
        assert retrying["next_attempt_at"] is not None
        h.clock.advance(seconds=10)
        await h.consumer.run_once()
        dead = (await h.client.get(f"/v1/jobs/{job_id}", headers=key)).json()
        assert (dead["status"], dead["attempts"], dead["next_attempt_at"]) == ("dead", 2, None)
        assert await _dlq_jobs(h) == [job_id]

        attempts = (await h.client.get(f"/v1/jobs/{job_id}/attempts", headers=key)).json()
        assert [a["attempt"] for a in attempts["data"]] == [1, 2]
        assert [a["outcome"] for a in attempts["data"]] == ["retry", "dead"]
        assert all("boom" in a["error"] for a in attempts["data"])
        assert all(a["duration_ms"] >= 0 and a["finished_at"] for a in attempts["data"])

        # Still failing: the retried job gets both attempts again, then is dead again.
        response = await h.client.post(f"/v1/jobs/{job_id}/retry", headers=key)
        assert response.status_code == 202
        assert (response.json()["status"], response.json()["attempts"]) == ("queued", 2)
        assert await _dlq_jobs(h) == []  # its dead letter copy is gone
        await h.consumer.run_once()
        assert (await h.job(job_id)).status == "retrying"
        h.clock.advance(seconds=10)
        await h.consumer.run_once()
        assert ((await h.job(job_id)).status, (await h.job(job_id)).attempts) == ("dead", 4)

        # Fixed: retried once more, it succeeds; the whole history is kept.
        flaky.failing = False
        assert (await h.client.post(f"/v1/jobs/{job_id}/retry", headers=key)).status_code == 202
        await h.consumer.run_once()
        done = (await h.client.get(f"/v1/jobs/{job_id}", headers=key)).json()
        assert (done["status"], done["attempts"]) == ("succeeded", 5)
        attempts = (await h.client.get(f"/v1/jobs/{job_id}/attempts", headers=key)).json()
        assert [a["outcome"] for a in attempts["data"]] == [
            "retry",
            "dead",
            "retry",
            "dead",
            "succeeded",
        ]
        assert flaky.runs[job_id] == 5
        statuses = await h.statuses(job_id)
        assert statuses.count("queued") == 3
        assert statuses[-1] == "succeeded"

    async def test_retry_is_409_unless_failed_dead_or_cancelled(
        self, make_harness: MakeHarness
    ) -> None:
        flaky = Flaky()
        flaky.failing = False
        h = await _harness(make_harness, flaky)
        key = auth(h.keys["a"])
        job_id = await h.submit("a")
        response = await h.client.post(f"/v1/jobs/{job_id}/retry", headers=key)
        assert response.status_code == 409
        assert response.headers["content-type"].startswith("application/problem+json")
        await h.consumer.run_once()
        assert (await h.client.post(f"/v1/jobs/{job_id}/retry", headers=key)).status_code == 409
        await _set_status(h, job_id, "failed")
        assert (await h.client.post(f"/v1/jobs/{job_id}/retry", headers=key)).status_code == 202
        await h.consumer.run_once()
        assert (await h.job(job_id)).status == "succeeded"


class TestCancel:
    async def test_a_cancelled_delayed_job_never_runs(self, make_harness: MakeHarness) -> None:
        flaky = Flaky()
        flaky.failing = False
        h = await _harness(make_harness, flaky)
        key = auth(h.keys["a"])
        body = {"type": "analytics-event", "name": "later", "delay_seconds": 60}
        job_id = (await h.client.post("/v1/jobs", json=body, headers=key)).json()["id"]
        response = await h.client.post(f"/v1/jobs/{job_id}/cancel", headers=key)
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        assert response.json()["finished_at"] is not None
        h.clock.advance(seconds=61)
        report = await h.consumer.run_once()
        assert report.selected == 1  # delivered, acked unrun
        assert flaky.runs == {}
        assert (await h.job(job_id)).status == "cancelled"
        assert await h.messages() == []
        assert (await h.statuses(job_id))[-1] == "cancelled"
        # Finished: cancelling again is a conflict; it can be retried, and then runs.
        assert (await h.client.post(f"/v1/jobs/{job_id}/cancel", headers=key)).status_code == 409
        assert (await h.client.post(f"/v1/jobs/{job_id}/retry", headers=key)).status_code == 202
        await h.consumer.run_once()
        assert (await h.job(job_id)).status == "succeeded"
        assert flaky.runs == {job_id: 1}

    async def test_a_retrying_job_cancelled_is_not_run_again(
        self, make_harness: MakeHarness
    ) -> None:
        flaky = Flaky()
        h = await _harness(make_harness, flaky)
        key = auth(h.keys["a"])
        job_id = await h.submit("a")
        await h.consumer.run_once()
        assert (await h.job(job_id)).status == "retrying"
        assert (await h.client.post(f"/v1/jobs/{job_id}/cancel", headers=key)).status_code == 200
        cancelled = (await h.client.get(f"/v1/jobs/{job_id}", headers=key)).json()
        assert (cancelled["status"], cancelled["next_attempt_at"]) == ("cancelled", None)
        h.clock.advance(seconds=10)
        await h.consumer.run_once()
        assert flaky.runs == {job_id: 1}
        assert (await h.job(job_id)).status == "cancelled"

    async def test_running_or_finished_jobs_are_409(self, make_harness: MakeHarness) -> None:
        flaky = Flaky()
        flaky.failing = False
        h = await _harness(make_harness, flaky)
        key = auth(h.keys["a"])
        job_id = await h.submit("a")
        await _set_status(h, job_id, "running")
        response = await h.client.post(f"/v1/jobs/{job_id}/cancel", headers=key)
        assert response.status_code == 409
        assert "running" in response.json()["detail"]
        await _set_status(h, job_id, "succeeded")
        assert (await h.client.post(f"/v1/jobs/{job_id}/cancel", headers=key)).status_code == 409


class TestBulkRetry:
    async def test_dry_run_counts_then_retry_is_paced_and_empties_the_dlq(
        self, make_harness: MakeHarness
    ) -> None:
        flaky = Flaky()
        h = await _harness(make_harness, flaky, jobs={"bulk_retry_rate": 2})
        key = auth(h.keys["a"])
        dead = [await _dead(h, "a", n=i) for i in range(3)]
        other = await _dead(h, "b")  # another tenant's: never touched
        assert sorted(await _dlq_jobs(h)) == sorted([*dead, other])
        body = {"status": "dead", "error_contains": "upstream", "dry_run": True}
        response = await h.client.post("/v1/jobs/retry", json=body, headers=key)
        assert response.json() == {"matched": 3, "retried": 0}
        assert (await h.job(dead[0])).status == "dead"

        response = await h.client.post(
            "/v1/jobs/retry", json={**body, "dry_run": False}, headers=key
        )
        assert response.json() == {"matched": 3, "retried": 3}
        assert await _dlq_jobs(h) == [other]
        # Two per second: the third waits a second.
        assert sorted(m.delay_seconds for m in await h.messages()) == [0, 0, 1]
        flaky.failing = False
        await h.consumer.run_once()
        h.clock.advance(seconds=1)
        await h.consumer.run_once()
        assert [(await h.job(j)).status for j in dead] == ["succeeded"] * 3
        assert (await h.job(other)).status == "dead"

    async def test_a_second_bulk_retry_queues_behind_the_first(
        self, make_harness: MakeHarness
    ) -> None:
        h = await _harness(make_harness, Flaky(), jobs={"bulk_retry_rate": 1})
        key = auth(h.keys["a"])
        for _ in range(4):
            await _dead(h, "a")
        body = {"status": "dead", "limit": 2, "dry_run": False}
        for _ in range(2):
            response = await h.client.post("/v1/jobs/retry", json=body, headers=key)
            assert response.json()["retried"] == 2
        # One a second across both calls, not two bursts starting at once.
        assert sorted(m.delay_seconds for m in await h.messages()) == [0, 1, 2, 3]

    async def test_filters_and_limit(self, make_harness: MakeHarness) -> None:
        flaky = Flaky()
        h = await _harness(make_harness, flaky)
        key = auth(h.keys["a"])
        dead = [await _dead(h, "a") for _ in range(3)]
        first = (await h.job(dead[0])).created_at
        cases: list[tuple[dict[str, Any], int]] = [
            ({"type": "analytics-event"}, 3),
            ({"type": "send-email"}, 0),
            ({"queue": QUEUE}, 3),
            ({"queue": "email-sending"}, 0),
            ({"error_contains": "no such error"}, 0),
            ({"error_contains": "%"}, 0),  # a LIKE wildcard is matched literally
            ({"created_before": first.isoformat()}, 0),
            ({"created_after": first.isoformat()}, 3),
        ]
        for filters, matched in cases:
            body = {"status": "dead", "dry_run": True, **filters}
            response = await h.client.post("/v1/jobs/retry", json=body, headers=key)
            assert response.status_code == 200, (filters, response.text)
            assert response.json()["matched"] == matched, filters
        body = {"status": "dead", "limit": 2, "dry_run": False}
        response = await h.client.post("/v1/jobs/retry", json=body, headers=key)
        assert response.json() == {"matched": 3, "retried": 2}
        assert [(await h.job(j)).status for j in dead] == ["queued", "queued", "dead"]
        body = {"status": "failed", "dry_run": False}
        assert (await h.client.post("/v1/jobs/retry", json=body, headers=key)).json() == {
            "matched": 0,
            "retried": 0,
        }

    @pytest.mark.parametrize(
        "body",
        [
            {"status": "queued", "dry_run": True},
            {"status": "dead"},
            {"status": "dead", "dry_run": True, "limit": 1001},
            {"status": "dead", "dry_run": True, "limit": 0},
            {"status": "dead", "dry_run": True, "type": "no-such-type"},
            {"status": "dead", "dry_run": True, "queue": "no-such-queue"},
            {"status": "dead", "dry_run": True, "created_after": "2026-01-01T00:00:00"},
            {
                "status": "dead",
                "dry_run": True,
                "created_after": "2026-02-01T00:00:00Z",
                "created_before": "2026-01-01T00:00:00Z",
            },
            {"status": "dead", "dry_run": True, "tenant_id": "someone-else"},
        ],
    )
    async def test_invalid_bodies_are_422(
        self, make_harness: MakeHarness, body: dict[str, Any]
    ) -> None:
        h = await _harness(make_harness, Flaky())
        response = await h.client.post("/v1/jobs/retry", json=body, headers=auth(h.keys["a"]))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"], response.text


class TestWhoMayCall:
    async def test_tenant_routes_are_the_tenants_own_jobs(self, make_harness: MakeHarness) -> None:
        flaky = Flaky()
        h = await _harness(make_harness, flaky)
        job_id = await _dead(h, "a")
        queued = await h.submit("a")
        other = auth(h.keys["b"])
        for method, path in [
            ("GET", f"/v1/jobs/{job_id}/attempts"),
            ("POST", f"/v1/jobs/{job_id}/retry"),
            ("POST", f"/v1/jobs/{queued}/cancel"),
            ("GET", "/v1/jobs/no-such-job/attempts"),
        ]:
            response = await h.client.request(method, path, headers=other)
            assert response.status_code == 404, (method, path)
        body = {"status": "dead", "dry_run": True}
        assert (await h.client.post("/v1/jobs/retry", json=body, headers=other)).json()[
            "matched"
        ] == 0
        assert (await h.job(job_id)).status == "dead"

        factory = TenantFactory(h.runtime)
        reader = auth(await factory.key(h.tenant_ids["a"], [Scope.jobs_read]))
        assert (
            await h.client.get(f"/v1/jobs/{job_id}/attempts", headers=reader)
        ).status_code == 200
        for path in (f"/v1/jobs/{job_id}/retry", f"/v1/jobs/{queued}/cancel"):
            assert (await h.client.post(path, headers=reader)).status_code == 403
        assert (await h.client.post("/v1/jobs/retry", json=body, headers=reader)).status_code == 403
        assert (await h.client.post(f"/v1/jobs/{job_id}/retry")).status_code == 401

        async with h.runtime.sessionmaker() as session:
            operator, _ = await tenants_service.create_operator_key(session, name="ops")
            await session.commit()
        # The operator has no tenant: it acts through /v1/admin/jobs, not /v1/jobs.
        response = await h.client.post(f"/v1/jobs/{job_id}/retry", headers=auth(operator))
        assert response.status_code == 403

    async def test_operator_routes_act_across_tenants_and_refuse_tenants(
        self, make_harness: MakeHarness
    ) -> None:
        flaky = Flaky()
        h = await _harness(make_harness, flaky)
        dead_a, dead_b = await _dead(h, "a"), await _dead(h, "b")
        queued_b = await h.submit("b")
        async with h.runtime.sessionmaker() as session:
            key, _ = await tenants_service.create_operator_key(session, name="ops")
            await session.commit()
        op = auth(key)
        factory = TenantFactory(h.runtime)
        tenant_admin = auth(await factory.key(h.tenant_ids["a"], [Scope.admin]))
        routes = [
            ("GET", "/v1/admin/jobs", None),
            ("GET", f"/v1/admin/jobs/{dead_a}", None),
            ("GET", f"/v1/admin/jobs/{dead_a}/attempts", None),
            ("POST", f"/v1/admin/jobs/{dead_a}/retry", None),
            ("POST", f"/v1/admin/jobs/{queued_b}/cancel", None),
            ("POST", "/v1/admin/jobs/retry", {"status": "dead", "dry_run": True}),
        ]
        for headers in (auth(h.keys["a"]), tenant_admin):
            for method, path, body in routes:
                response = await h.client.request(method, path, json=body, headers=headers)
                assert response.status_code == 403, (method, path)

        page = (await h.client.get("/v1/admin/jobs?status=dead", headers=op)).json()
        assert {job["id"] for job in page["data"]} == {dead_a, dead_b}
        assert {job["tenant_id"] for job in page["data"]} == set(h.tenant_ids.values())
        only_b = f"/v1/admin/jobs?tenant_id={h.tenant_ids['b']}&queue={QUEUE}"
        assert {j["id"] for j in (await h.client.get(only_b, headers=op)).json()["data"]} == {
            dead_b,
            queued_b,
        }
        first = (await h.client.get("/v1/admin/jobs?limit=1", headers=op)).json()
        assert len(first["data"]) == 1
        assert first["next_cursor"]
        rest = await h.client.get(f"/v1/admin/jobs?cursor={first['next_cursor']}", headers=op)
        assert len(rest.json()["data"]) == 2
        assert (await h.client.get("/v1/admin/jobs?type=nope", headers=op)).status_code == 422
        assert (await h.client.get("/v1/admin/jobs/nope", headers=op)).status_code == 404

        response = await h.client.get(f"/v1/admin/jobs/{dead_b}/attempts", headers=op)
        assert [a["outcome"] for a in response.json()["data"]] == ["retry", "dead"]
        response = await h.client.post(f"/v1/admin/jobs/{queued_b}/cancel", headers=op)
        assert (response.status_code, response.json()["status"]) == (200, "cancelled")
        response = await h.client.post(f"/v1/admin/jobs/{dead_b}/retry", headers=op)
        assert (response.status_code, response.json()["status"]) == (202, "queued")
        body = {"status": "dead", "tenant_id": h.tenant_ids["a"], "dry_run": False}
        response = await h.client.post("/v1/admin/jobs/retry", json=body, headers=op)
        assert response.json() == {"matched": 1, "retried": 1}
        assert await _dlq_jobs(h) == []
        flaky.failing = False
        await h.consumer.run_once()
        assert (await h.job(dead_a)).status == (await h.job(dead_b)).status == "succeeded"


class TestOutboxPath:
    """With Cloudflare a job waits in the outbox until the relay publishes it."""

    async def test_cancel_drops_the_unpublished_outbox_row(self, make_harness: MakeHarness) -> None:
        h = await _harness(make_harness, Flaky())
        job_id = await h.submit("a")
        await _set_status(h, job_id, "accepted")
        async with h.runtime.sessionmaker() as session:
            await outbox_service.stage(
                session, QUEUE, [OutgoingMessage(body={"job_id": job_id})], now_ms=0
            )
            await session.commit()
        response = await h.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(h.keys["a"]))
        assert (response.status_code, response.json()["status"]) == (200, "cancelled")
        async with h.runtime.sessionmaker() as session:
            rows = (await session.execute(select(OutboxMessage))).scalars().all()
        assert rows == []

    async def test_a_retried_job_the_relay_gives_up_on_is_failed(
        self, make_harness: MakeHarness
    ) -> None:
        h = await _harness(make_harness, Flaky())
        job_id = await _dead(h, "a")
        assert (
            await h.client.post(f"/v1/jobs/{job_id}/retry", headers=auth(h.keys["a"]))
        ).status_code == 202
        async with h.runtime.sessionmaker() as session:
            moved = await lifecycle.outbox_failed(
                session, [job_id], "refused by Cloudflare", to_datetime(h.clock.now_ms())
            )
            await session.commit()
        assert moved == [job_id]
        job = await h.job(job_id)
        assert (job.status, job.last_error) == ("failed", "refused by Cloudflare")
