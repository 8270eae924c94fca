"""Every limit of docs/cloudflare-queues.md, auth, routing, rate limits and faults, over raw
HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator

pytestmark = pytest.mark.asyncio

MAX_BODY = 128_000 - 100  # serialized body + ~100 B of metadata <= 128,000 B


async def _queue(api: httpx.AsyncClient, name: str = "jobs", consumer: str = "http_pull") -> str:
    created = await api.post("", json={"queue_name": name})
    assert created.status_code == 200, created.text
    queue_id: str = created.json()["result"]["queue_id"]
    if consumer == "http_pull":
        attached = await api.post(f"/{queue_id}/consumers", json={"type": "http_pull"})
        assert attached.status_code == 200, attached.text
    return queue_id


def _error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["result"] is None
    assert [e["code"] for e in body["errors"]] == [code], body
    return body


class TestBodies:
    async def test_not_json_is_10208(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api)
        for path in ("/messages", "/messages/batch", "/messages/pull", "/messages/ack"):
            response = await api.post(f"/{queue_id}{path}", content=b"{not json")
            _error(response, 400, 10208)

    @pytest.mark.parametrize(
        ("path", "body", "code"),
        [
            ("/messages/batch", {}, 10207),
            ("/messages/batch", {"messages": "x"}, 10207),
            ("/messages/batch", {"messages": ["x"]}, 10207),
            ("/messages/batch", {"messages": [{"content_type": "json"}]}, 10207),
            ("/messages", {"body": 1, "content_type": "text"}, 10207),
            ("/messages", {"body": "x", "content_type": "bytes"}, 10203),
            ("/messages", [], 10207),
            ("/messages/ack", {"acks": [{"lease": "x"}]}, 10207),
            ("/messages/ack", {"retries": "x"}, 10207),
        ],
    )
    async def test_schema_mismatch(
        self, api: httpx.AsyncClient, path: str, body: Any, code: int
    ) -> None:
        queue_id = await _queue(api)
        _error(await api.post(f"/{queue_id}{path}", json=body), 400, code)


class TestSizes:
    async def test_message_size(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api)
        fits = {"body": "x" * MAX_BODY, "content_type": "text"}
        assert (await api.post(f"/{queue_id}/messages", json=fits)).status_code == 200
        too_big = {"body": "x" * (MAX_BODY + 1), "content_type": "text"}
        _error(await api.post(f"/{queue_id}/messages", json=too_big), 400, 10204)
        in_batch = {"messages": [too_big]}
        _error(await api.post(f"/{queue_id}/messages/batch", json=in_batch), 400, 10204)

    async def test_batch_count(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api)
        url = f"/{queue_id}/messages/batch"
        _error(await api.post(url, json={"messages": []}), 400, 10206)
        many = [{"body": i} for i in range(101)]
        _error(await api.post(url, json={"messages": many}), 400, 10206)
        assert (await api.post(url, json={"messages": many[:100]})).status_code == 200

    async def test_batch_bytes(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api)
        big = {"body": "x" * 90_000, "content_type": "text"}
        url = f"/{queue_id}/messages/batch"
        _error(await api.post(url, json={"messages": [big] * 3}), 400, 10205)
        assert (await api.post(url, json={"messages": [big] * 2})).status_code == 200
        metrics = (await api.get(f"/{queue_id}/metrics")).json()["result"]
        assert metrics["backlog_count"] == 2  # the refused batch left nothing behind

    async def test_backlog_bytes_limit(self, api: httpx.AsyncClient, emulator: Emulator) -> None:
        emulator.configure(max_backlog_bytes=1000)
        queue_id = await _queue(api)
        message = {"body": "x" * 600, "content_type": "text"}
        assert (await api.post(f"/{queue_id}/messages", json=message)).status_code == 200
        _error(await api.post(f"/{queue_id}/messages", json=message), 429, 10251)
        await api.post(f"/{queue_id}/purge", json={"delete_messages_permanently": True})
        assert (await api.post(f"/{queue_id}/messages", json=message)).status_code == 200


class TestDelays:
    @pytest.mark.parametrize("delay", [-1, 86_401, 86_400.5, "10", True])
    async def test_invalid_delays(self, api: httpx.AsyncClient, delay: Any) -> None:
        queue_id = await _queue(api)
        message = {"body": 1, "delay_seconds": delay}
        _error(await api.post(f"/{queue_id}/messages", json=message), 400, 10203)
        batch = {"messages": [{"body": 1}], "delay_seconds": delay}
        _error(await api.post(f"/{queue_id}/messages/batch", json=batch), 400, 10202)
        nested = {"messages": [message]}
        _error(await api.post(f"/{queue_id}/messages/batch", json=nested), 400, 10203)
        retry = {"retries": [{"lease_id": "x", "delay_seconds": delay}]}
        _error(await api.post(f"/{queue_id}/messages/ack", json=retry), 400, 10203)

    async def test_boundaries_accepted(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api)
        for delay in (0, 86_400, 10.0, 0.5, 1.5):
            message = {"body": 1, "delay_seconds": delay}
            assert (await api.post(f"/{queue_id}/messages", json=message)).status_code == 200

    async def test_fractional_delays_are_truncated(
        self, api: httpx.AsyncClient, emulator: Emulator
    ) -> None:
        """Cloudflare's schema types delays as numbers; like the Workers runtime, the
        emulator keeps whole seconds: 1.9 s is 1 s, 0.5 s is now."""
        queue_id = await _queue(api)
        emulator.control("POST", "clock", {"frozen": True})
        await api.post(f"/{queue_id}/messages", json={"body": "now", "delay_seconds": 0.5})
        batch = {"messages": [{"body": "later"}], "delay_seconds": 1.9}
        assert (await api.post(f"/{queue_id}/messages/batch", json=batch)).status_code == 200
        pulled = (await api.post(f"/{queue_id}/messages/pull", json={})).json()["result"]
        assert [m["metadata"].get("CF-msg-delay-secs") for m in pulled["messages"]] == [None]
        retry = {"retries": [{"lease_id": pulled["messages"][0]["lease_id"], "delay_seconds": 2.7}]}
        assert (await api.post(f"/{queue_id}/messages/ack", json=retry)).json()["result"][
            "retryCount"
        ] == 1
        emulator.advance(1)
        pulled = (await api.post(f"/{queue_id}/messages/pull", json={})).json()["result"]
        assert len(pulled["messages"]) == 1  # the batch, after 1 s, not 2
        emulator.advance(1)
        pulled = (await api.post(f"/{queue_id}/messages/pull", json={})).json()["result"]
        assert len(pulled["messages"]) == 1  # the retry, after 2 s, not 3


class TestPull:
    @pytest.mark.parametrize(
        "body",
        [
            {"batch_size": 0},
            {"batch_size": 101},
            {"batch_size": "5"},
            {"visibility_timeout_ms": 0},
            {"visibility_timeout_ms": 43_200_001},
            {"visibility_timeout": 43_200_001},
        ],
    )
    async def test_pull_limits_are_10207(self, api: httpx.AsyncClient, body: Any) -> None:
        queue_id = await _queue(api)
        _error(await api.post(f"/{queue_id}/messages/pull", json=body), 400, 10207)

    async def test_legacy_visibility_timeout_and_empty_body(
        self, api: httpx.AsyncClient, emulator: Emulator
    ) -> None:
        queue_id = await _queue(api)
        await api.post(f"/{queue_id}/messages", json={"body": 1})
        pulled = await api.post(f"/{queue_id}/messages/pull", json={"visibility_timeout": 5000})
        assert [m["attempts"] for m in pulled.json()["result"]["messages"]] == [1]
        emulator.advance(6)
        again = await api.post(f"/{queue_id}/messages/pull", content=b"")
        assert again.status_code == 200
        assert [m["attempts"] for m in again.json()["result"]["messages"]] == [2]

    async def test_paused_queue_is_10252(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api)
        await api.patch(f"/{queue_id}", json={"settings": {"delivery_paused": True}})
        body = _error(await api.post(f"/{queue_id}/messages/pull", json={}), 429, 10252)
        assert body["errors"][0]["message"] == "queue_delivery_paused"
        assert (await api.post(f"/{queue_id}/messages", json={"body": 1})).status_code == 200

    async def test_pull_needs_an_http_pull_consumer(self, api: httpx.AsyncClient) -> None:
        queue_id = await _queue(api, consumer="none")
        _error(await api.post(f"/{queue_id}/messages/pull", json={}), 404, 7003)
        worker = {"type": "worker", "script_name": "w"}
        assert (await api.post(f"/{queue_id}/consumers", json=worker)).status_code == 200
        _error(await api.post(f"/{queue_id}/messages/pull", json={}), 404, 7003)


class TestSettings:
    @pytest.mark.parametrize(
        "settings",
        [
            {"delivery_delay": 86_401},
            {"delivery_delay": -1},
            {"message_retention_period": 59},
            {"message_retention_period": 1_209_601},
            {"delivery_paused": "yes"},
        ],
    )
    async def test_queue_settings_are_10207(
        self, api: httpx.AsyncClient, settings: dict[str, Any]
    ) -> None:
        created = await api.post("", json={"queue_name": "q", "settings": settings})
        _error(created, 400, 10207)
        queue_id = await _queue(api, consumer="none")
        _error(await api.patch(f"/{queue_id}", json={"settings": settings}), 400, 10207)

    async def test_queue_name(self, api: httpx.AsyncClient) -> None:
        _error(await api.post("", json={}), 400, 10207)
        _error(await api.post("", json={"queue_name": "Bad_Name"}), 400, 10207)
        await _queue(api, "taken", consumer="none")
        _error(await api.post("", json={"queue_name": "taken"}), 409, 10207)

    @pytest.mark.parametrize(
        ("key", "bad", "good"),
        [
            ("batch_size", 0, 1),
            ("batch_size", 101, 100),
            ("max_retries", -1, 0),
            ("max_retries", 101, 100),
            ("max_wait_time_ms", 60_001, 60_000),
            ("retry_delay", 86_401, 86_400),
            ("visibility_timeout_ms", 43_200_001, 43_200_000),
            ("max_concurrency", 0, 1),
            ("max_concurrency", 251, 250),
        ],
    )
    async def test_consumer_settings_are_10207(
        self, api: httpx.AsyncClient, key: str, bad: int, good: int
    ) -> None:
        queue_id = await _queue(api, consumer="none")
        url = f"/{queue_id}/consumers"
        kind = {"type": "worker", "script_name": "w"} if key.startswith("max_") else {}
        body = {"type": "http_pull", **kind}
        _error(await api.post(url, json={**body, "settings": {key: bad}}), 400, 10207)
        assert (await api.post(url, json={**body, "settings": {key: good}})).status_code == 200

    async def test_queues_per_account(self, api: httpx.AsyncClient, emulator: Emulator) -> None:
        emulator.configure(max_queues=2)
        await _queue(api, "a", consumer="none")
        await _queue(api, "b", consumer="none")
        _error(await api.post("", json={"queue_name": "c"}), 400, 10207)


class TestRouting:
    async def test_unknown_and_malformed_queue(self, api: httpx.AsyncClient) -> None:
        _error(await api.get("/0123456789abcdef0123456789abcdef"), 404, 10104)
        _error(await api.post("/0123456789abcdef0123456789abcdef/messages", json={}), 404, 10104)
        _error(await api.get("/not-a-queue-id"), 400, 10107)
        _error(await api.get("/0123456789ABCDEF0123456789ABCDEF/metrics"), 400, 10107)

    async def test_unknown_path_is_7003(self, emulator: Emulator) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=emulator.api_url, headers=headers) as http:
            _error(await http.get("/accounts/x/nothing-here"), 404, 7003)
            _error(await http.get("/user/tokens/verify"), 404, 7003)

    @pytest.mark.parametrize(
        ("headers", "account", "status"),
        [
            ({}, ACCOUNT, 401),
            ({"Authorization": "Basic abc"}, ACCOUNT, 401),
            ({"Authorization": "Bearer wrong"}, ACCOUNT, 403),
            ({"Authorization": f"Bearer {TOKEN}"}, "f" * 32, 403),
        ],
    )
    async def test_auth_is_10000(
        self, emulator: Emulator, headers: dict[str, str], account: str, status: int
    ) -> None:
        async with httpx.AsyncClient(base_url=emulator.api_url, headers=headers) as http:
            _error(await http.get(f"/accounts/{account}/queues"), status, 10000)
            _error(await http.post(f"/accounts/{account}/queues", json={}), status, 10000)


class TestRateLimits:
    async def test_global_limit_spares_pull_and_ack(
        self, api: httpx.AsyncClient, emulator: Emulator
    ) -> None:
        queue_id = await _queue(api)  # two calls before limits are on
        emulator.configure(rate_limits=True, global_limit=3, global_window_seconds=300)
        for _ in range(3):
            response = await api.get(f"/{queue_id}")
            assert response.status_code == 200
            assert "Ratelimit" in response.headers
        refused = await api.get(f"/{queue_id}")
        _error(refused, 429, 10250)
        assert 1 <= int(refused.headers["Retry-After"]) <= 300
        for _ in range(5):  # pull and ack are exempt
            assert (await api.post(f"/{queue_id}/messages/pull", json={})).status_code == 200
            assert (await api.post(f"/{queue_id}/messages/ack", json={})).status_code == 200
        _error(await api.post(f"/{queue_id}/messages", json={"body": 1}), 429, 10250)
        emulator.advance(300)
        assert (await api.get(f"/{queue_id}")).status_code == 200

    async def test_queue_throughput(self, api: httpx.AsyncClient, emulator: Emulator) -> None:
        queue_id = await _queue(api)
        emulator.configure(rate_limits=True, queue_msgs_per_second=5)
        emulator.control("POST", "clock", {"now_ms": 1_900_000_000_000})  # start of a second
        batch = {"messages": [{"body": i} for i in range(4)]}
        assert (await api.post(f"/{queue_id}/messages/batch", json=batch)).status_code == 200
        refused = await api.post(f"/{queue_id}/messages/batch", json=batch)
        _error(refused, 429, 10250)
        assert refused.headers["Retry-After"] == "1"
        # Pulls share the budget: one message left this second.
        pulled = await api.post(f"/{queue_id}/messages/pull", json={"batch_size": 10})
        assert len(pulled.json()["result"]["messages"]) == 1
        _error(await api.post(f"/{queue_id}/messages/pull", json={}), 429, 10250)
        emulator.advance(1)
        pulled = await api.post(f"/{queue_id}/messages/pull", json={"batch_size": 10})
        assert len(pulled.json()["result"]["messages"]) == 3


class TestFaults:
    async def test_error_then_normal(self, api: httpx.AsyncClient, emulator: Emulator) -> None:
        queue_id = await _queue(api)
        emulator.faults(kind="error", count=2)
        _error(await api.get(f"/{queue_id}/metrics"), 500, 15000)
        _error(await api.get(f"/{queue_id}/metrics"), 500, 15000)
        assert (await api.get(f"/{queue_id}/metrics")).status_code == 200

    async def test_injected_rate_limit(self, api: httpx.AsyncClient, emulator: Emulator) -> None:
        queue_id = await _queue(api)
        emulator.faults(kind="rate_limit", retry_after=7, match="/messages")
        assert (await api.get(f"/{queue_id}/metrics")).status_code == 200  # does not match
        refused = await api.post(f"/{queue_id}/messages", json={"body": 1})
        _error(refused, 429, 10250)
        assert refused.headers["Retry-After"] == "7"

    async def test_drop_before_and_after(self, api: httpx.AsyncClient, emulator: Emulator) -> None:
        queue_id = await _queue(api)
        emulator.faults(kind="drop", match="/messages")
        # A dropped connection surfaces as either, depending on when the client reads.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await api.post(f"/{queue_id}/messages", json={"body": "lost"})
        emulator.faults(kind="drop", match="/messages", after=True)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await api.post(f"/{queue_id}/messages", json={"body": "stored"})
        # The first never happened; the second took effect although the client saw a failure.
        metrics = (await api.get(f"/{queue_id}/metrics")).json()["result"]
        assert metrics["backlog_count"] == 1

    async def test_random_fault_rate(self, api: httpx.AsyncClient, emulator: Emulator) -> None:
        queue_id = await _queue(api)
        emulator.configure(fault_rate=1.0)
        _error(await api.get(f"/{queue_id}/metrics"), 500, 15000)
        emulator.configure(fault_rate=0.0)
        assert (await api.get(f"/{queue_id}/metrics")).status_code == 200
