"""Outage: Cloudflare (the emulator, a real process) fails every publish for a while.

The gateway (a real `jobgate serve` on the cloudflare backend) keeps answering 202; after
recovery every accepted job is in the queue exactly once per outbox row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from app.core.config import REPO_ROOT
from app.jobs.payloads import JOB_TYPES
from app.queues.cloudflare import CloudflareQueues
from app.queues.topology import load_topology
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator
from tests.support.servers import ServerProcess, create_tenant, jobgate_env, jobgate_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

JOBS_BEFORE = 30
JOBS_DURING = 120


@pytest.fixture(scope="module")
def emulator(database: tuple[str, str | None]) -> Iterator[Emulator]:
    running = Emulator(start_emulator(emulator_env(database)))
    try:
        yield running
    finally:
        running.close()


def _gateway_env(database: tuple[str, str | None], emulator: Emulator) -> dict[str, str]:
    url, schema = database
    return jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_QUEUE_BACKEND": "cloudflare",
            "JOBGATE_CF_API_TOKEN": TOKEN,
            "JOBGATE_CF_ACCOUNT_ID": ACCOUNT,
            "JOBGATE_CF_API_BASE_URL": emulator.api_url,
            "JOBGATE_CF_MAX_RETRIES": "2",
            "JOBGATE_OUTBOX_LINGER_MS": "100",
            "JOBGATE_RATE_LIMIT_JOBS": "100000/minute",
        },
    )


async def _submit(client: httpx.AsyncClient, key: str, first: int, count: int) -> list[str]:
    async def one(order_id: int) -> str:
        response = await client.post(
            "/v1/jobs",
            json={"type": "sync-single-order", "orderId": order_id},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "accepted"
        return str(response.json()["id"])

    ids: list[str] = []
    for start in range(first, first + count, 10):
        ids += await asyncio.gather(*(one(i) for i in range(start, start + 10)))
    return ids


async def _wait_all_queued(
    client: httpx.AsyncClient, key: str, ids: list[str], timeout: float
) -> float:
    started = time.monotonic()
    pending = set(ids)

    async def all_queued() -> bool:
        for job_id in list(pending)[:50]:
            response = await client.get(
                f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
            )
            if response.json()["status"] == "queued":
                pending.discard(job_id)
        return not pending

    await wait_until(
        all_queued,
        timeout=timeout,
        interval=0.2,
        message=lambda: f"{len(pending)} jobs still not queued",
    )
    return time.monotonic() - started


@pytest.mark.asyncio
async def test_publish_outage_loses_and_duplicates_nothing(
    database: tuple[str, str | None], emulator: Emulator
) -> None:
    emulator.reset()
    env = _gateway_env(database, emulator)
    tenant = create_tenant(env, "outage")
    key = tenant["api_key"]
    gateway: ServerProcess = jobgate_server("serve", env=env).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30.0) as client:
            before = await _submit(client, key, 1, JOBS_BEFORE)
            await _wait_all_queued(client, key, before, timeout=60)

            # Outage: dropped connections, then 429s with Retry-After, then 500s until cleared.
            emulator.faults(kind="drop", count=5, match="/messages/batch")
            emulator.faults(kind="rate_limit", count=5, retry_after=1, match="/messages/batch")
            emulator.faults(kind="error", count=100_000, match="/messages/batch")
            during = await _submit(client, key, 1000, JOBS_DURING)
            await asyncio.sleep(3)
            states = [
                (
                    await client.get(f"/v1/jobs/{i}", headers={"Authorization": f"Bearer {key}"})
                ).json()["status"]
                for i in during[:20]
            ]
            assert set(states) == {"accepted"}, states
            emulator.http.delete(f"{emulator.base_url}/_emulator/faults")
            drain_seconds = await _wait_all_queued(client, key, during, timeout=120)
            print(
                f"\noutage: accepted {len(before)} before + {len(during)} during (all 202); "
                f"all queued {drain_seconds:.1f}s after recovery"
            )
    finally:
        gateway.terminate()

    # Every accepted job is in the queue exactly once.
    topology = load_topology(REPO_ROOT / "wrangler.jsonc", job_types=JOB_TYPES)
    reader = CloudflareQueues(account_id=ACCOUNT, api_token=TOKEN, base_url=emulator.api_url)
    try:
        await reader.start(topology)
        seen: list[str] = []
        while True:
            pulled = await reader.pull("prestashop-sync", batch_size=100)
            if not pulled.messages:
                break
            seen += [m.body["job_id"] for m in pulled.messages]
            await reader.ack("prestashop-sync", acks=[m.lease_id for m in pulled.messages])
    finally:
        await reader.close()
    print(f"queue held {len(seen)} messages for {len(before) + len(during)} accepted jobs")
    assert len(seen) == len(set(seen)), "a job was published twice"
    assert sorted(seen) == sorted(before + during)
