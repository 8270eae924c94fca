"""Poison rows over real HTTP: the relay on jobgate's Cloudflare client against the emulator
(a real `jobgate emulator` process), with the job store on the test database.

- a message over Cloudflare's per-message limit (the emulator refuses it with code 10204)
  fails its own job only; the rest of its batch is published and queued;
- a publish that keeps failing (500 injected on every batch call) fails the job after
  `max_attempts` tries and the relay stops sending it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.jobs.dispatchers import OutboxDispatcher
from app.queues.cloudflare import CloudflareQueues, RetryPolicy
from app.tenants.schemas import Principal
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator
from tests.outbox.conftest import job_and_events, make_relay, pad_outbox_row, statuses, submit

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture(scope="module")
def emulator(database: tuple[str, str | None]) -> Iterator[Emulator]:
    running = Emulator(start_emulator(emulator_env(database)))
    try:
        yield running
    finally:
        running.close()


@pytest_asyncio.fixture
async def cloudflare(runtime: Runtime, emulator: Emulator) -> AsyncIterator[CloudflareQueues]:
    # After `runtime` (which empties the tables): the emulator forgets its queues too.
    emulator.reset()
    client = CloudflareQueues(
        account_id=ACCOUNT,
        api_token=TOKEN,
        base_url=emulator.api_url,
        retry=RetryPolicy(max_retries=0),  # the relay's own backoff is under test
    )
    await client.start(runtime.topology)
    yield client
    await client.close()


async def _pull_all(client: CloudflareQueues, queue: str) -> list[str]:
    seen: list[str] = []
    while pulled := (await client.pull(queue, batch_size=100)).messages:
        seen += [m.body["job_id"] for m in pulled]
        await client.ack(queue, acks=[m.lease_id for m in pulled])
    return seen


async def test_a_message_over_the_size_limit_fails_alone(
    runtime: Runtime, principal: Principal, clock: ManualClock, cloudflare: CloudflareQueues
) -> None:
    relay = make_relay(runtime, cloudflare, clock, linger_ms=0)
    ids = await submit(runtime, principal, OutboxDispatcher(clock), 20)
    bad = ids[13]
    await pad_outbox_row(runtime, bad, 128_000)

    assert await relay.relay_once() == 19
    # The whole batch is refused first, then halves down to the bad row.
    assert 2 <= relay.stats.failed_requests <= 2 * math.ceil(math.log2(20))
    assert relay.stats.failed_messages == 1
    assert await statuses(runtime) == {"queued": 19, "failed": 1}
    job, events = await job_and_events(runtime, bad)
    assert job.status == "failed"
    assert job.last_error is not None
    assert "code 10204" in job.last_error
    assert [e.status for e in events] == ["accepted", "failed"]
    assert sorted(await _pull_all(cloudflare, "prestashop-sync")) == sorted(set(ids) - {bad})
    assert await relay.backlog() == 0


async def test_a_permanent_500_fails_the_job_after_max_attempts(
    runtime: Runtime,
    principal: Principal,
    clock: ManualClock,
    cloudflare: CloudflareQueues,
    emulator: Emulator,
) -> None:
    emulator.faults(kind="error", count=100_000, match="/messages/batch")
    relay = make_relay(runtime, cloudflare, clock, linger_ms=0, max_attempts=4, max_backoff_ms=2000)
    ids = await submit(runtime, principal, OutboxDispatcher(clock), 3)

    for attempt in range(1, 5):
        assert await relay.relay_once() == 0
        assert relay.stats.publish_requests == attempt
        assert await statuses(runtime) == {"failed" if attempt == 4 else "accepted": 3}
        clock.advance(ms=2000)  # past the capped backoff
    for job_id in ids:
        job, events = await job_and_events(runtime, job_id)
        assert job.last_error is not None
        assert "after 4 attempts" in job.last_error
        assert "code 15000" in job.last_error
        assert [e.status for e in events] == ["accepted", "failed"]

    # Given up for good: no more calls, even with Cloudflare healthy again.
    emulator.http.delete(f"{emulator.base_url}/_emulator/faults")
    clock.advance(seconds=3600)
    assert await relay.relay_once() == 0
    assert relay.stats.publish_requests == 4
    assert await _pull_all(cloudflare, "prestashop-sync") == []
