"""Outbox coalescing and publish throughput through the Cloudflare emulator.

1. Starts `jobgate emulator` and a `jobgate serve` gateway on the cloudflare backend (both on
   fresh temporary SQLite files), drives sustained single-job load at the gateway, waits for
   the outbox to drain, and reads the relay's counters from `/metrics`: jobs per publish
   request (target >= 95; Cloudflare allows 1,200 requests per 5 minutes per token).
2. Measures raw publish throughput through the emulator, 100-message batches, three ways in
   the same run: jobgate's pooled httpx client, the official `cloudflare` SDK (async), and
   the relay draining a backlog; prints each as msgs/s and as a ratio of the httpx client.

    .venv/bin/python bench/outbox_coalescing.py [--duration 10] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from app.jobs.payloads import JOB_TYPES  # noqa: E402
from app.queues.base import OutgoingMessage  # noqa: E402
from app.queues.cloudflare import CloudflareQueues  # noqa: E402
from app.queues.topology import load_topology  # noqa: E402
from tests.support.servers import (  # noqa: E402
    ServerProcess,
    create_tenant,
    db_upgrade,
    jobgate_argv,
    jobgate_env,
    jobgate_server,
)

TOKEN = "bench-token"
ACCOUNT = "0123456789abcdef0123456789abcdef"
BODY = {"type": "sync-single-order", "orderId": 42}


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def sustained_load(base_url: str, key: str, duration: float, connections: int) -> int:
    """Single jobs from `connections` concurrent clients; returns how many got a 202."""
    accepted = 0
    deadline = time.monotonic() + duration
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal accepted
            while time.monotonic() < deadline:
                response = await client.post("/v1/jobs", json=BODY, headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text}")
                accepted += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return accepted


async def wait_drained(base_url: str, accepted: int, timeout: float = 120) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        started = time.monotonic()
        while True:
            text = (await client.get("/metrics")).text
            if metric(text, "jobgate_outbox_published_messages_total") >= accepted:
                return text
            if time.monotonic() - started > timeout:
                raise RuntimeError("the outbox did not drain")
            await asyncio.sleep(0.2)


async def raw_publish(api_url: str, seconds: float) -> tuple[float, float]:
    """msgs/s of 100-message batch pushes: (jobgate httpx client, official SDK)."""
    from cloudflare import AsyncCloudflare

    topology = load_topology(REPO_ROOT / "wrangler.jsonc", job_types=JOB_TYPES)
    client = CloudflareQueues(account_id=ACCOUNT, api_token=TOKEN, base_url=api_url)
    await client.start(topology)
    queue_id = client.queue_id("analytics-events")
    batch = [OutgoingMessage(body={"n": i, "pad": "x" * 200}) for i in range(100)]
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        await client.send_batch("analytics-events", batch)
        sent += len(batch)
    ours = sent / (time.monotonic() - started)
    await client.close()

    sdk = AsyncCloudflare(api_token=TOKEN, base_url=api_url, max_retries=0)
    messages = [{"body": m.body, "content_type": "json"} for m in batch]
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        await sdk.queues.messages.bulk_push(queue_id, account_id=ACCOUNT, messages=messages)  # type: ignore[arg-type]
        sent += len(batch)
    theirs = sent / (time.monotonic() - started)
    await sdk.close()
    return ours, theirs


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--publish-seconds", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jobgate-bench-") as tmp:
        emulator_env = jobgate_env(
            f"sqlite:///{tmp}/emulator.db",
            extra={
                "JOBGATE_CF_API_TOKEN": TOKEN,
                "JOBGATE_CF_ACCOUNT_ID": ACCOUNT,
                "JOBGATE_EMULATOR_RATE_LIMITS": "false",
            },
        )
        emulator = ServerProcess(
            lambda port: jobgate_argv("emulator", "--port", str(port)), env=emulator_env
        ).start()
        api_url = f"{emulator.base_url}/client/v4"
        gateway_env = jobgate_env(
            f"sqlite:///{tmp}/gateway.db",
            extra={
                "JOBGATE_QUEUE_BACKEND": "cloudflare",
                "JOBGATE_CF_API_TOKEN": TOKEN,
                "JOBGATE_CF_ACCOUNT_ID": ACCOUNT,
                "JOBGATE_CF_API_BASE_URL": api_url,
                "JOBGATE_RATE_LIMIT_JOBS": "1000000/minute",
            },
        )
        try:
            db_upgrade(gateway_env)
            key = create_tenant(gateway_env, "bench")["api_key"]
            gateway = jobgate_server("serve", env=gateway_env).start()
            try:
                started = time.monotonic()
                accepted = await sustained_load(
                    gateway.base_url, key, args.duration, args.connections
                )
                load_seconds = time.monotonic() - started
                text = await wait_drained(gateway.base_url, accepted)
                drained_after = time.monotonic() - started - load_seconds
            finally:
                gateway.terminate()
            requests = metric(
                text, "jobgate_outbox_publish_requests_total", '{outcome="published"}'
            )
            published = metric(text, "jobgate_outbox_published_messages_total")
            print(
                f"sustained single-job load: {accepted} jobs accepted in {load_seconds:.1f}s "
                f"({accepted / load_seconds:.0f} jobs/s, {args.connections} connections)"
            )
            print(
                f"published {published:.0f} messages in {requests:.0f} publish requests: "
                f"{published / max(requests, 1):.1f} jobs per request (target >= 95); "
                f"outbox drained {drained_after:.2f}s after the load stopped"
            )

            ours, theirs = await raw_publish(api_url, args.publish_seconds)
            print(
                f"batch push through the emulator, 100 msgs per call: jobgate httpx client "
                f"{ours:.0f} msgs/s, official SDK {theirs:.0f} msgs/s "
                f"(SDK / httpx = {theirs / ours:.2f})"
            )
        finally:
            emulator.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
