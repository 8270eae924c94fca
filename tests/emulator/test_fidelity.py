"""Where the emulator follows Cloudflare's schema, docs and error-code reference (issue 15):
one test per error code of the table, consumer bodies and upserts, one consumer of each type
per queue, response types, jurisdictions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import cloudflare
import httpx
import pytest
from cloudflare import AsyncCloudflare

from app.emulator.errors import ERROR_CLASSES, ERROR_CODES, EXTRA_STATUSES
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator

pytestmark = pytest.mark.asyncio

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"


async def _queue(
    api: httpx.AsyncClient, name: str = "jobs", consumer: bool = True, **extra: Any
) -> str:
    created = await api.post("", json={"queue_name": name, **extra})
    assert created.status_code == 200, created.text
    queue_id: str = created.json()["result"]["queue_id"]
    if consumer:
        attached = await api.post(f"/{queue_id}/consumers", json={"type": "http_pull"})
        assert attached.status_code == 200, attached.text
    return queue_id


def _error(response: httpx.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    assert [e["code"] for e in body["errors"]] == [code], body
    message: str = body["errors"][0]["message"]
    return message


# -- the error table: every code, provoked over HTTP ------------------------------------------

Provoke = Callable[[httpx.AsyncClient, Emulator], Awaitable[httpx.Response]]


async def _no_route(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    return await api.delete("")  # DELETE /queues: a method the path does not take


async def _bad_token(_api: httpx.AsyncClient, emulator: Emulator) -> httpx.Response:
    headers = {"Authorization": "Bearer wrong"}
    async with httpx.AsyncClient(base_url=emulator.queues_url, headers=headers) as http:
        return await http.get("")


async def _unknown_queue(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    return await api.get(f"/{UNKNOWN_ID}")


async def _second_consumer(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    return await api.post(f"/{queue_id}/consumers", json={"type": "http_pull"})


async def _malformed_id(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    return await api.get("/not-a-queue-id")


async def _batch_delay(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    body = {"messages": [{"body": 1}], "delay_seconds": 86_401}
    return await api.post(f"/{queue_id}/messages/batch", json=body)


async def _message_metadata(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    return await api.post(f"/{queue_id}/messages", json={"body": "x", "content_type": "v8"})


async def _message_size(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    body = {"body": "x" * 128_000, "content_type": "text"}
    return await api.post(f"/{queue_id}/messages", json=body)


async def _batch_size(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    big = {"body": "x" * 90_000, "content_type": "text"}
    return await api.post(f"/{queue_id}/messages/batch", json={"messages": [big] * 3})


async def _batch_count(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    return await api.post(f"/{queue_id}/messages/batch", json={"messages": []})


async def _body_invalid(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api, consumer=False)
    return await api.post(f"/{queue_id}/consumers", json={"type": {}})


async def _body_malformed(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    return await api.post("", content=b"{not json")


async def _overloaded(api: httpx.AsyncClient, emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    emulator.configure(rate_limits=True, queue_msgs_per_second=1)
    emulator.control("POST", "clock", {"now_ms": 1_900_000_000_000})
    batch = {"messages": [{"body": 1}, {"body": 2}]}
    return await api.post(f"/{queue_id}/messages/batch", json=batch)


async def _storage(api: httpx.AsyncClient, emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    emulator.configure(max_backlog_bytes=10)
    return await api.post(f"/{queue_id}/messages", json={"body": "x" * 20, "content_type": "text"})


async def _paused(api: httpx.AsyncClient, _emulator: Emulator) -> httpx.Response:
    queue_id = await _queue(api)
    await api.patch(f"/{queue_id}", json={"settings": {"delivery_paused": True}})
    return await api.post(f"/{queue_id}/messages/pull", json={})


async def _internal(api: httpx.AsyncClient, emulator: Emulator) -> httpx.Response:
    emulator.faults(kind="error", count=1)
    return await api.get("")


PROVOKE: dict[int, Provoke] = {
    7003: _no_route,
    10000: _bad_token,
    10104: _unknown_queue,
    10105: _second_consumer,
    10107: _malformed_id,
    10202: _batch_delay,
    10203: _message_metadata,
    10204: _message_size,
    10205: _batch_size,
    10206: _batch_count,
    10207: _body_invalid,
    10208: _body_malformed,
    10250: _overloaded,
    10251: _storage,
    10252: _paused,
    15000: _internal,
}


async def test_the_table_has_one_class_and_one_test_per_code() -> None:
    assert set(PROVOKE) == set(ERROR_CODES)
    assert set(ERROR_CLASSES) == set(ERROR_CODES)
    assert set(EXTRA_STATUSES) <= set(ERROR_CODES)
    with pytest.raises(ValueError, match="never answered with 409"):
        ERROR_CLASSES[10252]("queue_delivery_paused", status=409)


@pytest.mark.parametrize("code", sorted(PROVOKE))
async def test_every_code_with_its_status(
    code: int, api: httpx.AsyncClient, emulator: Emulator
) -> None:
    _error(await PROVOKE[code](api, emulator), ERROR_CODES[code].status, code)


# -- consumer bodies ----------------------------------------------------------------------------


class TestConsumerBodies:
    @pytest.mark.parametrize(
        "body",
        [
            {"type": {}},
            {"type": [None]},
            {"type": 1},
            {"type": None},
            {},
            {"type": "http_pull", "settings": []},
            {"type": "http_pull", "settings": {"batch_size": {}}},
            {"type": "http_pull", "dead_letter_queue": {}},
            {"type": "worker", "script_name": []},
            [None],
        ],
    )
    async def test_malformed_bodies_are_400(self, api: httpx.AsyncClient, body: Any) -> None:
        queue_id = await _queue(api, consumer=False)
        _error(await api.post(f"/{queue_id}/consumers", json=body), 400, 10207)
        _error(await api.put(f"/{queue_id}/consumers/{UNKNOWN_ID}", json=body), 400, 10207)
        listed = await api.get(f"/{queue_id}/consumers")
        assert listed.json()["result"] == []  # nothing was created on the way

    async def test_fractional_retry_delay_is_truncated(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api, consumer=False)
        body = {"type": "http_pull", "settings": {"retry_delay": 2.5}}
        created = await api.post(f"/{queue_id}/consumers", json=body)
        assert created.json()["result"]["settings"]["retry_delay"] == 2


class TestConsumerUpsert:
    async def test_put_creates_then_updates(self, cf: AsyncCloudflare) -> None:
        queue = await cf.queues.create(account_id=ACCOUNT, queue_name="jobs")
        assert queue is not None
        assert queue.queue_id
        created = await cf.queues.consumers.update(
            UNKNOWN_ID,
            account_id=ACCOUNT,
            queue_id=queue.queue_id,
            type="http_pull",
            settings={"batch_size": 7},
        )
        assert created is not None
        assert created.consumer_id == UNKNOWN_ID
        assert created.settings is not None
        assert created.settings.batch_size == 7
        updated = await cf.queues.consumers.update(
            UNKNOWN_ID,
            account_id=ACCOUNT,
            queue_id=queue.queue_id,
            type="http_pull",
            dead_letter_queue="jobs-dlq",
            settings={"batch_size": 9},
        )
        assert updated is not None
        assert updated.consumer_id == UNKNOWN_ID
        assert updated.created_on == created.created_on
        assert updated.settings is not None
        assert updated.settings.batch_size == 9
        listed = [c async for c in cf.queues.consumers.list(queue.queue_id, account_id=ACCOUNT)]
        assert [(c.consumer_id, c.dead_letter_queue) for c in listed] == [(UNKNOWN_ID, "jobs-dlq")]

    async def test_put_of_another_id_is_a_second_consumer(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api)
        other = "f" * 32
        _error(
            await api.put(f"/{queue_id}/consumers/{other}", json={"type": "http_pull"}), 400, 10105
        )
        _error(await api.put(f"/{queue_id}/consumers/nope", json={"type": "http_pull"}), 404, 7003)
        _error(
            await api.put(f"/{UNKNOWN_ID}/consumers/{other}", json={"type": "http_pull"}),
            404,
            10104,
        )

    async def test_put_cannot_take_another_queues_consumer_id(self, api: httpx.AsyncClient) -> None:
        first = await _queue(api, "first")
        taken = (await api.get(f"/{first}/consumers")).json()["result"][0]["consumer_id"]
        second = await _queue(api, "second", consumer=False)
        url = f"/{second}/consumers/{taken}"
        _error(await api.put(url, json={"type": "http_pull"}), 409, 10207)
        kept = (await api.get(f"/{first}/consumers/{taken}")).json()["result"]
        assert kept["queue_name"] == "first"

    async def test_unknown_consumer_is_7003(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api, consumer=False)
        _error(await api.get(f"/{queue_id}/consumers/{UNKNOWN_ID}"), 404, 7003)
        _error(await api.delete(f"/{queue_id}/consumers/{UNKNOWN_ID}"), 404, 7003)


class TestConsumersPerQueue:
    """One consumer of each type: an http_pull one beside a worker one (documented), never
    two of a type (the pull API names no consumer; docs/emulator.md)."""

    async def test_worker_and_http_pull_side_by_side(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api, consumer=False)
        worker = {"type": "worker", "script_name": "w", "dead_letter_queue": "worker-dlq"}
        assert (await api.post(f"/{queue_id}/consumers", json=worker)).status_code == 200
        pull = {"type": "http_pull", "settings": {"max_retries": 0}}
        pulled_by = (await api.post(f"/{queue_id}/consumers", json=pull)).json()["result"]
        listed = (await api.get(f"/{queue_id}/consumers")).json()["result"]
        assert sorted(c["type"] for c in listed) == ["http_pull", "worker"]
        queue = (await api.get(f"/{queue_id}")).json()["result"]
        assert queue["consumers_total_count"] == 2
        for body in (worker, pull):
            _error(await api.post(f"/{queue_id}/consumers", json=body), 400, 10105)

        # Pulls follow the http_pull consumer: max_retries 0 and no dead letter queue.
        await api.post(f"/{queue_id}/messages", json={"body": 1})
        message = (await api.post(f"/{queue_id}/messages/pull", json={})).json()["result"]
        lease = message["messages"][0]["lease_id"]
        retried = await api.post(
            f"/{queue_id}/messages/ack", json={"retries": [{"lease_id": lease}]}
        )
        assert retried.status_code == 200
        metrics = (await api.get(f"/{queue_id}/metrics")).json()["result"]
        assert metrics["backlog_count"] == 0  # dropped, not sent to the worker's DLQ

        await api.delete(f"/{queue_id}/consumers/{pulled_by['consumer_id']}")
        _error(await api.post(f"/{queue_id}/messages/pull", json={}), 404, 7003)
        listed = (await api.get(f"/{queue_id}/consumers")).json()["result"]
        assert [c["type"] for c in listed] == ["worker"]

    async def test_put_may_not_turn_one_into_a_second_of_a_type(
        self, api: httpx.AsyncClient
    ) -> None:
        queue_id = await _queue(api)  # an http_pull consumer
        worker = {"type": "worker", "script_name": "w"}
        created = (await api.post(f"/{queue_id}/consumers", json=worker)).json()["result"]
        url = f"/{queue_id}/consumers/{created['consumer_id']}"
        _error(await api.put(url, json={"type": "http_pull"}), 400, 10105)
        assert (await api.put(url, json={**worker, "script_name": "w2"})).status_code == 200


# -- response types -----------------------------------------------------------------------------


class TestResponseTypes:
    async def test_purge_status_of_a_never_purged_queue(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api)
        status = (await api.get(f"/{queue_id}/purge")).json()["result"]
        assert "started_at" not in status  # absent, not null: the schema says string
        await api.post(f"/{queue_id}/purge", json={"delete_messages_permanently": True})
        status = (await api.get(f"/{queue_id}/purge")).json()["result"]
        assert isinstance(status["started_at"], str)
        assert status["completed"] == "true"

    async def test_worker_max_concurrency_is_a_number_or_absent(
        self, api: httpx.AsyncClient
    ) -> None:
        queue_id = await _queue(api, consumer=False)
        worker = {"type": "worker", "script_name": "w", "settings": {"max_concurrency": None}}
        created = (await api.post(f"/{queue_id}/consumers", json=worker)).json()["result"]
        assert "max_concurrency" not in created["settings"]
        assert all(isinstance(v, int) for v in created["settings"].values())
        worker["settings"] = {"max_concurrency": 5}
        url = f"/{queue_id}/consumers/{created['consumer_id']}"
        updated = (await api.put(url, json=worker)).json()["result"]
        assert updated["settings"]["max_concurrency"] == 5
        queue = (await api.get(f"/{queue_id}")).json()["result"]
        assert queue["consumers"][0]["settings"]["max_concurrency"] == 5


# -- jurisdictions ------------------------------------------------------------------------------


class TestJurisdiction:
    async def test_stored_and_returned(self, cf: AsyncCloudflare, api: httpx.AsyncClient) -> None:
        queue = await cf.queues.create(account_id=ACCOUNT, queue_name="eu-jobs", jurisdiction="eu")
        assert queue is not None
        assert queue.jurisdiction == "eu"
        assert queue.queue_id
        got = await cf.queues.get(queue.queue_id, account_id=ACCOUNT)
        assert got is not None
        assert got.jurisdiction == "eu"
        listed = [q async for q in cf.queues.list(account_id=ACCOUNT)]
        assert [(q.queue_name, q.jurisdiction) for q in listed] == [("eu-jobs", "eu")]
        plain = await _queue(api, "plain", consumer=False)
        assert "jurisdiction" not in (await api.get(f"/{plain}")).json()["result"]

    async def test_set_at_creation_only(self, api: httpx.AsyncClient) -> None:
        _error(await api.post("", json={"queue_name": "q", "jurisdiction": "mars"}), 400, 10207)
        queue_id = await _queue(api, "fed", consumer=False, jurisdiction="fedramp")
        same = await api.patch(f"/{queue_id}", json={"jurisdiction": "fedramp"})
        assert same.status_code == 200
        _error(await api.patch(f"/{queue_id}", json={"jurisdiction": "eu"}), 400, 10207)
        _error(await api.put(f"/{queue_id}", json={"jurisdiction": "us"}), 400, 10207)
        renamed = await api.put(f"/{queue_id}", json={"queue_name": "fed2"})
        assert renamed.json()["result"]["jurisdiction"] == "fedramp"

    async def test_dead_letter_queue_shares_the_jurisdiction(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api, "eu-jobs", consumer=False, jurisdiction="eu")
        await _queue(api, "us-dlq", consumer=False, jurisdiction="us")
        await _queue(api, "global-dlq", consumer=False)
        for dlq in ("us-dlq", "global-dlq"):
            body = {"type": "http_pull", "dead_letter_queue": dlq}
            message = _error(await api.post(f"/{queue_id}/consumers", json=body), 400, 10207)
            assert "jurisdiction" in message
        # A missing one is created in the queue's jurisdiction.
        body = {"type": "http_pull", "dead_letter_queue": "eu-dlq"}
        assert (await api.post(f"/{queue_id}/consumers", json=body)).status_code == 200
        created = (await api.get("", params={"name": "eu-dlq"})).json()["result"]
        assert [q["jurisdiction"] for q in created] == ["eu"]


async def test_sdk_reads_every_answer_of_a_full_cycle(emulator: Emulator) -> None:
    """The official SDK (its own response models) parses what the emulator answers."""
    async with AsyncCloudflare(api_token=TOKEN, base_url=emulator.api_url, max_retries=0) as cf:
        queue = await cf.queues.create(account_id=ACCOUNT, queue_name="cycle")
        assert queue is not None
        assert queue.queue_id
        await cf.queues.consumers.create(
            queue.queue_id, account_id=ACCOUNT, type="worker", script_name="w"
        )
        with pytest.raises(cloudflare.NotFoundError):  # no http_pull consumer: no route
            await cf.queues.messages.pull(queue.queue_id, account_id=ACCOUNT)
        status = await cf.queues.purge.status(queue.queue_id, account_id=ACCOUNT)
        assert status is not None
        assert status.started_at is None


async def test_state_counts_leased_messages_until_acked(
    api: httpx.AsyncClient, emulator: Emulator
) -> None:
    """`/_emulator/state` (a test control) tells when a consumer's acks have landed."""

    def in_flight() -> int:
        (queue,) = emulator.control("GET", "state")["queues"]
        return int(queue["in_flight"])

    queue_id = await _queue(api)
    for _ in range(2):
        sent = await api.post(f"/{queue_id}/messages", json={"body": "x"})
        assert sent.status_code == 200, sent.text
    assert in_flight() == 0
    pulled = await api.post(f"/{queue_id}/messages/pull", json={"batch_size": 2})
    leases = [m["lease_id"] for m in pulled.json()["result"]["messages"]]
    assert (len(leases), in_flight()) == (2, 2)
    body = {"acks": [{"lease_id": leases[0]}], "retries": [{"lease_id": leases[1]}]}
    assert (await api.post(f"/{queue_id}/messages/ack", json=body)).status_code == 200
    assert in_flight() == 0
