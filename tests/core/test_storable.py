"""Strings no database can store (NUL, lone surrogates) are refused where they enter.

On PostgreSQL each of these requests used to reach asyncpg and answer 500; on SQLite
they were stored. Every case runs on both (the suite's database).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.core.storable import find_unstorable, unstorable
from app.jobs.models import Job
from app.tenants.schemas import Scope
from app.webhooks import r2
from app.webhooks import service as webhooks_service
from app.webhooks.schemas import R2RuleCreate
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio

NUL = "\x00"
EMAIL = {"type": "send-email", "to": "ana@example.com", "subject": "Hi", "templateId": "t"}


async def _job_count(runtime: Runtime, tenant_id: str | None = None) -> int:
    query = select(func.count()).select_from(Job)
    if tenant_id is not None:
        query = query.where(Job.tenant_id == tenant_id)
    async with runtime.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())


def _locs(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [error["loc"] for error in response.json()["errors"]]


async def test_unstorable_strings() -> None:
    assert unstorable("plain") is None
    assert unstorable("héllo ✓ 😀") is None
    assert unstorable("a\x00b") is not None
    assert unstorable("\ud800") is not None
    assert unstorable("\udfff x") is not None
    found = find_unstorable({"a": [1, {"b": "x\x00"}], "c\x00": 2}, ["body"])
    assert sorted(map(str, (e.loc for e in found))) == sorted(
        [str(["body", "a", 1, "b"]), str(["body", "c\\u0000"])]
    )


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**EMAIL, "subject": f"Hi{NUL}"}, ["body", "subject"]),
        (
            {**EMAIL, "variables": {"deep": [{"er": f"x{NUL}"}]}},
            ["body", "variables", "deep", 0, "er"],
        ),
        ({**EMAIL, "variables": {f"k{NUL}": 1}}, ["body", "variables", "k\\u0000"]),
        (
            {"type": "analytics-event", "name": "n", "properties": {"p": f"{NUL}"}},
            ["body", "properties", "p"],
        ),
        (
            {"type": "sync-orders", "siteId": "s", "idempotency_key": f"k{NUL}"},
            ["body", "idempotency_key"],
        ),
    ],
)
async def test_nul_anywhere_in_a_job_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenants: TenantFactory,
    body: dict[str, Any],
    loc: list[Any],
) -> None:
    key = (await tenants.create()).api_key
    response = await client.post("/v1/jobs", json=body, headers=auth(key))
    assert _locs(response) == [loc]
    assert await _job_count(runtime) == 0


async def test_lone_surrogates_from_json_escapes_are_a_422(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    headers = {**auth(key), "content-type": "application/json"}
    escaped = b'{"type":"analytics-event","name":"n","properties":{"p":"\\ud800"}}'
    raw = b'{"type":"analytics-event","name":"n","properties":{"p":"x"}}'
    raw = raw.replace(b'"x"', b'"\xed\xa0\x80"')  # a UTF-8-encoded surrogate
    for content in (escaped, raw):
        response = await client.post("/v1/jobs", content=content, headers=headers)
        assert _locs(response) == [["body", "properties", "p"]]
    # A valid surrogate pair is an ordinary character.
    pair = b'{"type":"analytics-event","name":"n","properties":{"p":"\\ud83d\\ude00"}}'
    assert (await client.post("/v1/jobs", content=pair, headers=headers)).status_code == 202
    assert await _job_count(runtime) == 1


async def test_batch_fields_and_the_idempotency_header(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory
) -> None:
    key = (await tenants.create()).api_key
    good = {"type": "sync-orders", "siteId": "s"}
    batch = {"jobs": [good, {**good, "idempotency_key": f"a{NUL}"}]}
    response = await client.post("/v1/jobs/batch", json=batch, headers=auth(key))
    assert _locs(response) == [["body", "jobs", 1, "idempotency_key"]]
    response = await client.post(
        "/v1/jobs", json=good, headers={**auth(key), "Idempotency-Key": f"k{NUL}"}
    )
    assert _locs(response) == [["header", "idempotency-key"]]
    assert await _job_count(runtime) == 0


async def test_path_and_query_parameters(client: httpx.AsyncClient, tenants: TenantFactory) -> None:
    tenant = await tenants.create()
    key = tenant.api_key
    response = await client.get("/v1/jobs/ab%00cd", headers=auth(key))
    assert response.status_code == 404, response.text
    response = await client.get("/v1/jobs", params={"cursor": f"c{NUL}"}, headers=auth(key))
    assert _locs(response) == [["query", "cursor"]]
    admin = await tenants.key(tenant.tenant_id, [Scope.admin])
    response = await client.get(f"/v1/admin/tenants/{tenant.tenant_id}%00", headers=auth(admin))
    assert response.status_code == 404, response.text
    response = await client.post(
        f"/v1/webhooks/prestashop/{tenant.tenant_id}%00/unsigned/x%00", json={}
    )
    assert response.status_code == 404, response.text


async def test_admin_and_schedule_bodies(client: httpx.AsyncClient, tenants: TenantFactory) -> None:
    tenant = await tenants.create()
    admin = await tenants.key(tenant.tenant_id, [Scope.admin])
    response = await client.post(
        f"/v1/admin/tenants/{tenant.tenant_id}/api-keys",
        json={"name": f"n{NUL}", "scopes": ["jobs:read"]},
        headers=auth(admin),
    )
    assert _locs(response) == [["body", "name"]]
    schedule = {
        "name": "every-hour",
        "cron": "0 * * * *",
        "job": {"type": "send-email", **EMAIL, "variables": {"v": f"{NUL}"}},
    }
    response = await client.post("/v1/schedules", json=schedule, headers=auth(tenant.api_key))
    assert _locs(response) == [["body", "job", "variables", "v"]]


async def test_webhook_payloads(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory
) -> None:
    tenant = await tenants.create()
    async with runtime.sessionmaker() as session:
        await r2.add_rule(
            session,
            tenant_id=tenant.tenant_id,
            rule=R2RuleCreate.model_validate(
                {"bucket": "images", "prefix": "p/", "operations": [{"type": "alt-text"}]}
            ),
        )
        token = await webhooks_service.enable_unsigned_route(session, tenant_id=tenant.tenant_id)
        await session.commit()
    notification = {
        "account": "a",
        "action": "PutObject",
        "bucket": "images",
        "object": {"key": f"p/x{NUL}.jpg", "size": 1, "eTag": "e"},
        "eventTime": "2026-11-28T13:00:00.379Z",
    }
    response = await client.post("/v1/webhooks/r2", json=notification, headers=auth(tenant.api_key))
    assert _locs(response) == [["body", "object", "key"]]
    unsigned = {"action": "add", "entity": "Order", "data": {"id": 42, "note": f"{NUL}"}}
    response = await client.post(
        f"/v1/webhooks/prestashop/{tenant.tenant_id}/unsigned/{token}",
        content=json.dumps(unsigned).encode(),
        headers={"content-type": "application/json"},
    )
    assert _locs(response) == [["body", "data", "note"]]
    assert await _job_count(runtime) == 0


async def test_a_nul_api_key_is_a_401(client: httpx.AsyncClient) -> None:
    token = "jg_" + NUL * 8 + "_" + "x" * 43
    response = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text


async def test_an_attacker_sending_nuls_never_fails_another_tenants_submissions(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory
) -> None:
    """One attacker loop and one victim loop, concurrently, through the ASGI app with the
    group committer on: every victim submission is a 202 and stored, no attacker 5xx."""
    assert runtime.committer is not None
    attacker, victim = (await tenants.create()).api_key, await tenants.create()
    rounds = 60
    bad_bodies = [
        {**EMAIL, "subject": f"s{NUL}"},
        {**EMAIL, "variables": {"x": {"y": [f"{NUL}"]}}},
        {"type": "analytics-event", "name": "n", "properties": {f"{NUL}": 1}},
        {"type": "sync-orders", "siteId": f"shop{NUL}"},
        {"type": "process-image", "key": f"k{NUL}", "operations": [{"type": "alt-text"}]},
    ]
    attacker_statuses: list[int] = []
    victim_statuses: list[int] = []

    async def attack() -> None:
        for i in range(rounds):
            body = bad_bodies[i % len(bad_bodies)]
            response = await client.post("/v1/jobs", json=body, headers=auth(attacker))
            attacker_statuses.append(response.status_code)

    async def submit() -> None:
        for i in range(rounds):
            body = {"type": "analytics-event", "name": f"victim-{i}"}
            response = await client.post("/v1/jobs", json=body, headers=auth(victim.api_key))
            victim_statuses.append(response.status_code)

    await asyncio.gather(attack(), submit())
    assert victim_statuses == [202] * rounds
    assert set(attacker_statuses) == {422}
    assert await _job_count(runtime, victim.tenant_id) == rounds
    assert await _job_count(runtime) == rounds
