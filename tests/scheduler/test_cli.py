"""`jobgate schedules ...` as a real subprocess against the test database."""

from __future__ import annotations

import json

import pytest

from app.bootstrap import Runtime
from app.tenants.schemas import TenantCreated
from tests.support.servers import CommandFailed, jobgate_env, run_jobgate

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_create_list_delete(
    database: tuple[str, str | None], runtime: Runtime, tenant: TenantCreated
) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema)
    tenant_id = tenant.tenant_id
    job = '{"type":"sync-orders","siteId":"s1"}'
    created = json.loads(
        run_jobgate(
            "schedules",
            "create",
            tenant_id,
            "orders",
            "--cron",
            "0 */3 * * *",
            "--job",
            job,
            env=env,
        )
    )
    assert created["tenant_id"] == tenant_id
    assert created["name"] == "orders"
    assert created["cron"] == "0 */3 * * *"
    assert created["job"] == {
        "type": "sync-orders",
        "siteId": "s1",
        "lastDays": 40,
        "bulkMode": True,
    }
    assert created["enabled"] is True
    assert created["timezone"] == "UTC"
    assert created["next_run_at"] is not None
    run_jobgate(
        "schedules",
        "create",
        tenant_id,
        "products",
        "--cron",
        "0 */3 * * *",
        "--job",
        '{"type":"sync-products","siteId":"s1"}',
        "--timezone",
        "Europe/Paris",
        "--disabled",
        env=env,
    )
    listed = [
        json.loads(line)
        for line in run_jobgate("schedules", "list", tenant_id, "--json", env=env).splitlines()
    ]
    assert [(s["name"], s["enabled"]) for s in listed] == [("orders", True), ("products", False)]
    assert [s["timezone"] for s in listed] == ["UTC", "Europe/Paris"]
    everyone = run_jobgate("schedules", "list", "--json", env=env).splitlines()
    assert len(everyone) == 2
    run_jobgate("schedules", "delete", tenant_id, created["id"], env=env)
    left = [
        json.loads(line)["name"]
        for line in run_jobgate("schedules", "list", tenant_id, "--json", env=env).splitlines()
    ]
    assert left == ["products"]


async def test_invalid_input_is_refused(
    database: tuple[str, str | None], runtime: Runtime, tenant: TenantCreated
) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema)
    good = '{"type":"sync-orders","siteId":"s1"}'
    cases = [
        (["--cron", "0 */3 * *", "--job", good], "cron: Value error, a cron expression has 5"),
        (["--cron", "0 */3 * * *", "--job", '{"type":"sync-orders"}'], "siteId"),
        (["--cron", "0 */3 * * *", "--job", "{not json"], "not valid JSON"),
    ]
    for args, message in cases:
        with pytest.raises(CommandFailed, match="exited 2") as failed:
            run_jobgate("schedules", "create", tenant.tenant_id, "x", *args, env=env)
        assert message in str(failed.value)
    with pytest.raises(CommandFailed, match="exited 1") as unknown:
        run_jobgate(
            "schedules",
            "create",
            "no-such-tenant",
            "x",
            "--cron",
            "0 0 * * *",
            "--job",
            good,
            env=env,
        )
    assert "does not exist" in str(unknown.value)
    with pytest.raises(CommandFailed, match="exited 1"):
        run_jobgate("schedules", "delete", tenant.tenant_id, "no-such-schedule", env=env)
