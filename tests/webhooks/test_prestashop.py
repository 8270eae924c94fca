"""The signed PrestaShop ingress: jobs, refusals, replays, debouncing, rotation, atomicity."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.consumer.models import CircuitBreaker
from app.core.clock import ManualClock, to_datetime
from app.core.ids import uuid7
from app.handlers import service as handlers_service
from app.handlers.shop_url import ShopUrlGuard
from app.jobs.models import Job
from app.tenants import service as tenants_service
from app.tenants.schemas import TenantCreated
from app.webhooks.models import WebhookEvent
from app.webhooks.verifiers import sign_headers
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio

ORDER_EVENT = {
    "type": "order.created",
    "shop": {"id": 1, "url": "https://shop.example"},
    "data": {"id_order": 42, "current_state": 2},
    "occurred_at": "2026-11-28T13:00:00Z",
}


def product_event(product_id: int, kind: str = "product.updated") -> dict[str, Any]:
    return {
        "type": kind,
        "shop": {"id": "1"},
        "data": {"id_product": product_id},
        "occurred_at": "2026-11-28T13:00:00Z",
    }


FORGED_SECRET = "whsec_" + "A" * 32


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


async def count(runtime: Runtime, model: Any, **where: Any) -> int:
    stmt = select(func.count()).select_from(model)
    for name, value in where.items():
        stmt = stmt.where(getattr(model, name) == value)
    async with runtime.sessionmaker() as session:
        return int((await session.execute(stmt)).scalar_one())


def refusals(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "jobgate_webhook_refusals_total", {"source": "prestashop", "reason": reason}
    )
    return value or 0.0


@pytest_asyncio.fixture
async def tenant(tenants: TenantFactory) -> TenantCreated:
    return await tenants.create()


class Sender:
    """Posts events the way the PrestaShop module does, at the test clock's time."""

    def __init__(self, client: httpx.AsyncClient, clock: ManualClock, tenant: TenantCreated):
        self.client = client
        self.clock = clock
        self.tenant = tenant
        self._n = 0

    def headers(
        self, body: bytes, *, secrets: list[str] | None = None, msg_id: str | None = None
    ) -> dict[str, str]:
        self._n += 1
        return sign_headers(
            secrets or [self.tenant.webhook_secret],
            msg_id or f"msg_test_{self._n}",
            self.clock.now_ms() // 1000,
            body,
        )

    async def post(
        self,
        body: bytes,
        headers: dict[str, str] | None = None,
        tenant_id: str | None = None,
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/webhooks/prestashop/{tenant_id or self.tenant.tenant_id}",
            content=body,
            headers=headers if headers is not None else self.headers(body),
        )


@pytest.fixture
def sender(client: httpx.AsyncClient, clock: ManualClock, tenant: TenantCreated) -> Sender:
    return Sender(client, clock, tenant)


class TestOrders:
    async def test_order_event_makes_exactly_one_sync_single_order_job(
        self, sender: Sender, runtime: Runtime, tenant: TenantCreated, client: httpx.AsyncClient
    ) -> None:
        response = await sender.post(body_of(ORDER_EVENT))
        assert response.status_code == 202, response.text
        [job_id] = response.json()["jobs"]
        assert response.json()["replay"] is False
        async with runtime.sessionmaker() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            assert job.tenant_id == tenant.tenant_id
            assert job.type == "sync-single-order"
            assert job.payload == {"orderId": 42, "siteId": None}
        assert await count(runtime, Job) == 1
        pulled = await runtime.queue_engine.pull("prestashop-sync", batch_size=10)
        assert [m.body["job_id"] for m in pulled.messages] == [job_id]
        # The tenant sees it through the jobs API.
        seen = await client.get(f"/v1/jobs/{job_id}", headers=auth(tenant.api_key))
        assert seen.status_code == 200

    async def test_status_change_makes_a_job_with_the_shop_site(
        self, sender: Sender, runtime: Runtime, tenant: TenantCreated
    ) -> None:
        async with runtime.sessionmaker() as session:
            await handlers_service.set_shop_connection(
                session,
                tenant_id=tenant.tenant_id,
                site_id="main",
                base_url="https://shop.example/",
                key="A" * 32,
                box=runtime.box,
                guard=ShopUrlGuard(),
            )
            await session.commit()
        event = {**ORDER_EVENT, "type": "order.status_changed"}
        response = await sender.post(body_of(event))
        assert response.status_code == 202
        async with runtime.sessionmaker() as session:
            job = await session.get(Job, response.json()["jobs"][0])
            assert job is not None
            assert job.payload == {"orderId": 42, "siteId": "main"}  # matched by URL

    async def test_replay_answers_200_with_the_original_jobs_and_creates_nothing(
        self, sender: Sender, runtime: Runtime, clock: ManualClock
    ) -> None:
        body = body_of(ORDER_EVENT)
        headers = sender.headers(body, msg_id="msg_replayed")
        first = await sender.post(body, headers)
        assert first.status_code == 202
        clock.advance(seconds=60)
        again = await sender.post(body, sender.headers(body, msg_id="msg_replayed"))
        assert again.status_code == 200
        assert again.json() == {"jobs": first.json()["jobs"], "replay": True}
        assert await count(runtime, Job) == 1
        assert await count(runtime, WebhookEvent) == 1


