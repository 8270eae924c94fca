"""Operator vs tenant admin, over every `/v1/admin` route.

The table below names every admin route; the test walks the app's own routes, so a route
added without a row fails here instead of escaping the check. Each route is called by each
kind of caller against tenant B, and a refused call must leave the whole database as it was.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.bootstrap import Runtime
from app.core.clock import ManualClock, to_datetime
from app.core.db import metadata
from app.core.ids import uuid7
from app.jobs.models import Job
from app.main import create_app
from app.tenants import service as tenants_service
from app.tenants.schemas import Scope
from app.webhooks import r2
from app.webhooks import service as webhooks_service
from app.webhooks.schemas import R2RuleCreate
from tests.factories import TenantFactory, auth
from tests.support.servers import CommandFailed, jobgate_env, run_jobgate_async
from tests.tenants.conftest import ADMIN_TOKEN
from tests.tenants.test_tokens import claims, hs_key, token

pytestmark = pytest.mark.asyncio

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
SHOP = {"base_url": "https://shop.example", "webservice_key": "K" * 32}


@dataclass
class Ctx:
    runtime: Runtime
    tenant_id: str  # tenant B, the target of every call
    counter: itertools.count[int]

    def n(self) -> int:
        return next(self.counter)


@dataclass(frozen=True)
class Call:
    """How to call one route on tenant B: path (and body) once `prepare` made what it needs."""

    ok: int
    operator_only: bool = False
    prepare: Callable[[Ctx], Awaitable[dict[str, str]]] | None = None
    body: Callable[[Ctx], dict[str, Any]] | None = None


async def _new_key(ctx: Ctx) -> dict[str, str]:
    async with ctx.runtime.sessionmaker() as session:
        _, row = await tenants_service.create_api_key(session, tenant_id=ctx.tenant_id)
        await session.commit()
    return {"key_id": row.id}


async def _second_secret(ctx: Ctx) -> dict[str, str]:
    # Two active secrets, so revoking one of them is allowed.
    async with ctx.runtime.sessionmaker() as session:
        _, row = await tenants_service.add_webhook_secret(
            session, tenant_id=ctx.tenant_id, box=ctx.runtime.box
        )
        await session.commit()
    return {"secret_id": row.id}


async def _new_rule(ctx: Ctx) -> dict[str, str]:
    rule = R2RuleCreate.model_validate(
        {"bucket": "images", "prefix": f"r{ctx.n()}/", "operations": [{"type": "alt-text"}]}
    )
    async with ctx.runtime.sessionmaker() as session:
        row = await r2.add_rule(session, tenant_id=ctx.tenant_id, rule=rule)
        await session.commit()
    return {"rule_id": row.id}


async def _unsigned_on(ctx: Ctx) -> dict[str, str]:
    async with ctx.runtime.sessionmaker() as session:
        await webhooks_service.enable_unsigned_route(session, tenant_id=ctx.tenant_id)
        await session.commit()
    return {}


async def _queue(_ctx: Ctx) -> dict[str, str]:
    return {"name": "email-sending"}


async def _job(ctx: Ctx, status: str) -> dict[str, str]:
    now = to_datetime(ctx.runtime.clock.now_ms())
    row = Job(
        id=uuid7(),
        tenant_id=ctx.tenant_id,
        type="analytics-event",
        queue="analytics-events",
        payload={"name": "e", "properties": {}},
        status=status,
        created_at=now,
        updated_at=now,
    )
    async with ctx.runtime.sessionmaker() as session:
        session.add(row)
        await session.commit()
    return {"job_id": row.id}


async def _dead_job(ctx: Ctx) -> dict[str, str]:
    return await _job(ctx, "dead")


async def _queued_job(ctx: Ctx) -> dict[str, str]:
    return await _job(ctx, "queued")


T = "/v1/admin/tenants/{tenant_id}"
J = "/v1/admin/jobs"
TABLE: dict[tuple[str, str], Call] = {
    ("POST", "/v1/admin/tenants"): Call(
        201, operator_only=True, body=lambda c: {"name": f"new-{c.n()}"}
    ),
    ("GET", "/v1/admin/tenants"): Call(200, operator_only=True),
    ("GET", T): Call(200),
    ("POST", f"{T}/api-keys"): Call(201, body=lambda _: {"scopes": ["jobs:read"]}),
    ("GET", f"{T}/api-keys"): Call(200),
    ("DELETE", f"{T}/api-keys/{{key_id}}"): Call(200, prepare=_new_key),
    ("POST", f"{T}/webhook-secrets"): Call(201),
    ("GET", f"{T}/webhook-secrets"): Call(200),
    ("DELETE", f"{T}/webhook-secrets/{{secret_id}}"): Call(200, prepare=_second_secret),
    ("PUT", f"{T}/shops/{{site_id}}"): Call(200, body=lambda _: SHOP),
    ("GET", f"{T}/shops"): Call(200),
    ("POST", f"{T}/r2-rules"): Call(
        201,
        body=lambda c: {
            "bucket": "images",
            "prefix": f"p{c.n()}/",
            "operations": [{"type": "alt-text"}],
        },
    ),
    ("GET", f"{T}/r2-rules"): Call(200),
    ("DELETE", f"{T}/r2-rules/{{rule_id}}"): Call(204, prepare=_new_rule),
    ("POST", f"{T}/unsigned-webhook"): Call(201),
    ("DELETE", f"{T}/unsigned-webhook"): Call(204, prepare=_unsigned_on),
    ("PUT", f"{T}/email-policy"): Call(
        200, operator_only=True, body=lambda _: {"domains": ["example.com"]}
    ),
    ("GET", f"{T}/email-policy"): Call(200),
    ("GET", J): Call(200, operator_only=True),
    ("GET", f"{J}/{{job_id}}"): Call(200, operator_only=True, prepare=_dead_job),
    ("GET", f"{J}/{{job_id}}/attempts"): Call(200, operator_only=True, prepare=_dead_job),
    ("POST", f"{J}/{{job_id}}/retry"): Call(202, operator_only=True, prepare=_dead_job),
    ("POST", f"{J}/{{job_id}}/cancel"): Call(200, operator_only=True, prepare=_queued_job),
    ("POST", f"{J}/retry"): Call(
        200, operator_only=True, body=lambda _: {"status": "dead", "dry_run": True}
    ),
    ("GET", "/v1/admin/queues"): Call(200, operator_only=True),
    ("POST", "/v1/admin/queues/{name}/pause"): Call(200, operator_only=True, prepare=_queue),
    ("POST", "/v1/admin/queues/{name}/resume"): Call(200, operator_only=True, prepare=_queue),
    ("POST", "/v1/admin/queues/{name}/purge"): Call(
        200, operator_only=True, prepare=_queue, body=lambda _: {"confirm": "email-sending"}
    ),
}

# The callers, by what they should be allowed: the operator everything, B's admins B only.
OPERATOR = ("operator token", "operator key")
OWN = ("own-tenant admin key", "own-tenant admin JWT")
OTHER = ("other-tenant admin key", "other-tenant admin JWT")
NO_ADMIN = ("jobs:write key",)


def expected(call: Call, caller: str) -> int:
    if caller in OPERATOR:
        return call.ok
    if caller in NO_ADMIN or call.operator_only:
        return 403
    return call.ok if caller in OWN else 404


async def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: a refused call must change none of them."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with runtime.sessionmaker() as session:
        for table in metadata.sorted_tables:
            result = await session.execute(select(table))
            rows[table.name] = sorted((tuple(r) for r in result), key=repr)
    return rows


def admin_routes(runtime: Runtime) -> list[tuple[str, str]]:
    """Every (method, path) under /v1/admin, from the app's OpenAPI document (which FastAPI
    builds from all mounted routers, so a route in a new router counts too)."""
    paths = create_app(runtime=runtime).openapi()["paths"]
    return sorted(
        (method.upper(), path)
        for path, item in paths.items()
        if path.startswith("/v1/admin")
        for method in item
        if method in HTTP_METHODS
    )


async def callers(
    runtime: Runtime, tenants: TenantFactory, clock: ManualClock
) -> tuple[str, dict[str, str]]:
    """Tenant B's id and a bearer credential per caller."""
    other = await tenants.create("tenant-a")
    own = await tenants.create("tenant-b")
    async with runtime.sessionmaker() as session:
        operator_key, _ = await tenants_service.create_operator_key(session, name="ops")
        await session.commit()

    def admin_jwt(tenant_id: str) -> str:
        # Claims that try to look like the operator are ignored: a JWT is a tenant's.
        payload = claims(clock, tenant_id, scope="admin operator", operator=True, role="operator")
        return token(hs_key(), "HS256", payload)

    return own.tenant_id, {
        "operator token": ADMIN_TOKEN,
        "operator key": operator_key,
        "own-tenant admin key": await tenants.key(own.tenant_id, scopes=[Scope.admin]),
        "own-tenant admin JWT": admin_jwt(own.tenant_id),
        "other-tenant admin key": await tenants.key(other.tenant_id, scopes=[Scope.admin]),
        "other-tenant admin JWT": admin_jwt(other.tenant_id),
        "jobs:write key": await tenants.key(own.tenant_id, scopes=[Scope.jobs_write]),
    }


