"""jobgate's Cloudflare client handles the codes the emulator answers and the shapes the real
Cloudflare documents: concurrent provisioning (409 on a taken name, 10105 on a second
consumer) and a paused queue's pull (429 code 10252 here, 409 `queue_delivery_paused` in the
pause documentation)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.queues.cloudflare import CloudflareQueues, RetryPolicy
from app.queues.errors import QueuePaused, Retry
from app.queues.topology import DEFAULT_RETENTION_SECONDS, ConsumerConfig, QueueSettings, Topology
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator

pytestmark = pytest.mark.asyncio


def _topology() -> Topology:
    def settings(name: str, dlq: str | None) -> QueueSettings:
        return QueueSettings(
            name=name,
            delivery_delay=0,
            message_retention_period=DEFAULT_RETENTION_SECONDS,
            max_retries=3,
            dead_letter_queue=dlq,
            retry_delay=0,
        )

    return Topology(
        queues={"jobs": settings("jobs", "jobs-dlq"), "jobs-dlq": settings("jobs-dlq", None)},
        consumers={"jobs": ConsumerConfig(queue="jobs", dead_letter_queue="jobs-dlq")},
        routes={},
        producer_bindings={},
    )


def _client(emulator: Emulator) -> CloudflareQueues:
    return CloudflareQueues(
        account_id=ACCOUNT,
        api_token=TOKEN,
        base_url=emulator.api_url,
        retry=RetryPolicy(max_retries=0),
    )


@pytest.mark.parametrize("queues_exist", [False, True])
async def test_concurrent_starts_provision_once(emulator: Emulator, queues_exist: bool) -> None:
    if queues_exist:  # every process then races for the consumer at the same moment
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=emulator.queues_url, headers=headers) as api:
            for name in ("jobs", "jobs-dlq"):
                assert (await api.post("", json={"queue_name": name})).status_code == 200
    clients = [_client(emulator) for _ in range(6)]
    try:
        await asyncio.gather(*(client.start(_topology()) for client in clients))
        ids = {client.queue_id("jobs") for client in clients}
        assert len(ids) == 1
        state = emulator.control("GET", "state")
        by_name = {q["queue_name"]: q for q in state["queues"]}
        assert sorted(by_name) == ["jobs", "jobs-dlq"]
        consumers = by_name["jobs"]["consumers"]
        assert [(c["type"], c["dead_letter_queue"]) for c in consumers] == [
            ("http_pull", "jobs-dlq")
        ]
    finally:
        for client in clients:
            await client.close()


async def test_paused_pull_is_an_empty_pull_not_retried(emulator: Emulator) -> None:
    client = CloudflareQueues(
        account_id=ACCOUNT,
        api_token=TOKEN,
        base_url=emulator.api_url,
        retry=RetryPolicy(max_retries=3, base_delay=5.0),  # a retry would take seconds
    )
    try:
        await client.start(_topology())
        await client.pause("jobs")
        pulled = await asyncio.wait_for(client.pull("jobs"), timeout=3.0)
        assert pulled.messages == []
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (429, 10252, "queue_delivery_paused"),  # the emulator: the error table's class
        (409, 0, "queue_delivery_paused"),  # the pause documentation: status and message
        (409, 10252, "Queue disabled"),
    ],
)
async def test_both_paused_shapes_are_queue_paused(status: int, code: int, message: str) -> None:
    errors = [{"code": code, "message": message}] if code else [{"message": message}]
    response = httpx.Response(
        status,
        json={"success": False, "errors": errors, "messages": [], "result": None},
        request=httpx.Request("POST", "https://api.cloudflare.com/client/v4/x"),
    )
    error = CloudflareQueues._error(response)
    assert isinstance(error, QueuePaused)
    assert error.retry is Retry.retryable  # an operator resumes it; the relay waits
