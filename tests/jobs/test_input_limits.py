"""Inputs the gateway used to accept although no attempt could ever process them, and the
`Allow` header of OPTIONS and 405 answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.jobs.object_keys import MAX_JOB_KEY_BYTES
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio

ALT_TEXT = [{"type": "alt-text"}]


def image(key: str) -> dict[str, Any]:
    return {"type": "process-image", "key": key, "operations": ALT_TEXT}


@pytest.mark.parametrize(
    "key",
    [
        "k" * (MAX_JOB_KEY_BYTES + 1),
        "é" * (MAX_JOB_KEY_BYTES // 2 + 1),  # few characters, too many bytes
        "k" * 1024,
        "line\nbreak.jpg",
        "tab\there.jpg",
        "del\x7f.jpg",
        ".",
        "..",
    ],
)
async def test_an_object_key_that_cannot_be_stored_is_a_422(
    client: httpx.AsyncClient, tenants: TenantFactory, key: str
) -> None:
    api_key = (await tenants.create()).api_key
    response = await client.post("/v1/jobs", json=image(key), headers=auth(api_key))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == "key"


async def test_the_longest_accepted_key_is_accepted(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    api_key = (await tenants.create()).api_key
    key = "€" * (MAX_JOB_KEY_BYTES // 3)  # 3 bytes each
    response = await client.post("/v1/jobs", json=image(key), headers=auth(api_key))
    assert response.status_code == 202, response.text
    assert response.json()["payload"]["key"] == key


@pytest.mark.parametrize(
    "occurred_at",
    [
        "9999-12-31T23:59:59-01:00",  # past year 9999 in UTC
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "10000-01-01T00:00:00Z",
        "not a time",
    ],
)
async def test_an_occurred_at_the_handler_cannot_convert_is_a_422(
    client: httpx.AsyncClient, tenants: TenantFactory, occurred_at: str
) -> None:
    api_key = (await tenants.create()).api_key
    body = {"type": "analytics-event", "name": "n", "occurredAt": occurred_at}
    response = await client.post("/v1/jobs", json=body, headers=auth(api_key))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == "occurredAt"


@pytest.mark.parametrize(
    "occurred_at", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59+01:00", "0001-01-01T00:00:00Z"]
)
async def test_extreme_but_convertible_times_are_accepted(
    client: httpx.AsyncClient, tenants: TenantFactory, occurred_at: str
) -> None:
    api_key = (await tenants.create()).api_key
    body = {"type": "analytics-event", "name": "n", "occurredAt": occurred_at}
    response = await client.post("/v1/jobs", json=body, headers=auth(api_key))
    assert response.status_code == 202, response.text


def allow(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


async def test_options_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.options("/v1/jobs")
    assert response.status_code == 204
    assert allow(response) == {"GET", "POST", "OPTIONS"}
    response = await client.options("/v1/jobs/some-id")
    assert allow(response) == {"GET", "OPTIONS"}
    response = await client.options("/v1/schedules/some-id")
    assert {"GET", "PATCH", "DELETE"} <= allow(response)


async def test_a_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/jobs")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert allow(response) == {"GET", "POST", "OPTIONS"}
    # A literal path names its own methods, as the API document does: `/v1/jobs/batch` is
    # POST only, though GET reaches the `/v1/jobs/{job_id}` route (and answers 404).
    response = await client.put("/v1/jobs/batch")
    assert response.status_code == 405
    assert allow(response) == {"POST", "OPTIONS"}
    response = await client.put("/v1/jobs/some-job")
    assert response.status_code == 405
    assert allow(response) == {"GET", "OPTIONS"}