class TestRefusals:
    async def test_tampered_body(self, sender: Sender, runtime: Runtime) -> None:
        body = body_of(ORDER_EVENT)
        headers = sender.headers(body)
        before = refusals("signature")
        response = await sender.post(body.replace(b"42", b"43"), headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert "www-authenticate" in response.headers
        assert refusals("signature") == before + 1
        assert await count(runtime, Job) == 0

    async def test_wrong_secret(self, sender: Sender, runtime: Runtime) -> None:
        body = body_of(ORDER_EVENT)
        forged = sender.headers(body, secrets=["whsec_" + "A" * 32])
        assert (await sender.post(body, forged)).status_code == 401
        assert await count(runtime, Job) == 0

    async def test_another_tenants_secret(
        self, sender: Sender, tenants: TenantFactory, runtime: Runtime
    ) -> None:
        other = await tenants.create("other")
        body = body_of(ORDER_EVENT)
        response = await sender.post(body, sender.headers(body, secrets=[other.webhook_secret]))
        assert response.status_code == 401
        assert await count(runtime, Job) == 0

    @pytest.mark.parametrize("offset", [-301, 301])
    async def test_stale_and_future_timestamps(
        self, sender: Sender, clock: ManualClock, runtime: Runtime, offset: int
    ) -> None:
        body = body_of(ORDER_EVENT)
        headers = sender.headers(body)
        clock.advance(seconds=-offset)  # the delivery is `offset` seconds off our clock
        before = refusals("stale")
        assert (await sender.post(body, headers)).status_code == 401
        assert refusals("stale") == before + 1
        assert await count(runtime, Job) == 0

    async def test_timestamp_at_the_edge_of_the_tolerance_is_accepted(
        self, sender: Sender, clock: ManualClock
    ) -> None:
        body = body_of(ORDER_EVENT)
        headers = sender.headers(body)
        clock.advance(seconds=300)
        assert (await sender.post(body, headers)).status_code == 202

    @pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
    async def test_missing_headers(self, sender: Sender, missing: str) -> None:
        body = body_of(ORDER_EVENT)
        headers = sender.headers(body)
        del headers[missing]
        assert (await sender.post(body, headers)).status_code == 401

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("webhook-timestamp", "12.5"),
            ("webhook-timestamp", "soon"),
            ("webhook-signature", "garbage"),
            ("webhook-signature", "v1,@@@"),
            ("webhook-id", "a.b"),
        ],
    )
    async def test_garbage_headers(self, sender: Sender, name: str, value: str) -> None:
        body = body_of(ORDER_EVENT)
        headers = sender.headers(body)
        headers[name] = value
        assert (await sender.post(body, headers)).status_code == 401

    async def test_unknown_tenant_is_the_same_401_as_a_bad_signature(self, sender: Sender) -> None:
        body = body_of(ORDER_EVENT)
        before = refusals("unknown_tenant")
        unknown = await sender.post(body, sender.headers(body), tenant_id=uuid7())
        assert refusals("unknown_tenant") == before + 1
        forged = await sender.post(body, sender.headers(body, secrets=[FORGED_SECRET]))
        for response in (unknown, forged):
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == 'Webhook-Signature realm="jobgate"'
        # Same problem document apart from `instance` (the path, which the caller sent).
        assert {**unknown.json(), "instance": ""} == {**forged.json(), "instance": ""}
        # Without a fresh, well-formed signature header an unknown tenant looks like any other.
        stale = sender.headers(body)
        stale["webhook-timestamp"] = "1"
        assert (await sender.post(body, stale, tenant_id=uuid7())).status_code == 401

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[]",
            body_of({**ORDER_EVENT, "type": "order.exploded"}),
            body_of({**ORDER_EVENT, "data": {}}),
            body_of({**ORDER_EVENT, "data": {"id_order": -1}}),
            body_of({k: v for k, v in ORDER_EVENT.items() if k != "shop"}),
        ],
    )
    async def test_malformed_payload_is_422(
        self, sender: Sender, runtime: Runtime, body: bytes
    ) -> None:
        response = await sender.post(body)
        assert response.status_code == 422, response.text
        assert await count(runtime, Job) == 0
        assert await count(runtime, WebhookEvent) == 0

    async def test_oversized_body_is_413(self, sender: Sender, runtime: Runtime) -> None:
        limit = runtime.settings.webhooks.max_body_bytes
        body = body_of({**ORDER_EVENT, "padding": "x" * limit})
        assert (await sender.post(body)).status_code == 413