async def test_every_admin_route_for_every_kind_of_caller(
    client: httpx.AsyncClient, runtime: Runtime, tenants: TenantFactory, clock: ManualClock
) -> None:
    routes = admin_routes(runtime)
    missing = [r for r in routes if r not in TABLE]
    assert not missing, f"admin routes without a row in TABLE (add them): {missing}"
    assert not [r for r in TABLE if r not in routes], "TABLE names routes the app lacks"

    tenant_b, bearers = await callers(runtime, tenants, clock)
    ctx = Ctx(runtime, tenant_b, itertools.count())
    wrong: list[str] = []
    for method, template in routes:
        call = TABLE[(method, template)]
        for caller, bearer in bearers.items():
            params = {"tenant_id": tenant_b, "site_id": "main"}
            if call.prepare is not None:
                params.update(await call.prepare(ctx))
            path = template.format(**params)
            body = call.body(ctx) if call.body is not None else None
            before = await snapshot(runtime)
            response = await client.request(method, path, json=body, headers=auth(bearer))
            want = expected(call, caller)
            where = f"{caller:>24}  {method} {path}"
            if response.status_code != want:
                wrong.append(f"{where}: {response.status_code} (want {want}) {response.text}")
            elif want >= 400:
                assert response.headers["content-type"] == "application/problem+json"
                if await snapshot(runtime) != before:
                    wrong.append(f"{where}: refused with {want} but changed the database")
            elif not call.operator_only and response.content:
                data = response.json()
                if isinstance(data, dict) and data.get("tenant_id", tenant_b) != tenant_b:
                    wrong.append(f"{where}: answered for tenant {data['tenant_id']}")
    assert not wrong, "\n".join(wrong)


