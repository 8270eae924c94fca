"""The operator's queue controls over the gateway's API, on the local engine: numbers per
topology queue, pause and resume (shared with the engine's pulls), purge with confirmation
and what it does to the waiting jobs. Callers other than the operator are refused
(`tests/tenants/test_roles.py` walks every kind of caller over every admin route)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.core.errors import ServiceUnavailable
from app.jobs import lifecycle
from app.queues.base import OutgoingMessage
from app.queues.cloudflare import CloudflareQueues, RetryPolicy
from app.queues.service import QueueControls
from app.tenants import service as tenants_service
from tests.factories import TenantFactory, auth
from tests.support.servers import free_port

pytestmark = pytest.mark.asyncio

QUEUE = "analytics-events"
DLQ = "analytics-events-dlq"


async def operator(runtime: Runtime) -> dict[str, str]:
    async with runtime.sessionmaker() as session:
        key, _ = await tenants_service.create_operator_key(session, name="ops")
        await session.commit()
    return auth(key)


async def submit(client: httpx.AsyncClient, key: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        body = {"type": "analytics-event", "name": f"e{n}"}
        response = await client.post("/v1/jobs", json=body, headers=auth(key))
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def queues(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/v1/admin/queues", headers=headers)
    assert response.status_code == 200, response.text
    return {row["name"]: row for row in response.json()["data"]}


async def test_lists_every_topology_queue_with_its_numbers(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory, clock: ManualClock
) -> None:
    ops = await operator(runtime)
    tenant = await tenants.create()
    rows = await queues(client, ops)
    assert list(rows) == list(runtime.topology.queues)
    assert rows[QUEUE] == {
        "name": QUEUE,
        "backlog": 0,
        "in_flight": 0,
        "oldest_age_seconds": None,
        "dead_letter_queue": DLQ,
        "dead_letter_backlog": 0,
        "paused": False,
    }
    assert rows[DLQ]["dead_letter_queue"] is None
    assert rows[DLQ]["dead_letter_backlog"] is None

    await submit(client, tenant.api_key, 3)
    clock.advance(seconds=30)
    await runtime.queue_engine.pull(QUEUE, batch_size=1, visibility_timeout_ms=60_000)
    await runtime.queue_engine.send(DLQ, OutgoingMessage(body={"job_id": "x"}))
    row = (await queues(client, ops))[QUEUE]
    assert (row["backlog"], row["in_flight"], row["dead_letter_backlog"]) == (3, 1, 1)
    assert row["oldest_age_seconds"] == pytest.approx(30, abs=1)
    # The lease runs out: in flight no more, still in the backlog.
    clock.advance(seconds=61)
    row = (await queues(client, ops))[QUEUE]
    assert (row["backlog"], row["in_flight"]) == (3, 0)


async def test_a_paused_queue_accepts_jobs_and_delivers_none_until_resumed(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory
) -> None:
    ops = await operator(runtime)
    tenant = await tenants.create()
    paused = await client.post(f"/v1/admin/queues/{QUEUE}/pause", headers=ops)
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    again = await client.post(f"/v1/admin/queues/{QUEUE}/pause", headers=ops)
    assert again.json()["paused"] is True  # idempotent
    await submit(client, tenant.api_key, 2)
    assert (await runtime.queue_engine.pull(QUEUE)).messages == []
    assert (await queues(client, ops))[QUEUE]["backlog"] == 2
    # Other queues are not affected.
    assert (await queues(client, ops))["email-sending"]["paused"] is False

    resumed = await client.post(f"/v1/admin/queues/{QUEUE}/resume", headers=ops)
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert len((await runtime.queue_engine.pull(QUEUE)).messages) == 2


async def test_purge_needs_the_name_and_cancels_the_waiting_jobs(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory, clock: ManualClock
) -> None:
    ops = await operator(runtime)
    tenant = await tenants.create()
    ids = await submit(client, tenant.api_key, 3)
    url = f"/v1/admin/queues/{QUEUE}/purge"
    for body in (None, {}, {"confirm": "email-sending"}):
        refused = await client.post(url, json=body, headers=ops)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert f'"confirm": "{QUEUE}"' in refused.json()["detail"]
    assert (await queues(client, ops))[QUEUE]["backlog"] == 3

    clock.advance(seconds=1)
    purged = await client.post(url, json={"confirm": QUEUE}, headers=ops)
    assert purged.status_code == 200, purged.text
    assert purged.json() == {"queue": QUEUE, "purged": 3, "cancelled_jobs": 3}
    assert (await queues(client, ops))[QUEUE]["backlog"] == 0
    for job_id in ids:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=auth(tenant.api_key))).json()
        assert job["status"] == "cancelled"
        assert "purged from queue 'analytics-events'" in job["last_error"]
    # A job submitted after the purge is not touched by it.
    [later] = await submit(client, tenant.api_key, 1)
    again = await client.post(url, json={"confirm": QUEUE}, headers=ops)
    assert again.json()["cancelled_jobs"] == 1
    assert later


async def test_a_dead_letter_queue_can_be_purged(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    ops = await operator(runtime)
    await runtime.queue_engine.send(DLQ, OutgoingMessage(body={"job_id": "x"}))
    purged = await client.post(f"/v1/admin/queues/{DLQ}/purge", json={"confirm": DLQ}, headers=ops)
    assert purged.json() == {"queue": DLQ, "purged": 1, "cancelled_jobs": 0}
    assert (await queues(client, ops))[QUEUE]["dead_letter_backlog"] == 0


@pytest.mark.parametrize("action", ["pause", "resume", "purge"])
async def test_an_unknown_queue_is_404(
    client: httpx.AsyncClient, runtime: Runtime, action: str
) -> None:
    ops = await operator(runtime)
    response = await client.post(
        f"/v1/admin/queues/nope/{action}", json={"confirm": "nope"}, headers=ops
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/queues"),
        ("POST", f"/v1/admin/queues/{QUEUE}/pause"),
        ("POST", f"/v1/admin/queues/{QUEUE}/resume"),
        ("POST", f"/v1/admin/queues/{QUEUE}/purge"),
    ],
)
async def test_only_the_operator(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory, method: str, path: str
) -> None:
    tenant = await tenants.create()
    body = {"confirm": QUEUE}
    anonymous = await client.request(method, path, json=body)
    assert anonymous.status_code == 401
    refused = await client.request(method, path, json=body, headers=auth(tenant.api_key))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await runtime.queue_engine.stats(QUEUE)).paused is False


async def test_an_unreachable_cloudflare_is_a_503(runtime: Runtime) -> None:
    backend = CloudflareQueues(
        account_id="acc",
        api_token="token",
        base_url=f"http://127.0.0.1:{free_port()}/client/v4",
        retry=RetryPolicy(max_retries=0),
    )

    async def provisioning_fails() -> None:
        raise RuntimeError("the SDK's own error")

    def controls(prepare: Callable[[], Awaitable[None]] | None) -> QueueControls:
        return QueueControls(
            backend,
            runtime.topology,
            runtime.clock,
            cancel_purged=lifecycle.cancel_purged,
            running_by_queue=lifecycle.running_by_queue,
            prepare=prepare,
        )

    try:
        async with runtime.sessionmaker() as session:
            for prepare in (provisioning_fails, None):
                with pytest.raises(ServiceUnavailable):
                    await controls(prepare).list_queues(session)
                with pytest.raises(ServiceUnavailable):
                    await controls(prepare).pause(session, QUEUE)
    finally:
        await backend.close()
