"""The README path: sign an order event with `jobgate webhooks sign --curl`, post it with curl
to a real `jobgate serve`, and find exactly one sync-single-order job for that tenant."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.jobs.models import Job
from tests.support.servers import (
    ServerProcess,
    create_tenant,
    jobgate_argv,
    jobgate_env,
    run_jobgate,
)

ORDER = json.dumps(
    {
        "type": "order.created",
        "shop": {"id": "1", "url": "https://shop.example"},
        "data": {"id_order": 4242, "current_state": 2},
        "occurred_at": "2026-11-28T13:00:00Z",
    },
    separators=(",", ":"),
)


@pytest.mark.asyncio
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_signed_with_the_cli_makes_one_job(
    database: tuple[str, str | None], db_engine: AsyncEngine
) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema)
    tenant = create_tenant(env, "curl-shop")
    with ServerProcess(jobgate_argv("serve"), env=env) as server:
        command = run_jobgate(
            "webhooks", "sign", tenant["tenant_id"], "--body", ORDER, "--curl",
            "--url", server.base_url, env=env,
        ).strip()  # fmt: skip
        assert command.startswith("curl ")
        assert "webhook-signature: v1," in command
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True
        )
        answer = json.loads(done.stdout)
        [job_id] = answer["jobs"]
        replay = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True
        )
        assert json.loads(replay.stdout) == {"jobs": [job_id], "replay": True}
    async with db_engine.connect() as conn:
        rows = (await conn.execute(select(Job.__table__))).mappings().all()  # type: ignore[attr-defined]
    assert [(r["id"], r["tenant_id"], r["type"]) for r in rows] == [
        (job_id, tenant["tenant_id"], "sync-single-order")
    ]
    assert rows[0]["payload"]["orderId"] == 4242


def test_cli_sign_prints_the_official_vector_headers(database: tuple[str, str | None]) -> None:
    url, schema = database
    printed = run_jobgate(
        "webhooks", "sign", "any-tenant", "--body", '{"test": 2432232314}',
        "--secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "--id", "msg_p5jXN8AQM9LWM0D4loKWxJek", "--timestamp", "1614265330",
        env=jobgate_env(url, schema=schema),
    )  # fmt: skip
    assert "webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" in printed
    assert "webhook-timestamp: 1614265330" in printed


def test_cli_keys_and_secrets(database: tuple[str, str | None], db_engine: AsyncEngine) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema)
    tenant = create_tenant(env, "cli-admin")
    created = json.loads(run_jobgate("keys", "create", tenant["tenant_id"], "--scope",
                                     "jobs:read", env=env))  # fmt: skip
    assert created["scopes"] == ["jobs:read"]
    listed = run_jobgate(
        "keys", "list", tenant["tenant_id"], "--prefix", created["prefix"], "--json", env=env
    )
    assert [json.loads(line)["id"] for line in listed.splitlines()] == [created["id"]]
    run_jobgate("keys", "revoke", tenant["tenant_id"], created["id"], env=env)
    listed = run_jobgate(
        "keys", "list", tenant["tenant_id"], "--prefix", created["prefix"], "--json", env=env
    )
    assert json.loads(listed)["revoked"] is True
    rotated = json.loads(run_jobgate("webhooks", "rotate", tenant["tenant_id"], env=env))
    assert rotated["webhook_secret"].startswith("whsec_")
    secrets = [json.loads(s) for s in run_jobgate("webhooks", "secrets", tenant["tenant_id"],
                                                  "--json", env=env).splitlines()]  # fmt: skip
    assert len(secrets) == 2
    run_jobgate("webhooks", "revoke", tenant["tenant_id"], secrets[0]["id"], env=env)
    with pytest.raises(Exception, match="only active webhook secret"):
        run_jobgate("webhooks", "revoke", tenant["tenant_id"], rotated["id"], env=env)
