"""The Python client (`app/client`), sync and async, against a live gateway whose tenant may
submit only a few jobs a second (see conftest)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.client import (
    AsyncJobgateClient,
    Conflict,
    GatewayUnreachable,
    JobgateClient,
    NotFound,
    ProblemError,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    ValidationFailed,
)
from app.jobs.payloads import AnalyticsEventJob
from tests.clients.conftest import LiveGateway
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

NO_RETRY = RetryPolicy(max_attempts=1)


class CountingTransport(httpx.HTTPTransport):
    """The real transport, counting the requests that go out and their answers."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


def test_sync_submit_batch_get_list_attempts_cancel_retry(live_gateway: LiveGateway) -> None:
    with JobgateClient(live_gateway.url, live_gateway.key) as client:
        job = client.submit(AnalyticsEventJob(type="analytics-event", name="py-sync"))
        assert job.status in ("accepted", "queued")
        assert job.payload["name"] == "py-sync"
        assert job.idempotency_key, "an Idempotency-Key is sent by default"

        first = client.submit({"type": "analytics-event", "name": "once"}, idempotency_key="k1")
        again = client.submit({"type": "analytics-event", "name": "once"}, idempotency_key="k1")
        assert again.id == first.id
        with pytest.raises(Conflict) as conflict:
            client.submit({"type": "analytics-event", "name": "other"}, idempotency_key="k1")
        assert conflict.value.status == 409

        batch = client.batch(
            [{"type": "analytics-event", "name": f"py-batch-{n}"} for n in range(2)]
        )
        assert [j.payload["name"] for j in batch] == ["py-batch-0", "py-batch-1"]
        assert client.get(batch[0].id).id == batch[0].id

        # The *_outcome calls also say which jobs this call created.
        keyed = [
            {"type": "analytics-event", "name": f"py-o-{n}", "idempotency_key": f"o{n}"}
            for n in range(2)
        ]
        assert [s.created for s in client.batch_outcome(keyed[:1])] == [True]
        mixed = client.batch_outcome(keyed)  # a 202: a repeat and a new job
        assert [s.created for s in mixed] == [False, True]
        assert [s.created for s in client.batch_outcome(keyed)] == [False, False]  # a 200
        assert client.submit_outcome(keyed[0]).created is False
        assert client.submit_outcome(keyed[0] | {"idempotency_key": "o9"}).created is True

        page = client.list(type="analytics-event", limit=2)
        assert len(page.data) == 2
        assert page.next_cursor
        every = [j.id for j in client.iter_jobs(type="analytics-event")]
        assert {job.id, first.id, *(j.id for j in batch)} <= set(every)
        assert len(list(client.iter_jobs(limit=3))) == 3

        later = client.submit({"type": "analytics-event", "name": "later", "delay_seconds": 600})
        assert client.attempts(later.id).data == []
        assert client.cancel(later.id).status == "cancelled"
        assert client.retry(later.id).status in ("accepted", "queued")
        with pytest.raises(NotFound):
            client.get("no-such-job")


def test_another_tenants_job_is_not_found(live_gateway: LiveGateway) -> None:
    with JobgateClient(live_gateway.url, live_gateway.key) as mine:
        job = mine.submit({"type": "analytics-event", "name": "private"})
    with JobgateClient(live_gateway.url, live_gateway.other_key) as theirs:
        with pytest.raises(NotFound) as missing:
            theirs.get(job.id)
        assert missing.value.title
        assert missing.value.detail
        assert job.id not in [j.id for j in theirs.iter_jobs()]


def test_422_raises_with_the_invalid_fields_and_is_not_retried(
    live_gateway: LiveGateway,
) -> None:
    transport = CountingTransport()
    with JobgateClient(live_gateway.url, live_gateway.key, transport=transport) as client:
        with pytest.raises(ValidationFailed) as invalid:
            client.submit({"type": "send-email", "to": "not-an-address"})
    problem = invalid.value
    assert isinstance(problem, ProblemError)
    assert problem.status == 422
    assert problem.title
    fields = {tuple(error["loc"])[-1] for error in problem.errors}
    assert {"to", "subject", "templateId"} <= fields
    assert transport.statuses == [422]


def test_other_4xx_are_not_retried(live_gateway: LiveGateway) -> None:
    transport = CountingTransport()
    with JobgateClient(live_gateway.url, "jg_not-a-key", transport=transport) as client:
        with pytest.raises(Unauthorized) as refused:
            client.list()
    assert refused.value.status == 401
    assert transport.statuses == [401]


def test_429_is_raised_without_retries_and_retried_until_admitted(
    live_gateway: LiveGateway,
) -> None:
    jobs = [{"type": "analytics-event", "name": f"burst-{n}"} for n in range(8)]
    refusals: list[RateLimited] = []
    with JobgateClient(live_gateway.url, live_gateway.key, retry=NO_RETRY) as impatient:
        for job in jobs:
            try:
                impatient.submit(job)
            except RateLimited as refused:
                refusals.append(refused)
    assert refusals, "a burst of 8 exceeds the limit"
    assert {r.status for r in refusals} == {429}
    assert all(r.retry_after is not None for r in refusals)

    transport = CountingTransport()
    patient = RetryPolicy(max_attempts=10)
    with JobgateClient(
        live_gateway.url, live_gateway.key, retry=patient, transport=transport
    ) as client:
        stored = [client.submit(job) for job in jobs]
    assert len({job.id for job in stored}) == len(jobs)
    assert 429 in transport.statuses, "the burst met the limit and was retried"
    assert transport.statuses.count(202) == len(jobs)


def test_unreachable_gateway() -> None:
    with JobgateClient(f"http://127.0.0.1:{free_port()}", "jg_key") as client:
        with pytest.raises(GatewayUnreachable):
            client.get("x")


@pytest.mark.asyncio
async def test_async_client_does_the_same(live_gateway: LiveGateway) -> None:
    async with AsyncJobgateClient(
        live_gateway.url, live_gateway.key, retry=RetryPolicy(max_attempts=10)
    ) as client:
        # A burst over the rate limit: the 429s are waited out.
        submitted = await asyncio.gather(
            *(client.submit({"type": "analytics-event", "name": f"a-{n}"}) for n in range(6))
        )
        assert len({job.id for job in submitted}) == 6
        batch = await client.batch([AnalyticsEventJob(type="analytics-event", name="a-batch")])
        assert (await client.get(batch[0].id)).payload["name"] == "a-batch"
        keyed = {"type": "analytics-event", "name": "a-o", "idempotency_key": "a-o"}
        assert [s.created for s in await client.batch_outcome([keyed])] == [True]
        assert (await client.submit_outcome(keyed)).created is False
        page = await client.list(limit=5)
        assert len(page.data) == 5
        names = [job.payload["name"] async for job in client.iter_jobs(type="analytics-event")]
        assert "a-batch" in names
        assert len(names) == 8

        later = await client.submit(
            {"type": "analytics-event", "name": "a-later", "delay_seconds": 600}
        )
        assert (await client.attempts(later.id)).data == []
        assert (await client.cancel(later.id)).status == "cancelled"
        assert (await client.retry(later.id)).status in ("accepted", "queued")
        with pytest.raises(ValidationFailed) as invalid:
            await client.submit({"type": "process-image", "key": "k", "operations": {}})
        assert invalid.value.errors
        with pytest.raises(NotFound):
            await client.cancel("no-such-job")
