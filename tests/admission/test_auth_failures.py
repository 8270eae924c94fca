"""Failed authentications are throttled per client address (memory, Redis, real HTTP)."""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime, build_runtime
from app.core.clock import ManualClock
from app.core.ids import uuid7
from app.main import create_app
from app.settings import Settings
from app.webhooks.verifiers import sign_headers
from tests.factories import TenantFactory, auth
from tests.support.asgi import asgi_client
from tests.support.servers import create_tenant, db_upgrade, jobgate_env, jobgate_server
from tests.support.waiting import wait_until

REDIS_URL = "redis://127.0.0.1:6379/9"
WRONG = auth("not-a-real-token")
ATTACKER = ("198.51.100.7", 4321)
BYSTANDER = ("203.0.113.9", 1234)


@asynccontextmanager
async def gateway(
    runtime: Runtime, *, client: tuple[str, int] = ATTACKER
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI as seen from `client`, with its lifespan (so Redis is closed)."""
    async with asgi_client(create_app(runtime=runtime), client=client) as http:
        yield http


def throttled_runtime(
    settings: Settings, clock: ManualClock, engine: AsyncEngine, **update: Any
) -> Runtime:
    return build_runtime(settings.updated(**update), clock=clock, engine=engine)


@pytest_asyncio.fixture
async def small_burst(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> AsyncIterator[Runtime]:
    built = throttled_runtime(
        settings, clock, db_engine, auth_failures={"burst": 5, "window_seconds": 60}
    )
    yield built
    await built.queue_engine.close()


@pytest.mark.asyncio
async def test_burst_then_429_with_retry_after_per_address(
    small_burst: Runtime, tenants: TenantFactory
) -> None:
    good = await TenantFactory(small_burst).create()
    async with gateway(small_burst) as attacker:
        statuses = [(await attacker.get("/v1/jobs", headers=WRONG)).status_code for _ in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        refused = await attacker.get("/v1/jobs", headers=WRONG)
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("/auth-failures")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # The address is blocked, whatever it sends: a credential is not even looked at.
        assert (await attacker.get("/v1/jobs", headers=auth(good.api_key))).status_code == 429
        # Outside /v1 nothing is throttled.
        assert (await attacker.get("/healthz")).status_code == 200
    # Another address has its own budget.
    async with gateway(small_burst, client=BYSTANDER) as bystander:
        assert (await bystander.get("/v1/jobs", headers=WRONG)).status_code == 401
        assert (await bystander.get("/v1/jobs", headers=auth(good.api_key))).status_code == 200


@pytest.mark.asyncio
async def test_successes_cost_nothing_and_bad_webhook_signatures_count(
    small_burst: Runtime, clock: ManualClock
) -> None:
    tenant = await TenantFactory(small_burst).create()
    body = b'{"type":"order.created"}'
    forged = sign_headers(["whsec_" + "A" * 32], "msg_1", clock.now_ms() // 1000, body)
    async with gateway(small_burst) as http:
        for _ in range(20):
            assert (await http.get("/v1/jobs", headers=auth(tenant.api_key))).status_code == 200
        url = f"/v1/webhooks/prestashop/{tenant.tenant_id}"
        statuses = [
            (await http.post(url, content=body, headers=forged)).status_code for _ in range(6)
        ]
        assert statuses == [401] * 5 + [429]


@pytest.mark.asyncio
async def test_the_block_ends_with_the_window(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> None:
    built = throttled_runtime(
        settings, clock, db_engine, auth_failures={"burst": 2, "window_seconds": 1}
    )
    try:
        async with gateway(built) as http:
            for _ in range(2):
                assert (await http.get("/v1/jobs", headers=WRONG)).status_code == 401
            assert (await http.get("/v1/jobs", headers=WRONG)).status_code == 429

            async def unblocked() -> bool:
                return (await http.get("/v1/jobs", headers=WRONG)).status_code != 429

            await wait_until(
                unblocked, timeout=10, interval=0.2, message="the block outlived its window"
            )
    finally:
        await built.queue_engine.close()


@pytest.mark.asyncio
async def test_gateways_sharing_redis_share_the_budget(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> None:
    prefix = f"jobgate-test-{secrets.token_hex(4)}"
    built = throttled_runtime(
        settings,
        clock,
        db_engine,
        admission={"redis_url": REDIS_URL, "redis_prefix": prefix},
        auth_failures={"burst": 4, "window_seconds": 60},
    )
    try:
        async with gateway(built) as first, gateway(built) as second:
            for _ in range(4):
                assert (await first.get("/v1/jobs", headers=WRONG)).status_code == 401
            # The second gateway has not seen this address fail: it learns from the shared
            # count on the first failure it sees, and refuses from then on.
            assert (await second.get("/v1/jobs", headers=WRONG)).status_code == 401
            assert (await second.get("/v1/jobs", headers=WRONG)).status_code == 429
            assert (await first.get("/v1/jobs", headers=WRONG)).status_code == 429
    finally:
        await built.queue_engine.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        assert keys, "the failures were not counted in Redis"
        await client.delete(*keys)
        await client.aclose()


@pytest.mark.asyncio
async def test_unknown_tenant_costs_about_what_a_bad_signature_costs(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> None:
    built = throttled_runtime(settings, clock, db_engine, auth_failures={"burst": 10_000})
    try:
        tenant = await TenantFactory(built).create()
        body = b'{"type":"order.created","padding":"' + b"x" * 4000 + b'"}'
        forged = sign_headers(["whsec_" + "A" * 32], "msg_1", clock.now_ms() // 1000, body)
        timings: dict[str, list[float]] = {"known": [], "unknown": []}
        async with gateway(built) as http:
            for _ in range(60):  # interleaved, so drift on a noisy machine hits both alike
                for kind, tenant_id in (("known", tenant.tenant_id), ("unknown", uuid7())):
                    started = time.perf_counter()
                    response = await http.post(
                        f"/v1/webhooks/prestashop/{tenant_id}", content=body, headers=forged
                    )
                    timings[kind].append(time.perf_counter() - started)
                    assert response.status_code == 401
        known, unknown = (statistics.median(timings[k]) for k in ("known", "unknown"))
        print(f"median 401: known tenant {known * 1000:.2f} ms, unknown {unknown * 1000:.2f} ms")
        assert abs(known - unknown) < max(0.002, 0.5 * max(known, unknown))
    finally:
        await built.queue_engine.close()


@pytest.mark.asyncio
async def test_forged_webhooks_are_refused_before_their_body_is_read(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    tenant = await tenants.create()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(4):
            sent += 1
            yield b"x" * 65_536

    url = f"/v1/webhooks/prestashop/{tenant.tenant_id}"
    # No signature headers: refused on the headers alone.
    response = await client.post(url, content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 401
    assert sent <= 1
    # A declared size over the cap: 413 before anything is read.
    sent = 0
    response = await client.post(
        url, content=body(), headers={"content-length": str(10 * 1024 * 1024)}
    )
    assert response.status_code == 413
    assert sent <= 1


@pytest.mark.slow
def test_over_real_http_a_flood_of_wrong_tokens_is_cut_off(tmp_path: Path) -> None:
    """`jobgate serve`: 200 wrong admin tokens; a proxy-forwarded client keeps its budget."""
    env = jobgate_env(
        f"sqlite:///{tmp_path / 'auth.db'}",
        extra={"JOBGATE_ADMIN_TOKEN": "the-real-admin-token", "JOBGATE_AUTH_FAILURE_BURST": "10"},
    )
    db_upgrade(env)
    created = create_tenant(env, "victim")
    with (
        jobgate_server("serve", env=env) as running,
        httpx.Client(base_url=running.base_url, timeout=10) as http,
    ):
        statuses = [http.get("/v1/admin/tenants", headers=WRONG).status_code for _ in range(200)]
        assert statuses[:10] == [401] * 10
        assert set(statuses[10:]) == {429}
        # Loopback is a trusted proxy by default: the forwarded client is another address.
        forwarded = {**auth(created["api_key"]), "X-Forwarded-For": "192.0.2.44"}
        assert http.get("/v1/jobs", headers=forwarded).status_code == 200


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_a_flood_of_forged_256kb_webhooks_costs_the_gateway_little(tmp_path: Path) -> None:
    """Server CPU per forged delivery (not wall time, which the shared machine skews)."""
    env = jobgate_env(f"sqlite:///{tmp_path / 'flood.db'}")
    db_upgrade(env)
    created = create_tenant(env, "shop")
    body = b'{"type":"order.created","pad":"' + b"x" * (256 * 1024 - 64) + b'"}'
    statuses: Counter[int] = Counter()
    with (
        jobgate_server("serve", env=env) as running,
        httpx.Client(base_url=running.base_url, timeout=30) as http,
    ):
        url = f"/v1/webhooks/prestashop/{created['tenant_id']}"
        http.get("/healthz")
        before = _cpu_seconds(running.pid)
        for n in range(300):
            forged = sign_headers(["whsec_" + "A" * 32], f"msg_{n}", int(time.time()), body)
            statuses[http.post(url, content=body, headers=forged).status_code] += 1
        per_request_ms = (_cpu_seconds(running.pid) - before) / 300 * 1000
        assert http.get("/v1/jobs", headers=auth(created["api_key"])).status_code == 429
    print(f"forged webhooks: {dict(statuses)}, gateway CPU {per_request_ms:.2f} ms per delivery")
    assert statuses[401] == 30  # the default burst
    assert statuses[429] == 270
    assert per_request_ms < 2.5  # about 5 ms before: every body read, hashed, refused


@pytest.mark.asyncio
async def test_ipv6_clients_share_a_budget_per_64(small_burst: Runtime) -> None:
    application = create_app(runtime=small_burst)  # one app: one in-memory budget store
    statuses = []
    for host in range(7):
        transport = httpx.ASGITransport(app=application, client=(f"2001:db8:1:2::{host + 1:x}", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            statuses.append((await http.get("/v1/jobs", headers=WRONG)).status_code)
    assert statuses == [401] * 5 + [429] * 2
    other_64 = httpx.ASGITransport(app=application, client=("2001:db8:1:3::1", 1))
    async with httpx.AsyncClient(transport=other_64, base_url="http://test") as http:
        assert (await http.get("/v1/jobs", headers=WRONG)).status_code == 401