class TestProductDebounce:
    async def test_a_burst_of_hook_calls_makes_one_delayed_sync(
        self, sender: Sender, runtime: Runtime, clock: ManualClock
    ) -> None:
        window = runtime.settings.webhooks.product_debounce_seconds
        clock.set((clock.now_ms() // (window * 1000)) * window * 1000)  # start of a bucket
        ids = set()
        for n in range(12):  # one product save fires about this many hooks
            response = await sender.post(body_of(product_event(7 + n % 2)))
            assert response.status_code == 202
            ids.update(response.json()["jobs"])
            clock.advance(ms=100)
        assert len(ids) == 1
        async with runtime.sessionmaker() as session:
            job = await session.get(Job, ids.pop())
            assert job is not None
            assert job.type == "sync-products"
            assert job.payload == {"siteId": "1", "incremental": True, "linkVendors": True}
            assert job.delay_seconds == window
        assert await count(runtime, Job) == 1
        assert await count(runtime, WebhookEvent) == 12
        # The next window makes the next sync.
        clock.advance(seconds=window)
        later = await sender.post(body_of(product_event(7, "product.deleted")))
        assert later.status_code == 202
        assert await count(runtime, Job) == 2


class TestRotation:
    async def test_old_and_new_secrets_both_verify_until_the_old_is_revoked(
        self, sender: Sender, runtime: Runtime, tenant: TenantCreated
    ) -> None:
        async with runtime.sessionmaker() as session:
            new_secret, _ = await tenants_service.add_webhook_secret(
                session, tenant_id=tenant.tenant_id, box=runtime.box
            )
            await session.commit()
        body = body_of(ORDER_EVENT)
        assert (await sender.post(body, sender.headers(body))).status_code == 202
        assert (
            await sender.post(body, sender.headers(body, secrets=[new_secret]))
        ).status_code == 202
        async with runtime.sessionmaker() as session:
            rows = await tenants_service.list_webhook_secrets(session, tenant_id=tenant.tenant_id)
            await tenants_service.revoke_webhook_secret(
                session, tenant_id=tenant.tenant_id, secret_id=rows[0].id
            )
            await session.commit()
        assert (await sender.post(body, sender.headers(body))).status_code == 401
        assert (
            await sender.post(body, sender.headers(body, secrets=[new_secret]))
        ).status_code == 202


class TestAtomicity:
    async def test_store_down_answers_5xx_and_keeps_nothing(
        self, sender: Sender, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from sqlalchemy.exc import OperationalError

        from app.webhooks import service as webhooks_service

        original = webhooks_service.record_event

        async def failing(*args: Any, **kwargs: Any) -> Any:
            await original(*args, **kwargs)  # event and job written, then the store fails
            raise OperationalError("COMMIT", {}, Exception("connection lost"))

        monkeypatch.setattr(webhooks_service, "record_event", failing)
        body = body_of(ORDER_EVENT)
        headers = sender.headers(body, msg_id="msg_retry_me")
        response = await sender.post(body, headers)
        assert response.status_code == 503
        assert await count(runtime, Job) == 0
        assert await count(runtime, WebhookEvent) == 0
        monkeypatch.setattr(webhooks_service, "record_event", original)
        retried = await sender.post(body, headers)  # the sender's retry goes through
        assert retried.status_code == 202
        assert await count(runtime, Job) == 1


class TestOpenBreaker:
    async def test_webhook_is_stored_delayed_not_refused_while_the_breaker_is_open(
        self, sender: Sender, runtime: Runtime, tenant: TenantCreated, clock: ManualClock
    ) -> None:
        cooldown = runtime.settings.breaker.cooldown_seconds
        async with runtime.sessionmaker() as session:
            session.add(
                CircuitBreaker(
                    tenant_id=tenant.tenant_id,
                    job_type="sync-single-order",
                    state="open",
                    failures=5,
                    opened_at_ms=clock.now_ms(),
                    updated_at=to_datetime(clock.now_ms()),
                )
            )
            await session.commit()
        clock.advance(seconds=5)
        response = await sender.post(body_of(ORDER_EVENT))
        assert response.status_code == 202, response.text
        [job_id] = response.json()["jobs"]
        async with runtime.sessionmaker() as session:
            job = await session.get(Job, job_id)
        assert job is not None
        assert job.delay_seconds == cooldown - 5
        # Not deliverable before the breaker half-opens, deliverable after.
        assert (await runtime.queue_engine.pull("prestashop-sync")).messages == []
        clock.advance(seconds=cooldown - 5)
        assert len((await runtime.queue_engine.pull("prestashop-sync")).messages) == 1
