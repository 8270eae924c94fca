"""Admission at the HTTP door: each limit refuses with the right status, problem type and
Retry-After, writes nothing, is counted, and lets work through again when it should."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from app.admission.limiter import RouteClass
from app.admission.plans import set_plan
from app.bootstrap import Runtime
from app.consumer.models import CircuitBreaker
from app.core.clock import ManualClock, to_datetime
from app.jobs.models import Job, JobStatus
from app.outbox.models import OutboxMessage
from app.queues.base import QueueMetrics
from app.queues.cloudflare import CloudflareQueues
from tests.admission.conftest import Gateway, MakeGateway
from tests.factories import TenantFactory, auth
from tests.support.statements import WriteRecorder
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

ORDER = {"type": "sync-single-order", "orderId": 42}  # -> prestashop-sync
EMAIL = {"type": "send-email", "to": "a@example.com", "subject": "Hi", "templateId": "t"}
PROBLEMS = "https://jobgate.dev/problems/"


async def _count(runtime: Runtime, model: Any) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def _refusals(reason: str, route_class: str) -> float:
    value = REGISTRY.get_sample_value(
        "jobgate_admission_refusals_total", {"reason": reason, "route_class": route_class}
    )
    return value or 0.0


async def _post(gateway: Gateway, key: str, job: dict[str, Any] = ORDER) -> Any:
    return await gateway.http.post("/v1/jobs", json=job, headers=auth(key))


async def _batch(gateway: Gateway, key: str, jobs: list[dict[str, Any]]) -> Any:
    return await gateway.http.post("/v1/jobs/batch", json={"jobs": jobs}, headers=auth(key))


def _sampled(gateway: Gateway) -> bool:
    return all(depth.sampled_ms is not None for depth in gateway.admission.depth.queues.values())


def _assert_problem(response: Any, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEMS + slug
    assert int(response.headers["Retry-After"]) >= 1


class TestRateLimit:
    async def test_n_plus_first_job_in_window_is_429_with_retry_after(
        self, make_gateway: MakeGateway, tenants: TenantFactory, writes: WriteRecorder
    ) -> None:
        gateway = await make_gateway(rate_limit_jobs="3/minute")
        key = (await tenants.create(email_any=True)).api_key
        for left in (2, 1, 0):
            response = await _post(gateway, key)
            assert response.status_code == 202
            assert response.headers["RateLimit-Limit"] == "3"
            assert response.headers["RateLimit-Remaining"] == str(left)
            assert response.headers["RateLimit-Policy"] == '"jobs";q=3;w=60'
            assert 55 <= int(response.headers["RateLimit-Reset"]) <= 60
        before = _refusals("rate_limit", "jobs")
        writes.recording = True
        refused = await _post(gateway, key)
        writes.recording = False
        _assert_problem(refused, 429, "rate-limited")
        # The window started with the first job, a moment ago: it resets within a minute.
        assert 55 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert "3 per minute" in refused.json()["detail"]
        assert writes.writes == []
        assert await _count(gateway.runtime, Job) == 3
        assert _refusals("rate_limit", "jobs") == before + 1
        # Budgets are per tenant.
        other = (await tenants.create(email_any=True)).api_key
        assert (await _post(gateway, other)).status_code == 202

    async def test_waiting_retry_after_is_enough(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        # `limits` keeps wall-clock windows, so this test waits for real (about a second).
        gateway = await make_gateway(rate_limit_jobs="2/second")
        key = (await tenants.create(email_any=True)).api_key
        assert (await _post(gateway, key)).status_code == 202
        assert (await _post(gateway, key)).status_code == 202
        refused = await _post(gateway, key)
        _assert_problem(refused, 429, "rate-limited")
        wait = int(refused.headers["Retry-After"])
        assert wait == 1
        await asyncio.sleep(wait)
        assert (await _post(gateway, key)).status_code == 202

    async def test_batch_counts_per_job_and_refusals_spend_nothing(
        self, make_gateway: MakeGateway, tenants: TenantFactory, writes: WriteRecorder
    ) -> None:
        gateway = await make_gateway(rate_limit_jobs="5/minute")
        key = (await tenants.create(email_any=True)).api_key
        accepted = await _batch(gateway, key, [ORDER, EMAIL, ORDER])
        assert accepted.status_code == 202
        assert accepted.headers["RateLimit-Remaining"] == "2"
        # The email in the batch is charged against the tenant's email rate too.
        assert accepted.headers["RateLimit-Policy"] == (
            '"jobs";q=5;w=60, "batch";q=120;w=60, "emails";q=100;w=3600'
        )
        writes.recording = True
        refused = await _batch(gateway, key, [ORDER, ORDER, ORDER])
        writes.recording = False
        _assert_problem(refused, 429, "rate-limited")
        assert "needs 3" in refused.json()["detail"]
        assert writes.writes == []
        # The refused batch spent nothing: two single jobs still fit, a third does not.
        assert (await _post(gateway, key)).status_code == 202
        assert (await _post(gateway, key)).status_code == 202
        _assert_problem(await _post(gateway, key), 429, "rate-limited")
        assert await _count(gateway.runtime, Job) == 5

    async def test_batch_requests_have_their_own_budget(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await make_gateway(rate_limit_batch="2/minute")
        key = (await tenants.create(email_any=True)).api_key
        assert (await _batch(gateway, key, [ORDER])).status_code == 202
        assert (await _batch(gateway, key, [ORDER])).status_code == 202
        refused = await _batch(gateway, key, [ORDER])
        _assert_problem(refused, 429, "rate-limited")
        assert "batch rate limit of 2 per minute" in refused.json()["detail"]
        # Single submissions only spend the jobs budget.
        assert (await _post(gateway, key)).status_code == 202

    async def test_reads_are_limited_separately(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await make_gateway(rate_limit_reads="2/minute")
        key = (await tenants.create(email_any=True)).api_key
        created = (await _post(gateway, key)).json()
        first = await gateway.http.get("/v1/jobs", headers=auth(key))
        assert first.status_code == 200
        assert first.headers["RateLimit-Policy"] == '"reads";q=2;w=60'
        assert first.headers["RateLimit-Remaining"] == "1"
        second = await gateway.http.get(f"/v1/jobs/{created['id']}", headers=auth(key))
        assert second.status_code == 200
        before = _refusals("rate_limit", "reads")
        _assert_problem(await gateway.http.get("/v1/jobs", headers=auth(key)), 429, "rate-limited")
        assert _refusals("rate_limit", "reads") == before + 1
        # Reads and submissions are separate budgets.
        assert (await _post(gateway, key)).status_code == 202

    async def test_a_plan_overrides_the_default_limit(
        self, make_gateway: MakeGateway, tenants: TenantFactory, clock: ManualClock
    ) -> None:
        gateway = await make_gateway()
        small = await tenants.create(email_any=True)
        async with gateway.runtime.sessionmaker() as session:
            await set_plan(
                session,
                tenant_id=small.tenant_id,
                now=to_datetime(clock.now_ms()),
                plan="small",
                rate_limits={RouteClass.jobs: "1/minute"},
            )
            await session.commit()
        assert (await _post(gateway, small.api_key)).status_code == 202
        refused = await _post(gateway, small.api_key)
        _assert_problem(refused, 429, "rate-limited")
        assert refused.headers["RateLimit-Limit"] == "1"
        big = (await tenants.create(email_any=True)).api_key
        response = await _post(gateway, big)
        assert response.status_code == 202
        assert response.headers["RateLimit-Limit"] == "600"


class TestQueueDepth:
    async def test_full_queue_refuses_while_another_accepts_and_reopens_below_low(
        self,
        make_gateway: MakeGateway,
        tenants: TenantFactory,
        clock: ManualClock,
        writes: WriteRecorder,
    ) -> None:
        # The lifespan samples at start-up, then not again within the test: a background
        # sample racing the explicit ones below could land last with an older reading.
        gateway = await make_gateway(
            watermarks={"prestashop-sync": {"high_messages": 4, "low_messages": 2}},
            retry_after_fallback_seconds=17,
            sample_interval_ms=60_000,
        )
        engine = gateway.runtime.queue_engine
        key = (await tenants.create(email_any=True)).api_key
        for _ in range(4):
            assert (await _post(gateway, key)).status_code == 202
        await gateway.admission.refresh()
        before = _refusals("queue_depth", "jobs")
        writes.recording = True
        refused = await _post(gateway, key)
        writes.recording = False
        _assert_problem(refused, 503, "queue-full")
        assert "prestashop-sync" in refused.json()["detail"]
        # One sample: no drain rate yet, so the documented fallback.
        assert refused.headers["Retry-After"] == "17"
        assert writes.writes == []
        assert _refusals("queue_depth", "jobs") == before + 1
        # Other queues stay open, for singles and batches.
        assert (await _post(gateway, key, EMAIL)).status_code == 202
        _assert_problem(await _batch(gateway, key, [EMAIL, ORDER]), 503, "queue-full")

        # A consumer acks one message in two seconds: 0.5 msg/s, 3 left, low watermark 2.
        pulled = await engine.pull("prestashop-sync", batch_size=1)
        await engine.ack("prestashop-sync", acks=[pulled.messages[0].lease_id])
        clock.advance(seconds=2)
        await gateway.admission.refresh()
        still = await _post(gateway, key)
        _assert_problem(still, 503, "queue-full")  # between the watermarks: still closed
        assert still.headers["Retry-After"] == "2"  # (3 - 2) / 0.5 msg/s

        pulled = await engine.pull("prestashop-sync", batch_size=1)
        await engine.ack("prestashop-sync", acks=[pulled.messages[0].lease_id])
        clock.advance(seconds=1)
        await gateway.admission.refresh()
        assert (await _post(gateway, key)).status_code == 202  # at the low watermark: open
        assert await _count(gateway.runtime, Job) == 6

    async def test_admissions_between_samples_count_toward_the_high_watermark(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        # The lifespan samples at start-up, then not again within the test: a sample taken
        # while a request is between admission and commit would miss that request's job.
        gateway = await make_gateway(
            watermarks={"prestashop-sync": {"high_messages": 3, "low_messages": 1}},
            sample_interval_ms=60_000,
        )
        key = (await tenants.create(email_any=True)).api_key
        await gateway.admission.refresh()  # empty queue
        for _ in range(3):
            assert (await _post(gateway, key)).status_code == 202
        # No new sample yet, but the gateway counted what it admitted.
        _assert_problem(await _post(gateway, key), 503, "queue-full")

    async def test_unknown_depth_follows_the_policy(
        self, make_gateway: MakeGateway, tenants: TenantFactory, clock: ManualClock
    ) -> None:
        key = (await tenants.create(email_any=True)).api_key
        # The lifespan samples at start-up, then not again within the test.
        lenient = await make_gateway(sample_interval_ms=60_000)
        strict = await make_gateway(
            on_unknown="closed", retry_after_fallback_seconds=9, sample_interval_ms=60_000
        )
        await wait_until(lambda: _sampled(lenient) and _sampled(strict))
        clock.advance(seconds=11)  # the start-up samples are now older than stale_after_ms
        assert (await _post(lenient, key)).status_code == 202  # depth unknown: fail-open
        refused = await _post(strict, key)
        _assert_problem(refused, 503, "backpressure-unknown")
        assert refused.headers["Retry-After"] == "9"
        await strict.admission.refresh()
        assert (await _post(strict, key)).status_code == 202
        clock.advance(seconds=11)  # the sample is now older than stale_after_ms
        _assert_problem(await _post(strict, key), 503, "backpressure-unknown")

    async def test_cloudflare_backlog_plus_outbox_closes_the_queue(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await make_gateway(
            root={
                "queues": {"backend": "cloudflare"},
                "cloudflare": {
                    "api_token": "token",
                    "api_base_url": "http://127.0.0.1:9/client/v4",
                },
            },
            watermarks={"prestashop-sync": {"high_messages": 5, "low_messages": 2}},
        )
        backend = gateway.runtime.backend
        assert isinstance(backend, CloudflareQueues)
        key = (await tenants.create(email_any=True)).api_key
        # What the relay's last publish reported for each queue (no /metrics call needed).
        for queue in gateway.runtime.topology.routes.values():
            backend.last_metrics[queue] = QueueMetrics(0, 0, 0)
        backend.last_metrics["prestashop-sync"] = QueueMetrics(3, 300, 1)
        await gateway.admission.refresh()
        assert (await _post(gateway, key)).status_code == 202
        assert (await _post(gateway, key)).status_code == 202
        assert await _count(gateway.runtime, OutboxMessage) == 2
        await gateway.admission.refresh()  # 3 in Cloudflare + 2 in the outbox = 5
        _assert_problem(await _post(gateway, key), 503, "queue-full")
        assert (await _post(gateway, key, EMAIL)).status_code == 202


class TestQuota:
    async def test_in_flight_quota_refuses_naming_the_quota_until_jobs_finish(
        self,
        make_gateway: MakeGateway,
        tenants: TenantFactory,
        clock: ManualClock,
        writes: WriteRecorder,
    ) -> None:
        gateway = await make_gateway(retry_after_fallback_seconds=12)
        tenant = await tenants.create(email_any=True)
        async with gateway.runtime.sessionmaker() as session:
            await set_plan(
                session,
                tenant_id=tenant.tenant_id,
                now=to_datetime(clock.now_ms()),
                plan="trial",
                max_in_flight=2,
            )
            await session.commit()
        key = tenant.api_key
        assert (await _post(gateway, key)).status_code == 202
        assert (await _post(gateway, key)).status_code == 202
        before = _refusals("quota", "jobs")
        writes.recording = True
        refused = await _post(gateway, key)
        writes.recording = False
        _assert_problem(refused, 429, "quota-exceeded")
        assert "max_in_flight quota is 2" in refused.json()["detail"]
        assert refused.headers["Retry-After"] == "12"
        assert writes.writes == []
        assert _refusals("quota", "jobs") == before + 1
        # Another tenant is not affected.
        assert (
            await _post(gateway, (await tenants.create(email_any=True)).api_key)
        ).status_code == 202

        async with gateway.runtime.sessionmaker() as session:
            await session.execute(
                update(Job)
                .where(Job.tenant_id == tenant.tenant_id)  # type: ignore[arg-type]
                .values(status=JobStatus.succeeded.value)
            )
            await session.commit()
        # Past twice the count's cache: the next count sees the finished jobs. (A request
        # arriving while the background keeper re-reads it still decides from the old one.)
        clock.advance(seconds=3)

        async def admitted() -> bool:
            return (await _post(gateway, key)).status_code == 202

        await wait_until(admitted, timeout=10, message="the quota never freed up")
        _assert_problem(await _batch(gateway, key, [ORDER, ORDER]), 429, "quota-exceeded")


class TestBreaker:
    async def _open_breaker(
        self, runtime: Runtime, tenant_id: str, job_type: str, opened_at_ms: int
    ) -> None:
        async with runtime.sessionmaker() as session:
            session.add(
                CircuitBreaker(
                    tenant_id=tenant_id,
                    job_type=job_type,
                    state="open",
                    failures=5,
                    opened_at_ms=opened_at_ms,
                    updated_at=to_datetime(opened_at_ms),
                )
            )
            await session.commit()

    async def test_open_breaker_refuses_that_type_for_that_tenant_until_half_open(
        self,
        make_gateway: MakeGateway,
        tenants: TenantFactory,
        clock: ManualClock,
        writes: WriteRecorder,
    ) -> None:
        gateway = await make_gateway()
        cooldown = gateway.runtime.settings.breaker.cooldown_seconds
        tenant = await tenants.create(email_any=True)
        await self._open_breaker(gateway.runtime, tenant.tenant_id, "send-email", clock.now_ms())
        clock.advance(seconds=10)
        before = _refusals("breaker", "jobs")
        writes.recording = True
        refused = await _post(gateway, tenant.api_key, EMAIL)
        writes.recording = False
        _assert_problem(refused, 503, "breaker-open")
        assert refused.headers["Retry-After"] == str(cooldown - 10)
        assert writes.writes == []
        assert _refusals("breaker", "jobs") == before + 1
        # Other types of the tenant, and the same type of other tenants, go through.
        assert (await _post(gateway, tenant.api_key)).status_code == 202
        other = (await tenants.create(email_any=True)).api_key
        assert (await _post(gateway, other, EMAIL)).status_code == 202
        # A webhook for the pair is admitted, to be stored delayed until the breaker half-opens.
        async with gateway.runtime.sessionmaker() as session:
            admitted = await gateway.admission.admit_webhook(
                session, tenant.tenant_id, ["send-email"]
            )
        assert admitted.delay_seconds == cooldown - 10
        assert admitted.headers["RateLimit-Policy"] == ('"webhooks";q=1200;w=60, "jobs";q=600;w=60')
        clock.advance(seconds=cooldown - 10)  # half-open: a trial may run
        assert (await _post(gateway, tenant.api_key, EMAIL)).status_code == 202

    async def test_refusal_at_ingress_is_optional_per_type(
        self, make_gateway: MakeGateway, tenants: TenantFactory, clock: ManualClock
    ) -> None:
        gateway = await make_gateway(breaker_types="sync-orders")
        tenant = await tenants.create(email_any=True)
        await self._open_breaker(gateway.runtime, tenant.tenant_id, "send-email", clock.now_ms())
        assert (await _post(gateway, tenant.api_key, EMAIL)).status_code == 202