class TestTenantAdmin:
    async def test_mints_only_tenant_scopes_and_what_it_mints_stays_in_the_tenant(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        own = await tenants.create("own")
        other = await tenants.create("other")
        admin = auth(await tenants.key(own.tenant_id, scopes=[Scope.admin]))
        keys = f"/v1/admin/tenants/{own.tenant_id}/api-keys"
        for scopes in (["operator"], ["admin", "operator"], ["superuser"]):
            refused = await client.post(keys, json={"scopes": scopes}, headers=admin)
            assert refused.status_code == 422, refused.text
        made = await client.post(keys, json={"scopes": ["admin"]}, headers=admin)
        assert made.status_code == 201
        assert made.json()["tenant_id"] == own.tenant_id
        minted = auth(made.json()["api_key"])
        assert (await client.get("/v1/admin/tenants", headers=minted)).status_code == 403
        elsewhere = await client.get(f"/v1/admin/tenants/{other.tenant_id}", headers=minted)
        assert elsewhere.status_code == 404
        # It cannot make a tenant either, not even one that would hold an admin key.
        body = {"name": "mine", "scopes": ["admin"]}
        assert (
            await client.post("/v1/admin/tenants", json=body, headers=minted)
        ).status_code == 403

    async def test_another_tenant_answers_like_an_unknown_one(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        own = await tenants.create("own")
        other = await tenants.create("other")
        admin = auth(await tenants.key(own.tenant_id, scopes=[Scope.admin]))
        real = await client.get(f"/v1/admin/tenants/{other.tenant_id}/api-keys", headers=admin)
        fake_id = "0" * len(other.tenant_id)
        fake = await client.get(f"/v1/admin/tenants/{fake_id}/api-keys", headers=admin)
        assert real.status_code == fake.status_code == 404
        assert real.json()["detail"].replace(other.tenant_id, "X") == fake.json()["detail"].replace(
            fake_id, "X"
        )

    async def test_operator_created_tenant_with_admin_scope_gets_a_tenant_admin(
        self, client: httpx.AsyncClient, tenants: TenantFactory
    ) -> None:
        other = await tenants.create("other")
        body = {"name": "fresh", "scopes": ["admin"]}
        made = await client.post("/v1/admin/tenants", json=body, headers=auth(ADMIN_TOKEN))
        assert made.status_code == 201
        fresh = auth(made.json()["api_key"])
        assert (await client.get("/v1/admin/tenants", headers=fresh)).status_code == 403
        peek = await client.get(f"/v1/admin/tenants/{other.tenant_id}/shops", headers=fresh)
        assert peek.status_code == 404
        mine = await client.get(f"/v1/admin/tenants/{made.json()['tenant_id']}", headers=fresh)
        assert mine.status_code == 200


class TestJwtIsNeverTheOperator:
    async def test_operator_looking_claims_give_no_operator_rights(
        self, client: httpx.AsyncClient, tenants: TenantFactory, clock: ManualClock
    ) -> None:
        own = await tenants.create("own")
        other = await tenants.create("other")
        for tenant_claim in (own.tenant_id,):
            payload = claims(
                clock,
                tenant_claim,
                scope=["admin", "operator", "jobs:write"],
                operator=True,
                admin=True,
                roles=["operator"],
            )
            bearer = auth(token(hs_key(), "HS256", payload))
            assert (await client.get("/v1/admin/tenants", headers=bearer)).status_code == 403
            peek = await client.get(f"/v1/admin/tenants/{other.tenant_id}", headers=bearer)
            assert peek.status_code == 404
        # Without a tenant a JWT is refused outright, never taken for the tenant-less operator.
        for empty in ("", None):
            bearer = auth(token(hs_key(), "HS256", claims(clock, "", tenant_id=empty)))
            assert (await client.get("/v1/admin/tenants", headers=bearer)).status_code == 401


class TestOperatorKeys:
    async def test_operator_key_administers_but_cannot_submit_jobs(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        async with runtime.sessionmaker() as session:
            key, _ = await tenants_service.create_operator_key(session, name="ops")
            await session.commit()
        assert (await client.get("/v1/admin/tenants", headers=auth(key))).status_code == 200
        job = {"type": "sync-single-order", "orderId": 1}
        assert (await client.post("/v1/jobs", json=job, headers=auth(key))).status_code == 403
        forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        assert (await client.get("/v1/admin/tenants", headers=auth(forged))).status_code == 401

    @pytest.mark.slow
    async def test_cli_create_list_revoke(
        self, client: httpx.AsyncClient, database: tuple[str, str | None]
    ) -> None:
        url, schema = database
        env = jobgate_env(url, schema=schema)
        alice = json.loads(
            await run_jobgate_async("operators", "create", "alice", "--json", env=env)
        )
        assert alice["api_key"].startswith(alice["prefix"] + "_")
        assert alice["prefix"].startswith("jgo_")
        # Without --json the command prints the key alone.
        bob = (await run_jobgate_async("operators", "create", "bob", env=env)).strip()
        with pytest.raises(CommandFailed, match="alice"):
            await run_jobgate_async("operators", "create", "alice", env=env)
        ok = await client.get("/v1/admin/tenants", headers=auth(alice["api_key"]))
        assert ok.status_code == 200
        bob_prefix = bob[: len("jgo_") + 8]
        await run_jobgate_async("operators", "revoke", bob_prefix, env=env)
        gone = await client.get("/v1/admin/tenants", headers=auth(bob))
        assert gone.status_code == 401
        lines = (await run_jobgate_async("operators", "list", "--json", env=env)).splitlines()
        listed = [json.loads(line) for line in lines]
        assert [(k["name"], k["revoked_at"] is not None) for k in listed] == [
            ("alice", False),
            ("bob", True),
        ]
        assert alice["api_key"] not in str(listed)
        with pytest.raises(CommandFailed, match="does not exist"):
            await run_jobgate_async("operators", "revoke", "jgo_nothing", env=env)
